"""Proofs: MACs made with the operator's RECONCILE_PROOF_KEY, which neither a pull request's author nor another user
of the proxy holds (docs/security.md, "Proofs").

A proof binds what it vouches for, so copying one proves nothing else: a key's proof binds the developer and the
key's hash; a key file's binds the developer, the hash and the file's ciphertext (a file re-encrypted with another
secret fails); a team's binds its name and id.

Each proof also carries the instant the tool began proving on this proxy. Before it (no valid proof anywhere), a
claim without a proof is trusted on first use and gets one at the next apply; after it, only what was made earlier
can lack one: anything made later without a valid proof was not made by this tool.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Iterable

from ..errors import ConfigError
from ..redact import REDACT
from .timeutil import iso, parse_instant

FIELD = "roster_proof"  # in key and team metadata
FILE_FIELD = "proof"  # in a key file's readable part
MIN_LENGTH = 32
ENVIRONMENT = "RECONCILE_PROOF_KEY"


class Standing(Enum):
    OFF = "off"  # no proof key: only what can be checked without proofs
    PROVEN = "proven"
    FIRST_USE = "first use"  # no proof, and made before proofs began: trusted, and given one by the next apply
    FAILED = "failed"


@dataclass(frozen=True)
class Prover:
    secret: bytes = field(default=b"", repr=False)

    @classmethod
    def from_secret(cls, value: str) -> Prover:
        """The operator's proof key (RECONCILE_PROOF_KEY), or none."""
        if not value:
            return cls()
        if len(value) < MIN_LENGTH:
            raise ConfigError(f"{ENVIRONMENT} is shorter than {MIN_LENGTH} characters; make one with: python3 -c "
                              "'import secrets; print(secrets.token_urlsafe(32))' and keep it in the plan and apply "
                              "environments' secrets")
        REDACT.add(value)
        return cls(value.encode())

    @property
    def enabled(self) -> bool:
        return bool(self.secret)

    def _mac(self, stamp: str, kind: str, parts: tuple[str, ...]) -> str:
        message = json.dumps([kind, stamp, *parts], separators=(",", ":")).encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def make(self, since: datetime, kind: str, *parts: str) -> str:
        stamp = iso(since)
        return f"v1:{stamp}:{self._mac(stamp, kind, parts)}"

    def since(self, proof: Any, kind: str, *parts: str) -> datetime | None:
        """When the proof verifies: the instant proofs began that it carries; else None."""
        if not self.enabled or not isinstance(proof, str):
            return None
        version, _, rest = proof.partition(":")
        stamp, _, mac = rest.rpartition(":")
        if version != "v1" or not hmac.compare_digest(mac, self._mac(stamp, kind, parts)):
            return None
        try:
            return parse_instant(stamp, end_of_day=False)
        except ValueError:
            return None


@dataclass(frozen=True)
class Proofs:
    """The prover and what the proxy says about it: whether proofs have begun there, and since when."""

    prover: Prover = Prover()
    began: datetime | None = None  # the earliest instant a valid proof on the proxy carries

    @classmethod
    def read(cls, prover: Prover, claims: Iterable[tuple[Any, str, tuple[str, ...]]]) -> Proofs:
        """claims: (proof, kind, parts) of every key and team that claims to be the tool's."""
        found = [when for proof, kind, parts in claims if (when := prover.since(proof, kind, *parts))]
        return cls(prover, min(found) if found else None)

    @property
    def enabled(self) -> bool:
        return self.prover.enabled

    def check(self, proof: Any, made: datetime | None, kind: str, *parts: str) -> tuple[Standing, str]:
        """Whether a claim is proven, and why not when it is not (for the plan)."""
        if not self.enabled:
            return Standing.OFF, ""
        if self.prover.since(proof, kind, *parts) is not None:
            return Standing.PROVEN, ""
        if self.began is None:  # a proof made with another key is as good as none until proofs begin again
            return Standing.FIRST_USE, ""
        if made is not None and made < self.began:
            return Standing.FIRST_USE, ""
        what = "carries a proof that does not verify" if proof is not None else "carries no proof"
        when = f"made {iso(made)}" if made is not None else "made at an unknown time"
        return Standing.FAILED, (f"{what}, and was {when}, after the tool began proving its {kind}s on this proxy "
                                 f"({iso(self.began)}): the tool did not make it")

    def file_proven(self, name: str, file: Any) -> bool:
        """file: a records.KeyFile (its hash, ciphertext, environment and proof, as the file states them)."""
        parts = file_parts(name, file.token_sha256, file.ciphertext, file.environment)
        return self.prover.since(file.proof, "file", *parts) is not None

    def file_problem(self, name: str, file: Any, *, required: bool) -> str | None:
        """Why a key file is not trusted to hold the secret it names, or None. required: the live key is proven
        (its file was proven with it), or the file is to be restored."""
        if not self.enabled or self.file_proven(name, file):
            return None
        if file.proof is not None and (required or self.began is not None):
            return "carries a proof that does not verify (re-encrypted or edited since the tool wrote it)"
        if required:
            return "carries no proof"
        return None

    def header(self) -> str:
        if not self.enabled:
            return f"proofs are off ({ENVIRONMENT} is not set): nothing is adopted or restored"
        if self.began is None:
            return "proofs begin with this apply: existing keys, teams and key files are trusted on first use"
        return f"proofs on since {iso(self.began)}"


NO_PROOFS = Proofs()  # proofs off: the default where no prover is given


def file_parts(name: str, token: str | None, ciphertext: str | None, environment: Any) -> tuple[str, ...]:
    """What a key file's proof binds: a file of one environment proves nothing in another's directory."""
    return (name, token or "", ciphertext or "", *((str(environment),) if environment is not None else ()))
