"""The audit trail: one JSON line per applied change, appended; never a secret (a key appears as a hash prefix)."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from pathlib import Path

from ..core.changes import Outcome
from ..core.timeutil import iso, utcnow
from ..errors import ConfigError
from ..redact import REDACT


class AuditLog:
    """Appends a line as each change finishes, so a run killed half way still leaves the record of what it did."""

    def __init__(self, path: Path, *, checksum: str, proxy_url: str, actor: str):
        self.path, self.checksum, self.proxy_url, self.actor = path, checksum, proxy_url, actor
        self._lock = threading.Lock()
        try:  # before any change: a trail that cannot be written must stop the run, not follow it
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(self._open())
        except OSError as exc:
            why = "it is a symlink (a committed audit.jsonl may not point elsewhere)" if exc.errno == errno.ELOOP \
                else exc.strerror or str(exc)
            raise ConfigError(f"cannot write the audit log {path}: {why}; pass --audit-log another path") from None

    def _open(self) -> int:
        """The trail for appending, never through a symlink and only as a regular file: the default path is in the
        repository, which a pull request writes."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
        return fd

    def __call__(self, outcome: Outcome) -> None:
        data = outcome.change.data
        after = data.get("after")
        line = json.dumps({
            "time": iso(utcnow()), "actor": self.actor, "proxy": self.proxy_url, "plan_checksum": self.checksum,
            "change": data["kind"], "developer": data.get("developer"), "team": data.get("team"),
            "reason": data["reason"],
            "alias": data.get("alias") or (after.get("alias") if isinstance(after, dict) else None),
            "token_prefix": outcome.new_token[:12] if outcome.new_token else data.get("token_prefix"),
            "retired_token_prefix": data.get("old_token_prefix"),
            "result": "ok" if outcome.ok else "failed", "message": outcome.message,
        }, sort_keys=True)
        line = REDACT(line)  # the mask is plain text: the line stays valid JSON
        with self._lock:
            fd = self._open()
            try:
                os.write(fd, (line + "\n").encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
