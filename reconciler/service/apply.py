"""Carry a Plan out, in the order that never leaves a developer without a working key, and never a key without
its file (docs/design.md, "Creating a key without ever losing it").

A create: make the secret here, write the encrypted key file atomically, only then register the key with `key` set,
then prove it works by calling /v1/models with it. A crash between any two steps leaves something the next plan
recognises and repairs. One developer's failure does not stop the others.
"""

from __future__ import annotations

import logging
import secrets
import threading
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from .. import TOOL_NAME
from ..adapters.delivery import ciphertext_of, clean_temp_files, remove, set_fields, write_atomic
from ..adapters.keyfiles import delivery_dir, read_key_file
from ..core.catalog import is_wildcard
from ..core.changes import Change, Desired, Outcome
from ..core.kinds.keys import (
    EXPIRY_TOLERANCE,
    Adopt,
    Create,
    Delete,
    MoveFile,
    RecoverFile,
    ReEncrypt,
    Release,
    RemoveFile,
    Restore,
    Rotate,
    Update,
    file_document_fields,
)
from ..core.kinds.teams import AdoptTeam, CreateTeam, DeleteTeam, Join, Leave, MemberBudget, UpdateTeam, team_metadata
from ..core.kinds.users import NO_BUDGET, ROLE, CreateUser, DeleteUser, LiveUser, Revoke, UpdateUser, user_metadata
from ..core.live import LLM_ROUTES, MARKER, NEVER, managed_metadata, unmarked, user_id_for
from ..core.plan import Plan
from ..core.ports import ProxyAPI, Sealer
from ..core.proofs import FIELD, Proofs, Prover, file_parts
from ..core.records import ADOPTED_SUFFIX, SUFFIX, adoption_document, token_of
from ..core.roster import Roster
from ..core.timeutil import iso, parse_litellm_time
from ..errors import ProxyError, ReconcileError
from ..redact import REDACT

log = logging.getLogger(__name__)

SECRET_BYTES = 32
# Changes that refer to the developer's LiteLLM user: they wait for it to be the tool's.
NEEDS_USER = frozenset({"create", "rotate", "adopt", "update", "join-team", "member-budget"})


def new_secret() -> str:
    secret = "sk-" + secrets.token_urlsafe(SECRET_BYTES)
    REDACT.add(secret)  # from now on no sink can print it, whatever an error or a proxy echoes
    return secret


def _duration_until(moment: datetime | None, now: datetime) -> str | None:
    """LiteLLM takes only an offset from its own now (docs/litellm.md §1); None means never expires."""
    if moment is None:
        return None
    return f"{max(1, round((moment - now).total_seconds()))}s"


def _key_names(keys: list[dict[str, Any]]) -> str:
    """Up to five keys from a team's answer, by alias or hash prefix: for an error message."""
    return ", ".join(str(k.get("key_alias") or str(k.get("token", ""))[:12]) for k in keys[:5])


def _new_duration(moment: datetime | None, now: datetime) -> str:
    """For /key/update: "-1" removes an expiry on every version (1.80 and older ignore null; docs/litellm.md §5)."""
    return _duration_until(moment, now) or "-1"


def _still_holds(path: Path, name: str, token: str) -> bool:
    """A regular file (no symlink followed) that still reads as the key file of this key: checked again at apply."""
    return not path.is_symlink() and path.is_file() and read_key_file(name, path).token_sha256 == token


