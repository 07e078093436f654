"""litellm-roster: LiteLLM virtual keys from a git-tracked roster."""

TOOL_NAME = "litellm-roster"
__version__ = "0.1.0"
