"""Changes, the Plan, and diff(): pure. No I/O and no clock: `now` comes in, so every boundary can be tested."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from .catalog import ModelCatalog, is_wildcard
from .live import LLM_ROUTES, LiveKey, user_id_for
from .options import Options
from .ownership import classify, key_standing, proofs_for
from .proofs import NO_PROOFS, Proofs, Prover, Standing
from .recipients import canonical
from .records import KeyFile, Records
from .roster import LIMIT_FIELDS, RETIRING_SUFFIX, Developer, Limits, Roster
from .timeutil import format_duration, humanize, iso

if TYPE_CHECKING:
    from .teams import LiveTeam
    from .users import LiveUser

FORMAT_VERSION = 1
EXPIRY_TOLERANCE = timedelta(minutes=5)  # LiteLLM stores now+duration at apply time; compare loosely
@dataclass(frozen=True)
class Desired:
    """One developer's key as the roster wants it."""

    name: str
    alias: str
    models: tuple[str, ...]
    limits: Limits
    expires: datetime | None
    blocked: bool
    recipients: tuple[str, ...]  # canonical, sorted: the developer's plus the admins'
    team: str | None = None  # the roster team the key is bound to
    team_id: str | None = None  # that team's id on the proxy; None until it is created

    @property
    def user_id(self) -> str:
        return user_id_for(self.name)

    @property
    def wildcards(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if is_wildcard(m))

    @property
    def data(self) -> dict[str, Any]:
        return {"alias": self.alias, "models": list(self.models), **self.limits.as_dict(),
                "expires": iso(self.expires), "blocked": self.blocked, "team": self.team}


def same_value(before: Any, after: Any) -> bool:
    """Equal as LiteLLM stores them: a budget of 10 and one of 10.0 are the same."""
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        return float(before) == float(after)
    return before == after


def before_after(fields: tuple[tuple[str, Any, Any], ...]) -> dict[str, Any]:
    """(field, before, after) triples as a change's JSON shows them."""
    return {"before": {f: b for f, b, _ in fields}, "after": {f: a for f, _, a in fields}}


@dataclass(frozen=True)
class Change:
    kind: ClassVar[str]
    symbol: ClassVar[str]
    # Teams and memberships first, then creates and rotations, so nobody is left without a key; deletes last.
    order: ClassVar[int]
    subject: ClassVar[str] = "developer"  # what `name` names
    name: str
    reason: str

    @property
    def data(self) -> dict[str, Any]:
        """The change as JSON: what plan --format json prints and what the checksum covers. Never a secret."""
        out = {"kind": self.kind, self.subject: self.name, "reason": self.reason, **self._data()}
        if self.risk:
            out["high_risk"] = self.risk
        return out

    def _data(self) -> dict[str, Any]:
        return {}

    @property
    def risk(self) -> str | None:
        """Why this change needs apply --force whatever the team size, or None. These are the changes a pull
        request could use to take something over; a reviewer must see them and an operator must mean them."""
        want: Desired | None = getattr(self, "desired", None)
        if want is not None and want.wildcards and self._grants_models():
            return f"grants {', '.join(want.wildcards)}: every model the proxy serves under it"
        return None

    def _grants_models(self) -> bool:
        return True


@dataclass(frozen=True)
class Create(Change):
    kind, symbol, order = "create", "+", 0
    desired: Desired = None  # type: ignore[assignment]

    def _data(self) -> dict[str, Any]:
        return {"after": self.desired.data}


@dataclass(frozen=True)
class Rotate(Change):
    kind, symbol, order = "rotate", "+/-", 0
    desired: Desired = None  # type: ignore[assignment]
    old: LiveKey = None  # type: ignore[assignment]
    retire_at: datetime | None = None  # None: the old key is deleted at once
    drop: tuple[str, ...] = ()  # tokens of earlier retiring keys of this developer, deleted first
    grace: timedelta = timedelta(0)
    revocation: bool = False  # rotate: asked for it (a lost laptop, a leak): the old key goes at once
    retiring_alias: str = ""  # what the old key is renamed to for its grace
    recipient_risk: str | None = None  # the new key goes to a recipient that already reads other keys

    def _data(self) -> dict[str, Any]:
        # The grace, not the instant it ends: a reviewed plan must mean the same when it is applied later.
        return {"after": self.desired.data, "old_token_prefix": self.old.token[:12], "old_alias": self.old.alias,
                "old_key_kept_for": format_duration(self.grace) if self.retire_at else None,
                **({"retiring_alias": self.retiring_alias} if self.retire_at else {})}

    @property
    def risk(self) -> str | None:
        if not self.old.managed:
            return f"replaces a key made by hand ({self.old.alias}): its holder loses it"
        return self.recipient_risk or super().risk