class Applier:
    WORKERS = 8  # bounded: encryption runs on every core, and the proxy is not flooded

    def __init__(self, roster: Roster, client: ProxyAPI, sops: Sealer, *, proxy_url: str,
                 clock: Callable[[], datetime], hooks: Callable[[str, str], None] | None = None,
                 on_outcome: Callable[[Outcome], None] = lambda outcome: None, prover: Prover | None = None):
        self.roster, self.client, self.sops = roster, client, sops
        self._on_outcome = on_outcome  # called as each change finishes (the audit trail), from worker threads
        self.proxy_url, self.clock = proxy_url, clock
        self.directory = delivery_dir(roster)
        # Called at each step boundary of a create or rotation ("after-file", ...): crash tests kill the process
        # there. A no-op otherwise.
        self._hook = hooks or (lambda step, name: None)
        # Set by a signal handler: changes in flight finish, the rest are not started (docs/design.md).
        self.stop = threading.Event()
        self.not_started = 0
        self._issued: dict[str, str] = {}  # developer -> hash of the key this run registered for them
        self.team_ids: dict[str, str] = {}  # roster team -> its id: the plan's, and those this run creates
        self.users_failed: set[str] = set()  # developers whose user this run could not create or correct
        self.prover = prover or Prover()
        self.proofs_began: datetime | None = None  # what every proof this run makes carries (proofs.py)

    def path_for(self, name: str) -> Path:
        return self.directory / f"{name}{SUFFIX}"

    def adoption_path(self, name: str) -> Path:
        return self.directory / f"{name}{ADOPTED_SUFFIX}"

    def run(self, plan: Plan) -> list[Outcome]:
        clean_temp_files(self.directory)
        self.team_ids = dict(plan.team_ids)
        self.proofs_began = plan.proofs.began or self.clock()
        outcomes: list[Outcome] = []
        for order in sorted({c.order for c in plan.actions}):  # teams, members, keys, then what goes
            batch = [c for c in plan.actions if c.order == order]
            # Membership changes go one at a time: LiteLLM up to 1.90 keeps a team's members (and a user's teams)
            # as a list it reads and writes back, so concurrent joins lose all but one (docs/litellm.md §10).
            serial = [c for c in batch if isinstance(c, (Join, MemberBudget, Leave))]
            parallel = [c for c in batch if not isinstance(c, (Join, MemberBudget, Leave))]
            with ThreadPoolExecutor(self.WORKERS) as pool:
                in_turn = pool.submit(lambda serial=serial: [self._one(c) for c in serial])
                outcomes.extend(o for o in pool.map(self._one, parallel) if o is not None)
                outcomes.extend(o for o in in_turn.result() if o is not None)
        self.not_started = len(plan.actions) - len(outcomes)
        clean_temp_files(self.directory)  # the first run made the directory: give it its .gitignore now
        return outcomes

    def _one(self, change: Change) -> Outcome | None:
        if self.stop.is_set():
            return None
        try:
            # Each kind's step is the method named for it (create-team: _create_team): one registry, by name.
            handler = getattr(self, "_" + change.kind.replace("-", "_"))
            if change.name in self.users_failed and change.kind in NEEDS_USER:
                raise ReconcileError(f"the LiteLLM user {user_id_for(change.name)} could not be made the tool's "
                                     "(see its change): nothing was done")
            message = handler(change) or ""
            log.info("%s %s %s: done %s", change.symbol, change.kind, change.name, message)
            outcome = Outcome(change, True, message, self._issued.pop(change.name, None))
        except Exception as exc:  # one change's failure, whatever it is, is that change's outcome, not the run's
            if isinstance(exc, ReconcileError):
                message = str(exc)
            elif isinstance(exc, OSError):  # a key file that could not be written or removed
                message = f"{type(exc).__name__}: {exc.strerror or exc}"
            else:
                message = f"unexpected {type(exc).__name__}: {exc} (a bug: please report it)"
                log.debug("%s: %s", change.name, REDACT("".join(traceback.format_exception(exc))))
            message = REDACT.shorten(message, 500)
            self._issued.pop(change.name, None)
            if isinstance(change, (CreateUser, UpdateUser)):
                self.users_failed.add(change.name)
            log.error("%s %s %s: failed: %s", change.symbol, change.kind, change.name, message)
            outcome = Outcome(change, False, message)
        try:
            self._on_outcome(outcome)
        except Exception as exc:  # the trail failing must not stop the changes after this one
            log.error("%s %s %s: %s, but its audit line was not written: %s", change.symbol, change.kind,
                      change.name, "done" if outcome.ok else "failed", REDACT.shorten(str(exc), 300))
        return outcome

    # ------------------------------------------------------------ building blocks

    def _proof(self, kind: str, *parts: str) -> str | None:
        if not self.prover.enabled:
            return None
        return self.prover.make(self.proofs_began or self.clock(), kind, *parts)

    def _key_metadata(self, name: str, token: str, base: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        return managed_metadata(name, base, **extra, **{FIELD: self._proof("key", name, token)})

    def _generate_body(self, want: Desired, secret: str, now: datetime) -> dict[str, Any]:
        body: dict[str, Any] = {"key": secret, "key_alias": want.alias, "models": list(want.models),
                                "user_id": want.user_id, "metadata": self._key_metadata(want.name, token_of(secret)),
                                "allowed_routes": list(LLM_ROUTES),
                                "duration": _duration_until(want.expires, now), "blocked": want.blocked}
        body.update({k: v for k, v in want.limits.as_dict().items() if v is not None})
        if want.team is not None:
            body["team_id"] = self.team_id(want.team)
        return body

    def team_id(self, team: str) -> str:
        found = self.team_ids.get(team)
        if found is None:
            raise ReconcileError(f"team {team} does not exist on the proxy (its creation failed): nothing was done")
        return found

    def _write_key_file(self, want: Desired, secret: str, now: datetime) -> bytes | None:
        """Encrypt and write; returns the previous file's bytes (already encrypted) so a failure can restore it."""
        path = self.path_for(want.name)
        previous = path.read_bytes() if path.exists() else None
        token = token_of(secret)
        document = {**file_document_fields(want, self.proxy_url, self.roster.environment), "issued_at": iso(now),
                    "token_sha256": token, "api_key": secret}
        content = self.sops.encrypt(document, list(want.recipients), path.name)
        write_atomic(path, self._proven(want.name, token, content))
        return previous

    def _proven(self, name: str, token: str, content: bytes) -> bytes:
        """The key file with its proof over what it now holds (proofs.file_parts), when proofs are on."""
        proof = self._proof("file", *file_parts(name, token, ciphertext_of(content), self.roster.environment))
        return set_fields(content, {"proof": proof}, f"{name}{SUFFIX}") if proof else content

    def _put_back(self, want: Desired, previous: bytes | None) -> None:
        path = self.path_for(want.name)
        if previous is None:
            remove(path)
        else:
            write_atomic(path, previous)

    def _register_key(self, want: Desired, secret: str, now: datetime, spend: float = 0.0) -> None:
        """POST /key/generate with our own key (the plan established that its hash is not live: re-posting a live
        key would be a silent no-op). If the post fails, look the hash up: a retry whose first attempt landed with
        its answer lost meets "alias exists", yet the key is there."""
        token = token_of(secret)
        self._issued[want.name] = token
        try:
            # A rotated key starts with its predecessor's spend: a rotation must not reset the developer's budget
            # window (/key/generate takes spend on every version of the matrix, docs/litellm.md §5).
            body = self._generate_body(want, secret, now)
            answer = self.client.generate({**body, "spend": spend} if spend else body)
        except ProxyError:
            # An earlier attempt may have landed with its answer lost (a retry then meets "alias exists").
            info = self.client.key_info(token)
            if info is None or info.get("status") == "deleted":
                raise
        else:
            self._correct_expiry(token, want, answer, now)
        self._hook("after-register", want.name)

    def _correct_expiry(self, token: str, want: Desired, answer: dict[str, Any], now: datetime) -> None:
        """LiteLLM 1.77 read generate's duration as a budget-style reset time (a 30-day key expired the next day):
        when the expiry it reports is not the one asked for, set it again with /key/update, which reads it right."""
        if want.expires is None:
            return
        try:
            got = parse_litellm_time(answer.get("expires"))
        except (TypeError, ValueError):
            got = None
        if got is None or abs(got - want.expires) > EXPIRY_TOLERANCE:
            log.info("%s: the proxy set expiry %s, not %s; setting it again", want.name, iso(got), iso(want.expires))
            self.client.update({"key": token, "duration": _new_duration(want.expires, now)})

    def _verify(self, want: Desired, secret: str) -> str:
        if want.blocked:
            return "(blocked: not verified)"
        seen = set(self.client.models_visible_to(secret))
        if want.wildcards:  # the proxy lists what it serves under a wildcard, not the wildcard itself
            ok = {m for m in want.models if not is_wildcard(m)} <= seen
        else:
            ok = seen == set(want.models)
        if not ok:
            raise ProxyError("GET /v1/models", 200, f"the new key sees {sorted(seen)}, not the roster's "
                                                    f"{list(want.models)}")
        return "(verified on /v1/models)"

    def _issue(self, want: Desired, before_register: Callable[[], None] = lambda: None, spend: float = 0.0) -> str:
        now = self.clock()
        secret = new_secret()
        previous = self._write_key_file(want, secret, now)
        try:
            self._hook("after-file", want.name)
            before_register()
            self._register_key(want, secret, now, spend)
        except BaseException:
            self._put_back(want, previous)
            raise
        return self._verify(want, secret)

    # ------------------------------------------------------------ changes

    def _create(self, change: Create) -> str:
        return self._issue(change.desired)

    def _refresh_file(self, want: Desired, names: tuple[str, ...], token: str) -> None:
        """Readable fields, and the file's proof again (over the ciphertext it holds, which the plan checked, and
        the fields it binds)."""
        if not names:
            return
        path = self.path_for(want.name)
        wanted = file_document_fields(want, self.proxy_url, self.roster.environment)
        content = set_fields(path.read_bytes(), {k: wanted[k] for k in names if k != "proof"}, path.name)
        write_atomic(path, self._proven(want.name, token, content))

    def _rotate(self, change: Rotate) -> str:
        want, old = change.desired, change.old

        def retire_old() -> None:
            if change.drop:
                self.client.delete(list(change.drop))
            if change.retire_at is None:
                self.client.delete([old.token])
            else:
                now = self.clock()
                base = old.metadata if old.managed else {}
                self.client.update({
                    "key": old.token, "key_alias": change.retiring_alias,
                    "metadata": self._key_metadata(want.name, old.token, base, retire_at=iso(change.retire_at)),
                    "duration": _duration_until(change.retire_at, now), "user_id": want.user_id,
                    # Closed at its spend: the remaining budget went to the new key with the spend, so the grace
                    # cannot add a second one (the old key keeps working for what costs nothing).
                    **({"max_budget": old.spend} if want.limits.max_budget is not None else {})})
            self._hook("after-retire", want.name)

        message = self._issue(want, before_register=retire_old, spend=old.spend)
        remove(self.adoption_path(want.name))  # a key adopted in place is now a delivered one
        return message

    def _restore(self, change: Restore) -> str:
        """Register the secret a proven key file holds, as the plan found it: the file is read and proven again
        now, and its secret must hash to the key it names. A crash before the key is registered leaves nothing;
        after, the next plan finds the key live and current."""
        want = change.desired
        path = self.path_for(want.name)
        file = read_key_file(want.name, path)
        problem = file.problem or (None if file.token_sha256 == change.token else "it changed since the plan") or \
            Proofs(self.prover).file_problem(want.name, file, required=True)
        if problem:
            raise ReconcileError(f"{path.name} is not restored: {problem}")
        secret = self.sops.decrypt(path)
        if token_of(secret) != change.token:
            raise ReconcileError(f"{path.name} is not restored: the secret inside does not hash to its token_sha256")
        self._register_key(want, secret, self.clock())
        self._refresh_file(want, ("key_alias", "proxy_url", "models", "expires"), change.token)
        return self._verify(want, secret)

    def _re_encrypt(self, change: ReEncrypt) -> str:
        """The key file again, to the roster's (larger) set of recipients, with the same key: decrypted with apply's
        own identity, checked against the key's hash, encrypted and proven like a new file; then any proxy fields."""
        want, key = change.desired, change.key
        path = self.path_for(want.name)
        file = read_key_file(want.name, path)
        if file.problem or file.token_sha256 != key.token:
            raise ReconcileError(f"{path.name} changed since the plan; not re-encrypted (plan again)")
        try:
            secret = self.sops.decrypt(path)
        except ReconcileError:
            raise ReconcileError(f"cannot decrypt {path.name}: RECONCILE_REENCRYPT needs an identity that reads every "
                                 "key file (an admin recipient's) in SOPS_AGE_KEY_FILE or SOPS_AGE_KEY") from None
        if token_of(secret) != key.token:
            raise ReconcileError(f"{path.name}: the key inside does not match its hash; not re-encrypted")
        document = {**file_document_fields(want, self.proxy_url, self.roster.environment),
                    "issued_at": file.fields.get("issued_at"), "token_sha256": key.token, "api_key": secret}
        content = self.sops.encrypt(document, list(want.recipients), path.name)
        write_atomic(path, self._proven(want.name, key.token, content))
        self._update(change)
        return "(same key)"

    def _adopt(self, change: Adopt) -> str:
        want, key = change.desired, change.key
        now = self.clock()
        # The record first: a key marked as adopted without one would be an unproven claim, never changed again.
        write_atomic(self.adoption_path(want.name), adoption_document(want.name, key.token, iso(now)))
        body = {"key": key.token, "key_alias": want.alias, "models": list(want.models), "user_id": want.user_id,
                "allowed_routes": list(LLM_ROUTES),
                "metadata": self._key_metadata(want.name, key.token, key.metadata, delivery="external"),
                "duration": _new_duration(want.expires, now), **want.limits.as_dict(),
                "team_id": self.team_id(want.team) if want.team else None}
        self._send_update(body)
        self._set_blocked(key.token, want.blocked, key.blocked)
        return ""

    def _send_update(self, body: dict[str, Any]) -> None:
        """/key/update; when it was to clear the expiry and the key still has one (LiteLLM 1.77 ignores every way
        of clearing it), the expiry is pushed past NEVER, which reads as "never"."""
        answer = self.client.update(body)
        if body.get("duration") == "-1" and answer.get("expires"):
            days = (NEVER - self.clock()).days + 36500
            self.client.update({"key": body["key"], "duration": f"{days}d"})

    def _set_blocked(self, token: str, want: bool, have: bool) -> None:
        if want and not have:
            self.client.block(token)
        elif have and not want:
            self.client.unblock(token)

    def _update(self, change: Update) -> str:
        want, key = change.desired, change.key
        fields = {name for name, _, _ in change.fields}
        # The file first: a key given its proof must have a proven file (the next plan would rotate it otherwise).
        self._refresh_file(want, change.file_fields, key.token)
        # The plan's "after" values are what LiteLLM stores; expiry goes as a duration, blocked through its routes.
        body: dict[str, Any] = {"key": key.token, **{name: after for name, _, after in change.fields
                                                     if name not in ("expires", "blocked", "team", "proof",
                                                                     "roster_name")}}
        if "expires" in fields:
            body["duration"] = _new_duration(want.expires, self.clock())
        if fields & {"proof", "roster_name"}:  # /key/update replaces metadata whole: the key's own is kept
            kept = {k: key.metadata[k] for k in ("retire_at", "delivery") if k in key.metadata}
            body["metadata"] = self._key_metadata(want.name, key.token, key.metadata, **kept)
        # LiteLLM checks a key's models against the team it joins, the models it has before this update: so the
        # key leaves its old team, changes, and then joins the new one.
        moving = "team" in fields
        if moving and key.team_id is not None:
            self.client.update({"key": key.token, "team_id": None})
        if len(body) > 1:
            self._send_update(body)
        if moving and want.team is not None:
            self.client.update({"key": key.token, "team_id": self.team_id(want.team)})
        if "blocked" in fields:
            self._set_blocked(key.token, want.blocked, key.blocked)
        return ""

    def _delete(self, change: Delete) -> str:
        self.client.delete([change.key.token])
        if change.key.external and change.key.retire_at is None:
            remove(self.adoption_path(change.name))
        if change.remove_file:
            self._remove_own_file(change.name)
        return ""

    def _remove_file(self, change: RemoveFile) -> str:
        self._remove_own_file(change.name)
        return ""

    def _move_file(self, change: MoveFile) -> str:
        """Into the environment's directory, checked again now; a crash between the write and the removal leaves the
        same bytes in both places, and the re-run only removes the old one."""
        source = self.directory / f"{change.former}{SUFFIX}" if change.former else \
            self.directory.parent / f"{change.name}{SUFFIX}"
        target = self.path_for(change.name)
        if not _still_holds(source, change.former or change.name, change.token):
            raise ReconcileError(f"{source.name} changed since the plan; not moved (plan again)")
        content = source.read_bytes()
        if target.exists() and target.read_bytes() != content:
            raise ReconcileError(f"{target} exists and differs from {source}; not moved")
        write_atomic(target, content)
        remove(source)
        return ""

    def _recover_file(self, change: RecoverFile) -> str:
        """Checked again now: the file still holds the key the plan saw, whose committed file does not."""
        source = Path(change.source)
        if not _still_holds(source, change.name, change.token):
            raise ReconcileError(f"{source} changed since the plan; not recovered (plan again)")
        write_atomic(self.path_for(change.name), source.read_bytes())
        return ""

    def _release(self, change: Release) -> str:
        """The key first: once its marks are gone nothing of the tool's claims it, and a re-run finds it released."""
        self._send_update({"key": change.key.token, "metadata": unmarked(change.key.metadata)})
        user = self.client.user_info(user_id_for(change.name))
        if user is not None and isinstance(user.get("metadata"), dict) and user["metadata"].get(MARKER):
            # Never empty: LiteLLM's /user/update leaves the stored metadata as it was when given {} (1.108.7).
            self.client.update_user({"user_id": user_id_for(change.name), "metadata": {
                **unmarked(user["metadata"]), "released_from_roster": iso(self.clock())}})
        if change.remove_file:
            self._remove_own_file(change.name)
        remove(self.adoption_path(change.name))
        return ""

    def _remove_own_file(self, name: str) -> None:
        """Only a regular file that reads as this tool's key file for that developer, checked again now."""
        path = self.path_for(name)
        if path.is_symlink() or not path.is_file() or read_key_file(name, path).problem:
            raise ReconcileError(f"{path.name} is not this tool's key file; left alone, remove it by hand")
        remove(path)

    # ------------------------------------------------------------ teams

    def _create_team(self, change: CreateTeam) -> str:
        # Our own id: a retry whose first answer was lost meets "already exists" instead of making a second team.
        team_id = str(uuid.uuid4())
        body = {"team_id": team_id, "team_alias": change.name, "models": list(change.models),
                "metadata": team_metadata(change.name, proof=self._proof("team", change.name, team_id)),
                "team_member_permissions": [],
                **{k: v for k, v in change.settings if v is not None}}
        try:
            self.client.new_team(body)
        except ProxyError as exc:
            if "already exists" not in exc.detail:
                raise
        self.team_ids[change.name] = team_id
        return ""

    def _adopt_team(self, change: AdoptTeam) -> str:
        self._update_team(change, adopting=True)
        self.team_ids[change.name] = change.team_id
        return ""

    def _update_team(self, change: UpdateTeam, *, adopting: bool = False) -> str:
        # /team/update ignores team_member_permissions on every version; /team/permissions_update sets them.
        body = {name: after for name, _, after in change.fields if name not in ("team_member_permissions", "proof")}
        extra = {}
        if adopting or any(name == "proof" for name, _, _ in change.fields):
            extra["metadata"] = team_metadata(change.name, dict(change.metadata),
                                              self._proof("team", change.name, change.team_id))
        if body or extra:
            self.client.update_team({"team_id": change.team_id, **body, **extra})
        for name, _, after in change.fields:
            if name == "team_member_permissions":
                self.client.set_member_permissions(change.team_id, after)
        return ""

    def _delete_team(self, change: DeleteTeam) -> str:
        """Only an empty team: LiteLLM deletes the keys still bound to a team with it."""
        keys = self._bound_keys(change.team_id)
        if keys is None:
            return "(already gone)"
        if keys:
            raise ReconcileError(f"team {change.name} still holds {len(keys)} key(s) ({_key_names(keys)}); it is not "
                                 "deleted, because LiteLLM would delete them with it: move or delete them first")
        self.client.delete_team(change.team_id)
        return ""

    def _join_team(self, change: Join) -> str:
        self.client.add_member(self.team_id(change.team), user_id_for(change.name), change.budget)
        return ""

    def _member_budget(self, change: MemberBudget) -> str:
        self.client.set_member_budget(self.team_id(change.team), user_id_for(change.name), change.after)
        return ""

    def _leave_team(self, change: Leave) -> str:
        """Only once no key of the member is bound to the team, read again now: LiteLLM 1.80 deletes them with the
        membership (docs/litellm.md §10)."""
        user = user_id_for(change.name)
        keys = self._bound_keys(change.team_id)
        if keys is None:
            return "(team already gone)"
        bound = [k for k in keys if k.get("user_id") == user]
        if bound:
            raise ReconcileError(f"{change.name} still has {len(bound)} key(s) bound to team {change.team} "
                                 f"({_key_names(bound)}); the membership stays, because LiteLLM may delete them "
                                 "with it")
        self.client.remove_member(change.team_id, user)
        return ""

    def _bound_keys(self, team_id: str) -> list[dict[str, Any]] | None:
        """The keys bound to a team, read now (LiteLLM deletes them with the team, and some versions with a member's
        membership); None when the team is gone."""
        info = self.client.team_info(team_id)
        return None if info is None else [k for k in info.get("keys") or [] if isinstance(k, dict)]

    # ------------------------------------------------------------ users (docs/litellm.md §11)

    def _create_user(self, change: CreateUser) -> str:
        user = user_id_for(change.name)
        body = {"user_id": user, "user_role": ROLE, "models": list(change.models),
                "metadata": user_metadata(change.name)}
        try:
            self.client.new_user(body)
        except ProxyError as exc:
            # A retry whose first answer was lost meets "already exists": only a user that is already ours is fine.
            if exc.status != 409 and "already exists" not in exc.detail.lower():
                raise
            found = self.client.user_info(user)
            if found is None or not LiveUser.from_api(found).ours:
                raise ReconcileError(f"the LiteLLM user {user} was made by someone else since the plan; nothing "
                                     "was done (plan again)") from None
        return ""

    def _update_user(self, change: UpdateUser) -> str:
        user = user_id_for(change.name)
        after = {name: value for name, _, value in change.fields}
        for team_id in [t for name, before, _ in change.fields if name == "other_teams" for t in before]:
            self._leave_other_team(change.name, team_id)
        body = {"user_id": user, **{k: v for k, v in after.items() if k in ("user_role", "models", "max_budget")},
                "metadata": user_metadata(change.name, dict(change.metadata))}
        answer = self.client.update_user(body)
        data = answer.get("data") if isinstance(answer.get("data"), dict) else {}
        if "max_budget" in after and data.get("max_budget") is not None:
            # LiteLLM up to 1.80 ignores a null budget: a budget no one reaches reads as none (docs/litellm.md §11).
            self.client.update_user({"user_id": user, "max_budget": NO_BUDGET})
        return ""

    def _leave_other_team(self, name: str, team_id: str) -> None:
        """A membership in a team that is not the tool's: its keys there are revoked by this plan, and the membership
        (which could let the developer use that team's models) goes. Never while a key the tool issued is bound."""
        keys = self._bound_keys(team_id)
        if keys is None:
            return
        user = user_id_for(name)
        ours = [k for k in keys if k.get("user_id") == user and (k.get("metadata") or {}).get(MARKER) == TOOL_NAME]
        if ours:
            raise ReconcileError(f"a key of {name}'s is bound to team {team_id}, which is not the tool's; left alone")
        self.client.remove_member(team_id, user)

    def _delete_user(self, change: DeleteUser) -> str:
        """Only a user with no key left: LiteLLM deletes a user's keys with it (docs/litellm.md §11)."""
        user = user_id_for(change.name)
        left = self.client.keys_of_user(user)
        if left:
            raise ReconcileError(f"the LiteLLM user {user} still has {len(left)} key(s); it is not deleted, because "
                                 "LiteLLM would delete them with it")
        self.client.delete_user(user)
        return ""

    def _revoke(self, change: Revoke) -> str:
        self.client.delete([change.key.token])
        return ""
