"""Checks that a recipient is a public key sops can encrypt to, beyond the schema's pattern.

An age recipient is bech32 with a checksum, so a typo in a pasted key is caught here, before a key is minted for a
recipient nobody can decrypt for.
"""

from __future__ import annotations

import base64
import binascii
from functools import reduce

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
# The XOR of the generators selected by each 5-bit value: one lookup per character instead of five tests.
_TABLE = tuple(reduce(lambda acc, i: acc ^ (_GENERATOR[i] if top >> i & 1 else 0), range(5), 0) for top in range(32))


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        chk = ((chk & 0x1FFFFFF) << 5 ^ value) ^ _TABLE[chk >> 25]
    return chk


def _bech32_ok(text: str) -> bool:
    hrp, _, data = text.rpartition("1")
    if not hrp or len(data) < 6 or any(c not in _CHARSET for c in data):
        return False
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    return _polymod(expanded + [_CHARSET.index(c) for c in data]) == 1


def private_key_kind(text: str) -> str | None:
    """'age' or 'SSH' when the text is (or holds) a private key someone pasted by mistake; never echo it."""
    if "AGE-SECRET-KEY-1" in text.upper():
        return "age"
    if "PRIVATE KEY-----" in text:
        return "SSH"
    return None


def private_key_problem(text: str) -> str:
    kind = private_key_kind(text)
    fix = "paste the public key from age-keygen -y" if kind == "age" else "paste the .pub file's line"
    return (f"this is an {kind} PRIVATE key ({text[:4]}...), not a public key; {fix}. Treat the private key as "
            "leaked: make a new one, and remove this one from the file and its history")


def recipient_problem(recipient: str) -> str | None:
    """None when usable; else why not, phrased as a fix."""
    if private_key_kind(recipient):
        return private_key_problem(recipient)
    if recipient.startswith("age1"):
        if recipient != recipient.lower() or not _bech32_ok(recipient):
            return "age recipient has a bad checksum (a typo or a truncated paste?); copy it again from age-keygen -y"
        return None
    kind, _, rest = recipient.partition(" ")
    if kind in ("ssh-ed25519", "ssh-rsa"):
        blob = rest.split(" ", 1)[0]
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            return "SSH public key is not valid base64; copy the whole line of your .pub file"
        name_len = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
        if raw[4 : 4 + name_len].decode("ascii", "replace") != kind:
            return f"SSH public key body does not match its type {kind}; copy the whole line of your .pub file"
        if kind == "ssh-ed25519" and len(raw) != 51:  # the type, then one 32-byte key, each with its length
            return "SSH public key is truncated (an ssh-ed25519 key is 68 characters of base64); copy the whole " \
                   "line of your .pub file"
        return None
    return "not an age or SSH public key; use the age1... line from age-keygen -y, or an ssh-ed25519 public key"


def canonical(recipient: str) -> str:
    """sops records an SSH recipient as 'type body', without the comment."""
    if recipient.startswith("ssh-"):
        return " ".join(recipient.split()[:2])
    return recipient
