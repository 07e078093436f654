"""A LiteLLM-compatible key API in memory: for tests, the README demo, and trying a roster safely."""

from .server import Fault, Sandbox, SandboxError, start_sandbox

__all__ = ["Fault", "Sandbox", "SandboxError", "start_sandbox"]
