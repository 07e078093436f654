"""One apply at a time per proxy. A lock records its holder and expires unless renewed, so a killed holder does not
block the next run forever; `reconcile force-unlock ID` clears one by hand.

This module holds the local form: a lock file under the system's temp directory, guarded by flock while it is
read and written. (A Kubernetes Lease fits the same interface.)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import stat
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from ..errors import LockError


@dataclass(frozen=True)
class LockRecord:
    id: str
    holder: str
    acquired_at: float
    expires_at: float
    host: str = ""
    pid: int = 0

    def dead(self, now: float) -> bool:
        """Expired, or held by a process on this host that no longer exists (a killed apply)."""
        if self.expires_at <= now:
            return True
        if self.host == socket.gethostname() and self.pid > 0:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False


def default_holder(actor: str) -> str:
    """Who holds a lock, as its message names them: the run's actor (the one the audit log names), host, process."""
    return f"{actor}@{socket.gethostname()} pid {os.getpid()}"


def lock_path(proxy_url: str) -> Path:
    """One lock per proxy (its normalized URL), all in one directory: RECONCILE_LOCK_DIR, else litellm-roster-locks
    under the temp directory."""
    root = Path(os.environ.get("RECONCILE_LOCK_DIR") or Path(tempfile.gettempdir()) / "litellm-roster-locks")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _own_directory(root)
    return root / f"{hashlib.sha256(proxy_url.encode()).hexdigest()[:16]}.lock"


def _own_directory(root: Path) -> None:
    """The lock directory sits in a shared temp directory: another local user could make it first and plant
    symlinks in it. Only a real directory of our own, closed to others, is used."""
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise LockError(f"the lock directory {root} is not a directory of this user's (a symlink, or made by another "
                        "user); remove it, or set RECONCILE_LOCK_DIR to a directory of your own")
    if info.st_mode & 0o077:
        os.chmod(root, 0o700)


class FileLock:
    TTL = 120.0  # seconds; renewed every TTL/3 while held

    def __init__(self, path: Path, holder: str | None = None, ttl: float | None = None):
        self.path = path
        self.ttl = ttl or self.TTL
        self.holder = holder or default_holder("litellm-roster")
        self.record: LockRecord | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            guard_fd = os.open(str(self.path) + ".guard", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                               0o600)
        except OSError as exc:
            raise LockError(f"cannot open the lock's guard {self.path}.guard ({exc.strerror}); remove it") from None
        with os.fdopen(guard_fd, "a+") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def _read(self) -> LockRecord | None:
        try:
            return LockRecord(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write(self, record: LockRecord) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)  # whatever is there, a symlink included, is replaced rather than written through
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(asdict(record)))
        os.replace(tmp, self.path)

    def try_acquire(self) -> LockRecord | None:
        """Take the lock, or return the record of whoever holds it."""
        with self._guard():
            current = self._read()
            now = time.time()
            if current is not None and not current.dead(now):
                return current
            self.record = LockRecord(uuid.uuid4().hex[:12], self.holder, now, now + self.ttl, socket.gethostname(),
                                     os.getpid())
            self._write(self.record)
        return None

    def acquire(self, timeout: float = 0.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            holder = self.try_acquire()
            if holder is None:
                break
            if time.monotonic() >= deadline:
                left = max(0, int(holder.expires_at - time.time()))
                raise LockError(f"another apply holds the lock for this proxy: {holder.holder}, lock {holder.id}, "
                                f"expires in {left}s unless renewed. Wait (--lock-timeout SECONDS), or if that run "
                                f"is dead: reconcile force-unlock {holder.id}")
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="lock-renewer")
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with self._guard():
                current = self._read()
                if self.record is None or current is None or current.id != self.record.id:
                    return  # force-unlocked or taken over: stop renewing; release will not touch it
                self.record = LockRecord(self.record.id, self.holder, self.record.acquired_at, time.time() + self.ttl,
                                         self.record.host, self.record.pid)
                self._write(self.record)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        with self._guard():
            current = self._read()
            if self.record is not None and current is not None and current.id == self.record.id:
                self.path.unlink(missing_ok=True)
        self.record = None

    def force_unlock(self, lock_id: str) -> LockRecord:
        with self._guard():
            current = self._read()
            if current is None:
                raise LockError(f"no lock is held at {self.path}")
            if current.id != lock_id:
                raise LockError(f"the lock is {current.id} (held by {current.holder}), not {lock_id}; nothing removed")
            self.path.unlink()
            return current

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