@dataclass(frozen=True)
class Restore(Change):
    """Register again the secret a key file holds, after the proxy lost its keys (apply --restore): the developer
    keeps working without a new key. Only for a file whose proof verifies, so nobody can choose a developer's key."""

    kind, symbol, order = "restore", "+", 0
    desired: Desired = None  # type: ignore[assignment]
    token: str = ""  # the hash the key file holds

    def _data(self) -> dict[str, Any]:
        return {"after": self.desired.data, "token_prefix": self.token[:12]}


@dataclass(frozen=True)
class Adopt(Change):
    """Take over a hand-made key in place: it keeps its secret, gains the marker and the roster's settings."""

    kind, symbol, order = "adopt", "~", 0
    desired: Desired = None  # type: ignore[assignment]
    key: LiveKey = None  # type: ignore[assignment]
    fields: tuple[tuple[str, Any, Any], ...] = ()  # (field, before, after): everything the adoption changes

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, "user_id": self.key.user_id,
                **before_after(self.fields)}

    @property
    def risk(self) -> str | None:
        return f"takes over a key made by hand ({self.key.alias}, user {self.key.user_id}): whoever holds it keeps it"


@dataclass(frozen=True)
class Update(Change):
    kind, symbol, order = "update", "~", 1
    desired: Desired = None  # type: ignore[assignment]
    key: LiveKey = None  # type: ignore[assignment]
    fields: tuple[tuple[str, Any, Any], ...] = ()  # (field, before, after) on the proxy
    file_fields: tuple[str, ...] = ()  # readable key-file fields to refresh

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, **before_after(self.fields),
                "key_file_fields": list(self.file_fields)}

    def _grants_models(self) -> bool:
        return any(name == "models" for name, _, _ in self.fields)

    @property
    def risk(self) -> str | None:
        for name, before, after in self.fields:
            if name == "key_alias" and before is not None and RETIRING_SUFFIX not in str(before):
                return f"renames a managed key ({before} -> {after}): the alias template changed"
        return super().risk


@dataclass(frozen=True)
class Delete(Change):
    kind, symbol, order = "delete", "-", 2
    key: LiveKey = None  # type: ignore[assignment]
    remove_file: bool = False

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, "remove_file": self.remove_file}


@dataclass(frozen=True)
class RemoveFile(Change):
    """A key file no live key and no developer stands behind."""

    kind, symbol, order = "remove-file", "-", 2
    path: str = ""

    def _data(self) -> dict[str, Any]:
        return {"path": self.path}

    @property
    def risk(self) -> str | None:
        return f"removes {self.path} from the repository"


@dataclass(frozen=True)
class MoveFile(Change):
    """A key file from before the roster declared environments, moved into its environment's directory, the key
    it holds being live on this environment's proxy: no new secret."""

    kind, symbol, order = "move-file", "~", -5
    source: str = ""
    target: str = ""
    token: str = ""

    def _data(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "token_prefix": self.token[:12]}


