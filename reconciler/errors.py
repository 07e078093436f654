"""The small error hierarchy. Every error carries a message fit for a user: what went wrong and how to fix it.

The CLI turns any ReconcileError into exit code 1 (StalePlanError into 3) and prints only its message, so a message
must never hold a secret: the client builds them from routes and LiteLLM's own text, never from request bodies.
"""

from __future__ import annotations

from dataclasses import dataclass


class ReconcileError(Exception):
    """Base of every error the tool reports to its user."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class RosterError(ReconcileError):
    """The roster is invalid. Holds every problem found in one pass, sorted by position."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.field, p.message))
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the roster; nothing was changed:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class ProxyError(ReconcileError):
    """LiteLLM answered with an error, or could not be reached."""

    def __init__(self, route: str, status: int | None, message: str):
        self.route, self.status, self.detail = route, status, message
        status_text = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{route}: {status_text}: {message}")


class AuthError(ProxyError):
    """The master key was refused."""


class CredentialError(ReconcileError):
    """The credential is not the one this command needs (a viewer or developer key where apply needs the master
    key)."""


class ModelError(ReconcileError):
    """The roster grants a model the proxy does not serve."""


class DeliveryError(ReconcileError):
    """sops failed, or a key file could not be written or read."""


class ConfigError(ReconcileError):
    """The environment or the command line is incomplete or contradictory."""


class LockError(ReconcileError):
    """Another apply holds the proxy's lock, or the lock cannot be taken or released."""


class KubeError(ReconcileError):
    """The Kubernetes API refused or failed: no kubeconfig, a missing Secret, a forbidden verb."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the API's HTTP status, when the error came from one


class StalePlanError(ReconcileError):
    """A reviewed plan no longer matches the roster or the proxy."""

    exit_code = 3


class BrakeError(ReconcileError):
    """A plan is more drastic than the safety thresholds allow without --force."""

    exit_code = 4


def closest(word: str, choices: list[str], cutoff: float = 0.6) -> list[str]:
    """The did-you-mean for a misspelt name (at most one); difflib loads only when a name is wrong."""
    import difflib

    return difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)


class KeyFetchError(ReconcileError):
    """reconcile key: the developer's key cannot be fetched, proven or written; one line saying why and what to do.
    Nothing was written."""
