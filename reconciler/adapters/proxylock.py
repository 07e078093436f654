"""The apply lock kept on the proxy itself, so that one apply anywhere (CI, a cluster, a laptop) holds it against
every other apply on that proxy; the file lock and the Lease stay as local guards (Session.lock holds both).

The lock is a LiteLLM team with a fixed id: `/team/new` with a taken team_id is refused on every version of the
matrix (docs/litellm.md §10), so creating it is the atomic test-and-set. It is blocked (no key can use it), carries
no key and no member, and its metadata names the holder and when the lock expires unless renewed. Deleting a team
deletes its keys in LiteLLM: the lock team is deleted only while it holds none.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from ..errors import LockError, ProxyError
from .litellm import not_found
from .lock import LockRecord

log = logging.getLogger(__name__)

LOCK_TEAM = "litellm-roster-lock"
FIELD = "litellm_roster_lock"


class ProxyLock:
    TTL = 120.0  # seconds; renewed every TTL/3 while held

    def __init__(self, client: Any, holder: str, ttl: float | None = None):
        self.client, self.holder = client, holder
        self.ttl = ttl or self.TTL
        self.id = uuid.uuid4().hex[:12]
        self.held = False
        self.available = True  # False on a proxy that keeps no teams (the bundled sandbox)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {"id": self.id, "holder": self.holder, "acquired_at": now, "expires_at": now + self.ttl}

    def _current(self) -> tuple[LockRecord | None, int]:
        """Whoever holds the lock team, and how many keys are bound to it; (None, 0) when there is none."""
        info = self.client.team_info(LOCK_TEAM)
        if info is None:
            return None, 0
        lock = (info["team_info"].get("metadata") or {}).get(FIELD)
        keys = len(info.get("keys") or [])
        if not isinstance(lock, dict):  # a team of that id the tool did not make: never taken over, never deleted
            raise LockError(f"the proxy has a team {LOCK_TEAM!r} that is not this tool's lock; rename or delete it")
        try:
            return LockRecord(str(lock["id"]), str(lock["holder"]), float(lock["acquired_at"]),
                              float(lock["expires_at"])), keys
        except (KeyError, TypeError, ValueError):
            raise LockError(f"the proxy's lock team {LOCK_TEAM!r} is malformed; after checking no apply runs: "
                            f"reconcile force-unlock {lock.get('id')}") from None

    def try_acquire(self) -> LockRecord | None:
        """Take the lock, or return the record of whoever holds it."""
        body = {"team_id": LOCK_TEAM, "team_alias": LOCK_TEAM, "blocked": True, "metadata": {FIELD: self._record()}}
        try:
            self.client.new_team(body)
            return None
        except ProxyError as exc:
            if not_found(exc) or exc.status == 405:  # a proxy without teams: only the local guard is left
                self.available = False
                log.info("this proxy keeps no teams, so the apply lock is only this machine's")
                return None
            if exc.status not in (400, 409):
                raise
        current, keys = self._current()
        if current is None:
            return self.try_acquire()  # released meanwhile
        if current.expires_at > time.time() or keys:
            return current
        self._delete(current.id)  # a dead holder's: whoever creates it next, atomically, holds it
        return self.try_acquire()

    def acquire(self, timeout: float = 0.0) -> None:
        deadline = time.monotonic() + timeout
        while (holder := self.try_acquire()) is not None:
            if time.monotonic() >= deadline:
                left = max(0, int(holder.expires_at - time.time()))
                raise LockError(f"another apply holds this proxy's lock (team {LOCK_TEAM}): {holder.holder}, lock "
                                f"{holder.id}, expires in {left}s unless renewed. Wait (--lock-timeout SECONDS), or if "
                                f"that run is dead: reconcile force-unlock {holder.id}")
            time.sleep(1.0)
        if not self.available:
            return
        self.held = True
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="proxy-lock-renewer")
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                current, _ = self._current()
                if current is None or current.id != self.id:
                    log.warning("this proxy's lock was taken from this apply (force-unlock?)")
                    return
                record = {**self._record(), "acquired_at": current.acquired_at}
                self.client.update_team({"team_id": LOCK_TEAM, "metadata": {FIELD: record}})
            except Exception as exc:  # a missed renewal is retried at the next tick; the TTL leaves room for two
                log.warning("could not renew this proxy's lock (%s)", type(exc).__name__)

    def _delete(self, lock_id: str) -> None:
        current, keys = self._current()
        if current is None:
            return
        if current.id != lock_id:
            raise LockError(f"this proxy's lock is {current.id} (held by {current.holder}), not {lock_id}; nothing "
                            "removed")
        if keys:  # LiteLLM would delete them with the team
            raise LockError(f"the lock team {LOCK_TEAM!r} has {keys} key(s) bound to it; it is not deleted, because "
                            "LiteLLM would delete them with it: move them to another team first")
        self.client.delete_team(LOCK_TEAM)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if not self.held:
            return
        self.held = False
        try:
            self._delete(self.id)
        except Exception as exc:
            log.warning("could not release this proxy's lock (%s); it expires by itself", type(exc).__name__)

    def force_unlock(self, lock_id: str) -> LockRecord:
        current, _ = self._current()
        if current is None:
            raise LockError(f"this proxy holds no lock (no team {LOCK_TEAM})")
        self._delete(lock_id)
        return current


class BothLocks:
    """The proxy's lock and this machine's (file or Lease), taken in that order and released in reverse."""

    def __init__(self, local: Any, proxy: ProxyLock):
        self.local, self.proxy = local, proxy

    def acquire(self, timeout: float = 0.0) -> None:
        self.local.acquire(timeout)
        try:
            self.proxy.acquire(timeout)
        except BaseException:
            self.local.release()
            raise

    def release(self) -> None:
        try:
            self.proxy.release()
        finally:
            self.local.release()

    def force_unlock(self, lock_id: str) -> Any:
        try:
            return self.proxy.force_unlock(lock_id)
        except LockError:
            return self.local.force_unlock(lock_id)
