"""Reading what the repository records about keys, without sops (core/records.py holds the data). The delivery
directory must lie inside the roster's directory with no symlink on the way, so that nothing a pull request commits
can make apply write or delete elsewhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from ..core.recipients import canonical
from ..core.records import ADOPTED_SUFFIX, CLEARTEXT_FIELDS, NAME, SOPS_CONFIG, SUFFIX, KeyFile, Records
from ..errors import ConfigError

_RECIPIENT_LINE = re.compile(r"^\s*-?\s*recipient:\s*(.+?)\s*$", re.M)
SOPS_BLOCK = "\nsops:\n"  # where the readable fields end in a key file as sops writes it


def read_key_files(directory: Path) -> dict[str, KeyFile]:
    """Every <name>.sops.yaml in the directory whose name is a developer name, by that name. A symlink or other
    non-regular file is read as a problem, never followed.

    The sops block (mostly armoured age stanzas) is nine tenths of a key file and slow to build as YAML. For files
    of the shape sops writes, the part above it is read by a strict line reader and the recipients from their
    lines; anything else, or any doubt, gets a full YAML parse."""
    if not directory.is_dir():
        return {}
    out = {}
    for path in sorted(directory.glob("*" + SUFFIX)):
        name = path.name[: -len(SUFFIX)]
        if not NAME.fullmatch(name):
            continue
        if path.is_symlink() or not path.is_file():
            out[name] = KeyFile(name, path, None, frozenset(), problem="not a regular file (a symlink?)")
            continue
        out[name] = _fast_key_file(name, path) or read_key_file(name, path)
    return out


def _fast_key_file(name: str, path: Path) -> KeyFile | None:
    try:
        head, marker, tail = path.read_text("utf-8").partition(SOPS_BLOCK)
    except (OSError, UnicodeDecodeError):
        return None
    recipients = _RECIPIENT_LINE.findall(tail) if marker else []
    doc = _simple_mapping(head) if recipients else None
    if doc is None:
        return None
    return _key_file(name, path, {**doc, "sops": {"age": [{"recipient": r.strip("'\"")} for r in recipients]}})


_TOP_LINE = re.compile(r"^([a-z_][a-z0-9_]*):(?: (.*))?$")
_ITEM_LINE = re.compile(r"^ +- (.*)$")
YAML_RESOLVER = yaml.resolver.Resolver()
PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9_./+-][A-Za-z0-9_./:@+=,\[\]-]*$")  # no spaces: no ': ' or ' #' to mind


def _scalar(text: str) -> tuple[bool, Any]:
    if text.startswith('"'):
        try:
            return True, json.loads(text)  # sops double-quotes with JSON-compatible escapes
        except ValueError:
            return False, None
    if not PLAIN_SCALAR.match(text):
        return False, None
    tag = YAML_RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # YAML's own reading of a plain scalar
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


MAX_FILE_BYTES = 1024 * 1024  # a key file is about 2 KB; a pull request can commit anything under keys/


def _load(path: Path) -> Any:
    """A file under keys/, read with the roster's bounds (size, anchors and aliases, depth): a pull request can
    commit a 500-byte file that plain YAML would expand for minutes (docs/security.md)."""
    from ..core.roster import parse_yaml
    from ..errors import RosterError

    raw = path.read_bytes()
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"over {MAX_FILE_BYTES:,} bytes")
    try:
        return parse_yaml(raw.decode("utf-8"), str(path))
    except RosterError as exc:
        raise ValueError(str(exc).splitlines()[-1].strip()) from None


def read_key_file(name: str, path: Path) -> KeyFile:
    try:
        data = _load(path)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return KeyFile(name, path, None, frozenset(), problem=f"unreadable ({type(exc).__name__})")
    return _key_file(name, path, data)


def _key_file(name: str, path: Path, data: Any) -> KeyFile:
    if not isinstance(data, dict) or not isinstance(data.get("sops"), dict):
        return KeyFile(name, path, None, frozenset(), problem="not a sops file")
    recipients = frozenset(canonical(str(r.get("recipient"))) for r in data["sops"].get("age") or []
                           if isinstance(r, dict))
    token = data.get("token_sha256")
    fields = {k: data.get(k) for k in CLEARTEXT_FIELDS}
    problem = None if data.get("developer") == name else f"not this tool's key file for {name} (developer field)"
    ciphertext = data.get("api_key")
    return KeyFile(name, path, token if isinstance(token, str) else None, recipients, fields, problem,
                   ciphertext if isinstance(ciphertext, str) else None)


def read_adoptions(directory: Path) -> dict[str, str]:
    out = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*" + ADOPTED_SUFFIX)):
        name = path.name[: -len(ADOPTED_SUFFIX)]
        if not NAME.fullmatch(name) or path.is_symlink() or not path.is_file():
            continue
        try:
            data = _load(path)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("developer") == name and isinstance(data.get("token_sha256"), str):
            out[name] = data["token_sha256"]
    return out


def read_records(directory: Path) -> Records:
    return Records(read_key_files(directory), read_adoptions(directory), read_sops_config(directory))


def read_sops_config(directory: Path) -> str | None:
    """The directory's .sops.yaml as text; a symlink or anything unreadable reads as none, and apply writes it."""
    path = directory / SOPS_CONFIG
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
        return None
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def confined_delivery_dir(roster_path: str | Path, delivery_dir: str) -> Path:
    """The delivery directory, checked to lie inside the roster's directory with no symlink on the way (a committed
    `keys -> /etc` would otherwise send writes and deletions anywhere)."""
    base = Path(roster_path).resolve().parent
    target = base
    for part in Path(delivery_dir).parts:
        if part in ("", "."):
            continue
        if part == "..":
            raise ConfigError(f"keys.delivery_dir {delivery_dir!r} leaves the roster's directory; use a directory "
                              "inside it, such as keys")
        target = target / part
        if target.is_symlink():
            raise ConfigError(f"keys.delivery_dir: {target} is a symlink; key files are written only to a real "
                              "directory inside the roster's directory. Replace the link with a directory")
        if target.exists() and not target.is_dir():
            raise ConfigError(f"keys.delivery_dir: {target} is not a directory")
    return target


def delivery_dir(roster: Any) -> Path:
    """The roster's delivery directory (its environment's, when it has one), confined as above."""
    return confined_delivery_dir(roster.path, roster.keys.delivery_dir)