@dataclass(frozen=True)
class Conflict(Change):
    """A key the tool may not touch stands in the way: a hand-made key holding a roster alias (until --adopt or
    --replace decides), or a key that claims to be managed and fails the ownership proof (never)."""

    kind, symbol, order = "conflict", "!", 3
    key: LiveKey = None  # type: ignore[assignment]

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, "created_by": self.key.created_by}


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    warnings: tuple[str, ...] = ()
    managed_count: int = 0
    unmanaged_count: int = 0
    roster_sha256: str = ""
    live_fingerprint: str = ""
    now: datetime | None = None
    expiring: tuple[tuple[str, datetime], ...] = ()  # (developer, expiry) within keys.expiry_warning
    current_count: int = 0  # developers' current managed keys: what "all of them" means to the brakes
    team_ids: tuple[tuple[str, str], ...] = ()  # (roster team, id) of the tool's teams on the proxy
    revoked: int = 0  # keys under roster users that the tool did not issue: revoked by this plan
    proofs: Proofs = NO_PROOFS
    environment: str | None = None

    @property
    def actions(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if not isinstance(c, Conflict))

    @property
    def empty(self) -> bool:
        return not self.actions

    @property
    def high_risk(self) -> tuple[Change, ...]:
        return tuple(c for c in self.actions if c.risk)

    @property
    def taken_over(self) -> int:
        """Keys the tool does not manage that this plan would change: adopted or replaced hand-made keys."""
        return sum(1 for c in self.actions if isinstance(c, Adopt) or (isinstance(c, Rotate) and not c.old.managed))

    def count(self, *kinds: str) -> int:
        return sum(1 for c in self.changes if c.kind in kinds)

    @property
    def summary(self) -> str:
        if self.empty and not self.count("conflict"):
            return "No changes."
        parts = [f"{self.count('create')} to create", f"{self.count('rotate')} to rotate",
                 f"{self.count('update', 'adopt')} to update", f"{self.count('delete', 'remove-file')} to delete"]
        if self.count("restore"):
            parts.insert(1, f"{self.count('restore')} to restore")
        text = "Plan: " + ", ".join(parts) + "."
        teams = [self.count("create-team"), self.count("update-team", "adopt-team"), self.count("delete-team"),
                 self.count("join-team", "leave-team", "member-budget")]
        if any(teams):
            text += (f" Teams: {teams[0]} to create, {teams[1]} to update, {teams[2]} to delete; {teams[3]} "
                     "membership change(s).")
        users = [self.count("create-user"), self.count("update-user"), self.count("delete-user")]
        if any(users):
            text += f" Users: {users[0]} to create, {users[1]} to update, {users[2]} to delete."
        if self.count("revoke"):
            text += f" {self.count('revoke')} key(s) the tool did not issue to revoke."
        if self.count("move-file"):
            text += f" {self.count('move-file')} key file(s) to move into keys of environment(s)."
        if self.count("conflict"):
            text += f" {self.count('conflict')} conflict(s) need a decision."
        return text

    @property
    def checksum(self) -> str:
        """Covers what will be done, not when it was computed: the same roster and proxy give the same checksum."""
        payload = json.dumps([c.data for c in self.actions], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def data(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "roster_sha256": self.roster_sha256,
                **({"environment": self.environment} if self.environment else {}),
                "live_fingerprint": self.live_fingerprint, "checksum": self.checksum,
                "computed_at": iso(self.now), "summary": self.summary,
                "managed_keys": self.managed_count, "unmanaged_keys": self.unmanaged_count,
                "proofs": self.proofs.header(),
                "changes": [c.data for c in self.changes], "warnings": list(self.warnings),
                "high_risk": [{"developer": c.name, "kind": c.kind, "why": c.risk} for c in self.high_risk],
                "keys_taken_over": self.taken_over,
                "expiring_soon": [{"developer": name, "expires": iso(when)} for name, when in self.expiring]}


def fingerprint(keys: list[LiveKey], teams: list[LiveTeam] | None = None,
                users: list[LiveUser] | None = None) -> str:
    """Changes when any field the diff reads changes on any of these keys or teams: for stale-plan detection."""
    rows = sorted((k.token, k.alias, k.models, k.blocked, iso(k.expires), k.user_id,
                   json.dumps(k.metadata, sort_keys=True, default=str), tuple(k.limits.as_dict().values()), k.team_id)
                  for k in keys)
    if teams:  # absent for rosters without teams, so their fingerprints stay what they were
        rows.append(sorted((t.team_id, t.models, tuple(t.settings().values()), t.members, t.admins,
                            sorted(t.member_budgets.items())) for t in teams))
    if users:
        rows.append(sorted((u.user_id, u.role, u.models, u.max_budget, u.teams, u.ours) for u in users))
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- desired state


def desired_models(roster: Roster, developer: Developer, catalog: ModelCatalog | None) -> tuple[str, ...]:
    models = set(roster.models_for(developer))
    if roster.keys.grant_model_aliases and catalog is not None:
        for name in list(models):
            models |= catalog.aliases_of(name)
    return tuple(sorted(models))


def desired_state(roster: Roster, catalog: ModelCatalog | None, now: datetime,
                  team_ids: dict[str, str] | None = None) -> dict[str, Desired]:
    """Developers whose access has not expired, as keys."""
    admins = [canonical(r) for r in roster.keys.admin_recipients]
    out = {}
    for dev in roster.developers:
        if dev.expires is not None and dev.expires <= now:
            continue
        out[dev.name] = Desired(
            name=dev.name, alias=roster.keys.alias_for(dev.name), models=desired_models(roster, dev, catalog),
            limits=dev.limits, expires=dev.expires, blocked=dev.disabled,
            recipients=tuple(sorted({canonical(dev.recipient), *admins})),
            team=dev.team, team_id=(team_ids or {}).get(dev.team) if dev.team else None)
    return out


def alias_warnings(roster: Roster, catalog: ModelCatalog) -> list[str]:
    """A key scoped to one name of a model is refused for its other names (docs/litellm.md §7): say so."""
    who: dict[tuple[str, str], list[str]] = {}  # one warning per pair of names, listing every developer
    for dev in roster.developers:
        granted = set(desired_models(roster, dev, catalog))
        for name in sorted(granted):
            for other in sorted(catalog.aliases_of(name) - granted):
                who.setdefault((name, other), []).append(dev.name)
    return [f"{', '.join(names)}: {name} and {other} are the same model on this proxy; clients asking for {other} "
            "will be refused (grant it too, or set keys.grant_model_aliases: true)"
            for (name, other), names in sorted(who.items())]


# ---------------------------------------------------------------- diff


def _same_expiry(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= EXPIRY_TOLERANCE


def _proxy_fields(want: Desired, key: LiveKey, team_names: dict[str, str]) -> list[tuple[str, Any, Any]]:
    fields = []
    if key.alias != want.alias:
        fields.append(("key_alias", key.alias, want.alias))
    if tuple(sorted(key.models)) != want.models:
        fields.append(("models", sorted(key.models), list(want.models)))
    for name in LIMIT_FIELDS:
        before, after = getattr(key.limits, name), getattr(want.limits, name)
        if not same_value(before, after):
            fields.append((name, before, after))
    if not _same_expiry(key.expires, want.expires):
        fields.append(("expires", iso(key.expires), iso(want.expires)))
    if key.blocked != want.blocked:
        fields.append(("blocked", key.blocked, want.blocked))
    if key.user_id != want.user_id:
        fields.append(("user_id", key.user_id, want.user_id))
    if key.team_id != want.team_id or (want.team is not None and want.team_id is None):
        fields.append(("team", team_names.get(key.team_id or "", key.team_id), want.team))
    if key.allowed_routes != LLM_ROUTES:
        fields.append(("allowed_routes", list(key.allowed_routes), list(LLM_ROUTES)))
    return fields


def file_document_fields(want: Desired, proxy_url: str | None, environment: str | None = None) -> dict[str, Any]:
    """The readable fields a key file should carry for this developer (issued_at and token are set at issue)."""
    return {"developer": want.name, **({"environment": environment} if environment else {}), "key_alias": want.alias,
            "proxy_url": proxy_url, "models": list(want.models), "expires": iso(want.expires)}


def _file_fields(want: Desired, file: KeyFile | None, proxy_url: str | None, proofs: Proofs,
                 environment: str | None) -> tuple[str, ...]:
    if file is None or file.problem:
        return ()
    wanted = file_document_fields(want, proxy_url, environment)
    names = tuple(k for k, v in wanted.items() if file.fields.get(k) != v)
    if proofs.enabled and not proofs.file_proven(want.name, file):
        names += ("proof",)  # trusted on first use (the diff checked): it gets its proof
    return names


def _rotation_reason(roster: Roster, dev: Developer, want: Desired, key: LiveKey, file: KeyFile | None,
                     now: datetime, *, delivered: bool = True, proofs: Proofs = NO_PROOFS) -> tuple[str, bool] | None:
    """Why the key must be rotated, and whether that is a revocation (the old key must stop at once), or None."""
    reason = _due(roster, dev, want, key, file, now, delivered=delivered, proofs=proofs)
    if reason is None:
        return None
    return reason, _rotation_requested(dev, key)


def _rotation_requested(dev: Developer, key: LiveKey) -> bool:
    return dev.rotation_requested(key.created_at)


def _due(roster: Roster, dev: Developer, want: Desired, key: LiveKey, file: KeyFile | None, now: datetime, *,
         delivered: bool, proofs: Proofs) -> str | None:
    where = f"{roster.keys.delivery_dir}/{want.name}.sops.yaml"
    if delivered and not key.external:
        if file is None:
            return f"key file {where} is missing: its secret is lost"
        if file.problem:
            return f"key file {where} is {file.problem}"
        if file.token_sha256 != key.token:
            return f"key file {where} does not hold the live key"
        if file.environment not in (None, roster.environment):
            return f"key file {where} belongs to environment {file.environment}"
        # A key file is matched by a hash it states in the clear: only its proof says the secret inside is that one.
        problem = proofs.file_problem(want.name, file, required=key_standing(key, proofs)[0] is Standing.PROVEN)
        if problem:
            return f"key file {where} {problem}: it is not trusted to hold the live key"
        if file.recipients != frozenset(want.recipients):
            added = sorted(set(want.recipients) - file.recipients)
            whom = ", ".join(added) if added else "fewer recipients"  # in full: a reviewer must see whose key it is
            return f"recipient changed to {whom}: the key file must be readable by exactly the roster's recipients"
    issued = key.created_at
    if _rotation_requested(dev, key):
        return f"issued {iso(issued)}, before the rotation requested for {iso(dev.rotate)}"
    if roster.keys.rotate_after is not None and issued is not None and now - issued >= roster.keys.rotate_after:
        return f"older than {format_duration(roster.keys.rotate_after)}: issued {iso(issued)}"
    return None


def diff(roster: Roster, live: list[LiveKey], records: Records, now: datetime, *,
         catalog: ModelCatalog | None = None, proxy_url: str | None = None, options: Options | None = None,
         teams: list[LiveTeam] | None = None, users: list[LiveUser] | None = None,
         prover: Prover | None = None, legacy: dict[str, KeyFile] | None = None) -> Plan:
    """users: the proxy's users; None where they were not read (unit tests of the key diff), which leaves the
    developers' LiteLLM users out of the plan. prover: the operator's RECONCILE_PROOF_KEY (proofs.py). legacy: the
    key files above an environment's directory, from before the roster declared environments."""
    from .teams import classify_teams, diff_teams  # teams.py and users.py build on this module's Change
    from .users import Revoke, diff_users

    options = options or Options()
    proofs = proofs_for(prover or Prover(), live, teams or [])
    seen_teams = classify_teams(teams or [], proofs)
    team_ids = seen_teams.ids(roster, adopting=proofs.enabled)
    team_names = {team_id: name for name, team_id in team_ids.items()}
    desired = desired_state(roster, catalog, now, team_ids)
    team_changes, team_warnings = diff_teams(roster, seen_teams, desired, proofs)
    # A roster team that exists nowhere and will not be made (a conflict holds its name): its members' keys wait.
    made = set(team_ids) | {c.name for c in team_changes if c.kind == "create-team"}
    waiting = {name for name, want in desired.items() if want.team is not None and want.team not in made}
    files, moves = _moved_in(roster, records.files, legacy or {}, {k.token for k in live})
    seen = classify(roster, live, records, now, frozenset(team_ids.values()), proofs)
    current, retiring, handmade = seen.current, seen.retiring, seen.handmade
    user_changes: list[Change] = []
    blocked_users: set[str] = set()
    alias_held = seen.blocked
    if users is not None:
        proven = {k.token for ks in [list(current.values()), seen.extra_current, *retiring.values()] for k in ks}
        found = diff_users(users, live, proven, {k.token for k in handmade.values()}, desired,
                           {t.team_id for t in seen_teams.ours.values()}, options.adopt,
                           {k.token: problem for k, problem in seen.unproven})
        user_changes, blocked_users = found.changes, found.blocked
        waiting |= blocked_users  # their user is someone else's: a UserConflict says why
        by_alias = {roster.keys.alias_for(d.name): d.name for d in roster.developers}
        freed = {by_alias.get(c.key.alias or "") for c in user_changes if isinstance(c, Revoke)}
        alias_held = seen.blocked - freed  # a revoked key no longer holds its alias

    changes: list[Change] = []
    warnings: list[str] = []
    expiring: list[tuple[str, datetime]] = []
    selected = (lambda name: True) if options.only is None else (lambda name: name in options.only)
    context = _Context(roster, options, proxy_url, team_names, proofs, now, frozenset(k.token for k in live))

    for name in sorted(desired):
        if not selected(name) or name in alias_held or name in waiting:  # a Conflict says why
            continue
        want, dev = desired[name], roster.developer(name)
        assert dev is not None
        olds = retiring.get(name, [])
        action = _developer_change(context, dev, want, current.get(name), handmade.get(name), files.get(name), olds)
        if not isinstance(action, Rotate):  # a rotation drops every rotated-out key itself
            changes.extend(_retiring_changes(roster, want, olds, now, proofs))
        if action is not None:
            changes.append(action)
        if want.expires is not None and want.expires - now <= roster.keys.expiry_warning:
            expiring.append((name, want.expires))
            warnings.append(f"{name}: key expires in {humanize(want.expires - now)} ({iso(want.expires)})")

    for dev in roster.developers:
        if dev.name not in desired and dev.name not in current and selected(dev.name):
            warnings.append(f"{dev.name}: access expired {iso(dev.expires)}: no key is issued")

    gone = {n: k for n, k in current.items() if n not in desired}
    for name in sorted(set(gone) | {n for n in retiring if n not in desired}
                       | {k.roster_name for k in seen.extra_current if k.roster_name}):
        if not selected(name):
            continue
        dev = roster.developer(name)
        why = f"access expired {iso(dev.expires)}" if dev is not None else "no longer in the roster"
        if name in gone:
            changes.append(Delete(name, why, key=gone[name], remove_file=name in files and not files[name].problem))
        if name not in desired:
            changes.extend(Delete(name, why + ": rotated-out key", key=old) for old in retiring.get(name, []))
        changes.extend(Delete(name, "a second current key for this developer", key=extra)
                       for extra in seen.extra_current if extra.roster_name == name)
    for name, file in sorted(files.items()):
        if selected(name) and name not in desired and name not in gone:
            if file.problem:
                warnings.append(f"{file.path.name}: {file.problem}; left alone (the tool removes only its own files)")
            else:
                changes.append(RemoveFile(name, "key file with no developer and no live key", path=str(file.path)))
    for key, problem in seen.unproven:
        name = key.roster_name or key.alias or key.token[:12]
        if selected(name):
            changes.append(Conflict(name, f"{problem}; it is never changed: delete it by hand if it is not wanted",
                                    key=key))

    revoked = {c.key.token for c in user_changes if isinstance(c, Revoke)}
    changes = [c for c in changes if not (isinstance(c, Conflict) and c.key is not None and c.key.token in revoked)]
    changes += [c for c in user_changes if selected(c.name)]
    changes += [c for c in moves if selected(c.name)]
    changes += [c for c in team_changes if c.subject == "team" or (
        selected(c.name) and not (c.name in blocked_users and c.kind in ("join-team", "member-budget")))]
    warnings += team_warnings
    changes, held = _hold_leaves(changes, live)
    warnings += held
    changes, squatted = _unsquatted(changes, live)
    warnings += squatted
    changes = _recipient_risks(changes, roster, files)
    if options.no_delete:
        changes = [c for c in changes if not isinstance(c, (Delete, RemoveFile))
                   and c.kind not in ("delete-team", "delete-user", "revoke")]
    if catalog is not None:
        warnings.extend(alias_warnings(roster, catalog))
    changes.sort(key=lambda c: (c.order, c.name, c.kind))
    aliases = {d.alias for d in desired.values()}
    relevant = [k for k in live if k.managed or k.alias in aliases]  # what the plan was computed from
    read = {user_id_for(n) for n in {*desired, *current, *retiring}} | {k.user_id for k in relevant}
    relevant_users = [u for u in users or [] if u.user_id in read]
    return Plan(tuple(changes), tuple(warnings), seen.managed_count, seen.unmanaged + len(handmade)
                + len(seen.unproven) - len(revoked), roster.sha256,
                fingerprint(relevant, seen_teams.relevant(roster), relevant_users), now,
                tuple(expiring), len(current), tuple(sorted(team_ids.items())), revoked=len(revoked), proofs=proofs,
                environment=roster.environment)


def _moved_in(roster: Roster, files: dict[str, KeyFile], legacy: dict[str, KeyFile],
              live_tokens: set[str]) -> tuple[dict[str, KeyFile], list[Change]]:
    """Key files from before environments whose keys are live on this environment's proxy move into its directory
    (the first apply of that environment); the diff reads them as already there. Others stay where they are."""
    moves: list[Change] = []
    merged = dict(files)
    parent = PurePosixPath(roster.keys.delivery_dir).parent
    for name, file in sorted(legacy.items()):
        here = files.get(name)
        if file.problem or file.token_sha256 not in live_tokens or (here and here.token_sha256 != file.token_sha256):
            continue
        merged.setdefault(name, file)
        moves.append(MoveFile(name, f"its key is live on environment {roster.environment}'s proxy",
                              source=str(parent / f"{name}.sops.yaml"),
                              target=f"{roster.keys.delivery_dir}/{name}.sops.yaml", token=file.token_sha256 or ""))
    return merged, moves


def _hold_leaves(changes: list[Change], live: list[LiveKey]) -> tuple[list[Change], list[str]]:
    """A member leaves a team only when no key of theirs stays bound to it after this plan's key changes: LiteLLM
    may delete a member's keys in the team with the membership (docs/litellm.md §10). A key stays when the plan
    neither deletes it nor moves it (a key whose new team is in conflict waits, and so does its old membership;
    a rotated-out key keeps its team through its grace)."""
    going = {c.key.token for c in changes if isinstance(c, Delete)}
    going |= {c.key.token for c in changes if isinstance(c, Update) and any(f == "team" for f, _, _ in c.fields)}
    for c in changes:
        if isinstance(c, Rotate):
            going.update(c.drop)
            if c.retire_at is None:
                going.add(c.old.token)
    staying: dict[tuple[str | None, str | None], list[LiveKey]] = {}
    for k in live:
        if k.team_id and k.token not in going:
            staying.setdefault((k.team_id, k.user_id), []).append(k)
    kept, held = [], []
    for change in changes:
        team_id = getattr(change, "team_id", None) if change.kind == "leave-team" else None
        if team_id:
            bound = staying.get((team_id, user_id_for(change.name)), [])
            if bound:
                held.append(f"{change.name}: stays a member of team {getattr(change, 'team', '')} while "
                            f"{len(bound)} key(s) of theirs are bound to it ({', '.join(str(k.alias) for k in bound)})"
                            "; LiteLLM may delete them with the membership")
                continue
        kept.append(change)
    return kept, held


@dataclass(frozen=True)
class _Context:
    """What every developer's diff reads besides their own key, file and roster entry."""

    roster: Roster
    options: Options
    proxy_url: str | None
    team_names: dict[str, str]
    proofs: Proofs
    now: datetime
    live_tokens: frozenset[str]


def _developer_change(ctx: _Context, dev: Developer, want: Desired, key: LiveKey | None, hand: LiveKey | None,
                      file: KeyFile | None, olds: list[LiveKey]) -> Change | None:
    """What one roster developer needs, if anything."""
    roster, now, name = ctx.roster, ctx.now, want.name
    drop = tuple(r.token for r in olds)  # their alias is about to be reused by the key being rotated out
    if hand is not None:
        return _handmade_change(ctx, dev, want, key, hand, drop)
    if key is None:
        return _keyless_change(ctx, want, file)
    due = _rotation_reason(roster, dev, want, key, file, now, proofs=ctx.proofs)
    if due is not None:
        return _rotate(roster, want, key, due[0], drop, now, revocation=due[1])
    fields = _proxy_fields(want, key, ctx.team_names)
    if key_standing(key, ctx.proofs)[0] is Standing.FIRST_USE:
        fields.append(("proof", "missing", "set"))
    file_fields = () if key.external else _file_fields(want, file, ctx.proxy_url, ctx.proofs, ctx.roster.environment)
    if not fields and not file_fields:
        return None
    what = ", ".join(f for f, _, _ in fields) or "key file fields " + ", ".join(file_fields)
    return Update(name, f"{what} differ from the roster", desired=want, key=key, fields=tuple(fields),
                  file_fields=file_fields)


def _handmade_change(ctx: _Context, dev: Developer, want: Desired, key: LiveKey | None, hand: LiveKey,
                     drop: tuple[str, ...]) -> Change:
    roster, options, now, name = ctx.roster, ctx.options, ctx.now, want.name
    if key is not None:
        return Conflict(name, f"a key made by hand holds the alias {want.alias}, which this developer's managed "
                              "key should carry; delete that key or change keys.alias", key=hand)
    if name in options.replace:
        return _rotate(roster, want, hand, "replacing a hand-made key with a delivered one (--replace)", drop, now)
    if not (name in options.adopt or roster.keys.adopt_unmanaged):
        return Conflict(name, f"a key made by hand holds the alias {hand.alias}; re-run with --adopt {name} to take "
                              f"it over, or --replace {name} to rotate it into a delivered key", key=hand)
    if hand.team_id and hand.team_id not in ctx.team_names:
        return Conflict(name, f"a key made by hand holds the alias {hand.alias} but is bound to team "
                              f"{hand.team_id}, which is not the tool's (its admins can relabel its keys): it is "
                              f"not adopted; re-run with --replace {name} to rotate it into a delivered key", key=hand)
    if not ctx.proofs.enabled:
        return Conflict(name, f"a key made by hand holds the alias {hand.alias}; adopting it needs proofs "
                              "(RECONCILE_PROOF_KEY), which nobody else can forge on an adopted key: set it, or "
                              f"re-run with --replace {name} to rotate it into a delivered key", key=hand)
    due = _rotation_reason(roster, dev, want, hand, None, now, delivered=False)
    if due is not None:  # adopting it would only make it due at once: replace it instead
        return _rotate(roster, want, hand, f"hand-made key to adopt is due for rotation: {due[0]}", drop, now,
                       revocation=due[1])
    return Adopt(name, "taking over a hand-made key in place; it keeps its secret", desired=want, key=hand,
                 fields=tuple(_proxy_fields(want, hand, ctx.team_names)))


def _keyless_change(ctx: _Context, want: Desired, file: KeyFile | None) -> Change:
    """A developer with no live key: a new one, or with --restore the one their key file holds when it is proven.
    Without --restore a key file with no live key (an interrupted apply, or one committed by hand) is never
    registered: nobody can choose a developer's key. It is replaced."""
    if file is None:
        return Create(want.name, "new in the roster", desired=want)
    where = f"{ctx.roster.keys.delivery_dir}/{want.name}.sops.yaml"
    if not ctx.options.restore:
        return Create(want.name, f"no live key for this developer; a fresh key replaces {where}", desired=want)
    problem = _restore_problem(ctx, want.name, file)
    if problem:
        return Create(want.name, f"no live key for this developer; {where} is not restored ({problem}): a fresh "
                                 "key replaces it", desired=want)
    return Restore(want.name, f"no live key for this developer: registering again the key {where} holds "
                              "(its proof verifies)", desired=want, token=file.token_sha256 or "")


def _restore_problem(ctx: _Context, name: str, file: KeyFile) -> str | None:
    if file.problem:
        return file.problem
    if not file.token_sha256:
        return "it names no key hash"
    if file.token_sha256 in ctx.live_tokens:  # registering it again would be a no-op on some versions
        return "its key is on the proxy, but not as this developer's"
    if file.environment != ctx.roster.environment:
        return f"it is for environment {file.environment or 'none'}, not {ctx.roster.environment or 'none'}"
    return ctx.proofs.file_problem(name, file, required=True)


def _rotate(roster: Roster, want: Desired, old: LiveKey, reason: str, drop: tuple[str, ...], now: datetime, *,
            revocation: bool = False) -> Rotate:
    """The old key keeps working for keys.grace, unless this rotation is a revocation, the grace is 0, or the
    developer is disabled (a blocked key has no use for an overlap)."""
    grace = timedelta(0) if revocation or want.blocked else roster.keys.grace
    return Rotate(want.name, reason, desired=want, old=old, retire_at=now + grace if grace > timedelta(0) else None,
                  drop=drop, grace=grace, revocation=revocation,
                  retiring_alias=roster.keys.retiring_alias_for(want.name))


def _recipient_risks(changes: list[Change], roster: Roster, files: dict[str, KeyFile]) -> list[Change]:
    """A rotation that gives a developer's new key to a recipient who can already read other keys is how a pull
    request would redirect a key to its author: an admin recipient being added, or a recipient found in another
    developer's key file. Either needs --force; a change to a fresh recipient (a new laptop) is shown in full."""
    admins = {canonical(r) for r in roster.keys.admin_recipients}
    readers: dict[str, set[str]] = {}  # recipient -> the developers whose key files it reads
    for name, other in files.items():
        for r in other.recipients:
            readers.setdefault(r, set()).add(name)
    out: list[Change] = []
    for change in changes:
        file = files.get(change.name)
        if isinstance(change, Rotate) and file is not None and not file.problem:
            added = set(change.desired.recipients) - file.recipients
            elsewhere = {r for r in added if readers.get(r, set()) - {change.name}}
            new_admins = sorted(added & admins)
            reused = sorted((added - admins) & elsewhere)
            if new_admins:
                change = replace(change, recipient_risk=f"adds admin recipient {', '.join(new_admins)}: it can read "
                                                        "every key from now on")
            elif reused:
                change = replace(change, recipient_risk=f"gives {change.name}'s key to {', '.join(reused)}, which "
                                                        "already reads another developer's key file")
        out.append(change)
    return out


def _unsquatted(changes: list[Change], live: list[LiveKey]) -> tuple[list[Change], list[str]]:
    """A rotation renames the old key to its retiring alias, which anyone who can name a key could take first
    (LiteLLM would refuse the rename, and the rotation would fail every time). When a key the rotation does not
    delete holds it, the old key gets one made unique by its own hash instead, and the plan says so."""
    holders = {k.alias: k.token for k in live if k.alias}
    out, warnings = [], []
    for change in changes:
        if isinstance(change, Rotate) and change.retire_at is not None:
            wanted, alias = change.retiring_alias, change.retiring_alias
            for length in (8, 16, 64):
                holder = holders.get(alias)
                if holder is None or holder in change.drop or holder == change.old.token:
                    break
                alias = f"{wanted}-{change.old.token[:length]}"
            if alias != wanted:
                warnings.append(f"{change.name}: a key the tool did not make holds {wanted}, the alias a rotated-out "
                                f"key takes; this one is renamed {alias} instead (delete that key if it is a squat)")
                change = replace(change, retiring_alias=alias)
        out.append(change)
    return out, warnings


def _retiring_changes(roster: Roster, want: Desired, olds: list[LiveKey], now: datetime,
                      proofs: Proofs) -> list[Change]:
    """Rotated-out keys: deleted when their grace ends (or keys.grace became 0: the overlap ends now), blocked with
    the developer's current key when the roster disables the developer, given their proof when proofs begin."""
    out: list[Change] = []
    for old in olds:
        if old.retire_at is not None and old.retire_at <= now:
            out.append(Delete(want.name, f"grace ended {iso(old.retire_at)}: rotated-out key", key=old))
        elif roster.keys.grace == timedelta(0):
            out.append(Delete(want.name, "keys.grace is 0: the rotated-out key goes now", key=old))
        elif want.blocked and not old.blocked:
            out.append(Update(want.name, "disabled: the rotated-out key is blocked too", desired=want, key=old,
                              fields=(("blocked", False, True),)))
        elif key_standing(old, proofs)[0] is Standing.FIRST_USE:
            out.append(Update(want.name, "proofs begin: the rotated-out key gets its proof", desired=want, key=old,
                              fields=(("proof", "missing", "set"),)))
    return out
