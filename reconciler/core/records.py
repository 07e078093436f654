"""What the repository records about keys, as data: the readable part of each key file (<name>.sops.yaml) and
the adoption records (<name>.adopted.yaml) of keys taken over in place. adapters/keyfiles.py reads them.

These records are half of the proof that a live key is this tool's (docs/design.md, "Ownership"): a key's hash
must be in them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUFFIX = ".sops.yaml"
SOPS_CONFIG = ".sops.yaml"  # the creation rules sops finds from the delivery directory
ADOPTED_SUFFIX = ".adopted.yaml"
TEMP_GLOB = ".*.tmp"  # write_atomic's temp files: left only by a killed run, removed by the next apply
NAME_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # a roster name (the schema's $defs.name)
NAME = re.compile(NAME_PATTERN)  # matched whole
CLEARTEXT_FIELDS = ("developer", "environment", "key_alias", "proxy_url", "models", "expires", "issued_at",
                    "token_sha256", "proof")


def token_of(secret: str) -> str:
    """LiteLLM's `token`: sha256 hex of the secret (docs/litellm.md §2). Not a secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class KeyFile:
    """The readable part of a key file; enough to match it with a live key without decrypting."""

    name: str
    path: Path
    token_sha256: str | None
    recipients: frozenset[str]
    fields: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    problem: str | None = None  # set when the file cannot be trusted (unparseable, not sops, not ours)
    ciphertext: str | None = None  # the encrypted api_key as written: what the file's proof binds

    @property
    def proof(self) -> Any:
        return self.fields.get("proof")

    @property
    def environment(self) -> Any:
        return self.fields.get("environment")


@dataclass(frozen=True)
class Records:
    """Everything the delivery directory says: key files and adoption records, by developer name."""

    files: dict[str, KeyFile] = field(default_factory=dict)
    adopted: dict[str, str] = field(default_factory=dict)  # developer -> token of the key adopted in place
    sops_config: str | None = None  # the directory's .sops.yaml as it stands (None: there is none)

    def proves(self, name: str, token: str) -> bool:
        """An adoption record for this developer holds this key's hash."""
        return self.adopted.get(name) == token


def adoption_document(name: str, token: str, when: str) -> bytes:
    return yaml.safe_dump({"developer": name, "token_sha256": token, "adopted_at": when}, sort_keys=False).encode()


