"""One redaction layer that every sink goes through: stdout, stderr, logs, the audit trail, plan files, outcome
messages and exceptions.

It knows every secret this process holds, whatever its shape (LiteLLM accepts any string as a master key): the
credentials and header values a Session opened with, and each key apply makes. Patterns catch what it was never
told: `sk-` keys, anything after `Bearer `, age and SSH private keys. Redact first, then truncate, so a cut never
leaves half a secret behind.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
MIN_LENGTH = 4  # shorter "secrets" would mangle ordinary words; no real credential is that short
_PATTERNS = (
    (re.compile(r"sk-[A-Za-z0-9_\-]{6,}"), "sk-" + MASK),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',;]+"), r"\1\2" + MASK),
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Za-z]+"), "AGE-SECRET-KEY-1" + MASK),
    (re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
     r"-----BEGIN \1PRIVATE KEY----- " + MASK),
)


class Redactor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            known = set(self._secrets)
            known.update(s for s in secrets if s and len(s) >= MIN_LENGTH)
            self._secrets = tuple(sorted(known, key=len, reverse=True))  # longest first: no half-masked overlap

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def shorten(self, text: str, limit: int) -> str:
        """Redacted, one line, at most `limit` characters."""
        text = " ".join(self(text).split())
        return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


REDACT = Redactor()  # the process's one instance: every sink calls it
