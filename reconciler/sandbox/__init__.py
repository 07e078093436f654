"""A LiteLLM-compatible key API in memory: for tests, the README demo, and trying a roster safely."""

from .server import Fault, Sandbox, start_sandbox

__all__ = ["Fault", "Sandbox", "start_sandbox"]
