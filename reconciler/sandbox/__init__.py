"""A LiteLLM-compatible key API in memory: for tests, the README demo, and trying a roster safely."""

from .server import Sandbox, start_sandbox

__all__ = ["Sandbox", "start_sandbox"]
