"""The command line: arguments, one renderer per format, and the commands over the service layer."""

from .main import main

__all__ = ["main"]
