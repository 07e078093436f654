"""The Plan, and diff(): every kind's changes for one roster against one proxy, and what crosses kinds. Pure: no I/O
and no clock: `now` comes in, so every boundary can be tested."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .catalog import ModelCatalog
from .changes import Change, Conflict
from .kinds.keys import (
    Adopt,
    Delete,
    KeyContext,
    Rotate,
    Update,
    alias_warnings,
    desired_state,
    diff_keys,
    moved_in,
    recovered_files,
    renamed_files,
    sops_config,
)
from .kinds.teams import LiveTeam, classify_teams, diff_teams
from .kinds.users import LiveUser, Revoke, diff_users
from .live import LiveKey, user_id_for
from .options import Options
from .ownership import classify, proofs_for
from .proofs import NO_PROOFS, Proofs, Prover
from .records import SOPS_CONFIG, KeyFile, Records
from .roster import Roster
from .timeutil import iso

FORMAT_VERSION = 1


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
    simulated: bool = False  # planned as of RECONCILE_NOW, not the real time
    refusals: tuple[str, ...] = ()  # what LiteLLM would refuse: apply stops on these before any change
    sops_config: str | None = None  # the delivery directory's .sops.yaml, where apply must (re)write it

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
                 f"{self.count('update', 'adopt', 're-encrypt')} to update",
                 f"{self.count('delete', 'remove-file')} to delete"]
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
        if self.count("recover-file"):
            text += f" {self.count('recover-file')} key file(s) an earlier apply could not push to put back."
        if self.count("release"):
            text += f" {self.count('release')} key(s) to release from management (kept on the proxy)."
        if self.count("conflict"):
            text += f" {self.count('conflict')} conflict(s) need a decision."
        return text

    @property
    def checksum(self) -> str:
        """Covers what will be done, not when it was computed: the same roster and proxy give the same checksum.
        A recovered key file is left out: it puts back what an earlier apply made and proved, changes no one's
        access, and a plan reviewed before that apply's push failed could not have shown it."""
        payload = json.dumps([c.data for c in self.actions if c.kind != "recover-file"], sort_keys=True, default=str)
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


def diff(roster: Roster, live: list[LiveKey], records: Records, now: datetime, *,
         catalog: ModelCatalog | None = None, proxy_url: str | None = None, options: Options | None = None,
         teams: list[LiveTeam] | None = None, users: list[LiveUser] | None = None,
         prover: Prover | None = None, legacy: dict[str, KeyFile] | None = None,
         recovered: tuple[str, dict[str, KeyFile]] | None = None) -> Plan:
    """users: the proxy's users; None where they were not read (unit tests of the key diff), which leaves the
    developers' LiteLLM users out of the plan. prover: the operator's RECONCILE_PROOF_KEY (proofs.py). legacy: the
    key files above an environment's directory, from before the roster declared environments. recovered: where
    the key files of an apply that could not push them were unpacked, and those files."""
    options = options or Options()
    proofs = proofs_for(prover or Prover(), live, teams or [])
    seen_teams = classify_teams(teams or [], proofs)
    team_ids = seen_teams.ids(roster, adopting=proofs.enabled)
    desired = desired_state(roster, catalog, now, team_ids)
    team_changes, team_warnings, refusals = diff_teams(roster, seen_teams, desired, proofs, catalog)
    # A roster team that exists nowhere and will not be made (a conflict holds its name): its members' keys wait.
    made = set(team_ids) | {c.name for c in team_changes if c.kind == "create-team"}
    waiting = {name for name, want in desired.items() if want.team is not None and want.team not in made}
    files, moves = moved_in(roster, records.files, legacy or {}, {k.token for k in live})
    recovery_warnings: list[str] = []
    if recovered is not None:
        files, recoveries, recovery_warnings = recovered_files(roster, files, recovered[1], recovered[0],
                                                               {k.token for k in live}, proofs)
        moves += recoveries
    seen = classify(roster, live, records, now, frozenset(team_ids.values()), proofs)
    files, renamed = renamed_files(roster, files, seen.current)
    moves += renamed
    user_changes: list[Change] = []
    blocked_users: set[str] = set()
    alias_held = seen.blocked
    if users is not None:
        proven = {k.token for ks in [list(seen.current.values()), seen.extra_current, *seen.retiring.values()]
                  for k in ks}
        found = diff_users(users, live, proven, {k.token for k in seen.handmade.values()}, desired,
                           {t.team_id for t in seen_teams.ours.values()}, options.adopt,
                           {k.token: problem for k, problem in seen.unproven})
        user_changes, blocked_users = found.changes, found.blocked
        waiting |= blocked_users  # their user is someone else's: a UserConflict says why
        by_alias = {roster.keys.alias_for(d.name): d.name for d in roster.developers}
        freed = {by_alias.get(c.key.alias or "") for c in user_changes if isinstance(c, Revoke)}
        alias_held = seen.blocked - freed  # a revoked key no longer holds its alias

    def selected(name: str) -> bool:
        return options.only is None or name in options.only

    context = KeyContext(roster, options, proxy_url, {i: n for n, i in team_ids.items()}, proofs, now,
                         frozenset(k.token for k in live))
    changes, warnings, expiring = diff_keys(context, desired, seen, files, waiting | alias_held, selected, live)
    known = {d.name for d in roster.developers} | set(seen.current) | set(seen.retiring) | set(files)
    warnings += [f"--only {name}: no developer, key or key file of that name" for name in sorted(
        (options.only or frozenset()) - known)]
    revoked = {c.key.token for c in user_changes if isinstance(c, Revoke)}
    changes = [c for c in changes if not (isinstance(c, Conflict) and c.key is not None and c.key.token in revoked)]
    releasing = {c.name for c in changes if c.kind == "release"}  # the user stays with the released key
    changes += [c for c in user_changes if selected(c.name) and not (c.kind == "delete-user" and c.name in releasing)]
    changes += [c for c in moves if selected(c.name)]
    changes += [c for c in team_changes if c.subject == "team" or (
        selected(c.name) and not (c.name in blocked_users and c.kind in ("join-team", "member-budget")))]
    warnings += team_warnings + recovery_warnings
    sops = None  # the .sops.yaml apply writes; --only leaves the others' rules as they are
    wanted = sops_config(desired) if options.only is None else records.sops_config
    if wanted != records.sops_config and (desired or records.sops_config):
        sops = wanted
        if records.sops_config is not None:
            warnings.append(f"{roster.keys.delivery_dir}/{SOPS_CONFIG} differs from the roster's recipients: apply "
                            "rewrites it (an admin's sops updatekeys follows it)")
    changes, held = _hold_leaves(changes, live)
    warnings += held
    if options.no_delete:
        changes = [c for c in changes if c.kind not in ("delete", "remove-file", "delete-team", "delete-user",
                                                        "revoke")]
    if catalog is not None:
        warnings.extend(alias_warnings(roster, catalog))
    changes.sort(key=lambda c: (c.order, c.name, c.kind))
    aliases = {d.alias for d in desired.values()}
    relevant = [k for k in live if k.managed or k.alias in aliases]  # what the plan was computed from
    read = {user_id_for(n) for n in {*desired, *seen.current, *seen.retiring}} | {k.user_id for k in relevant}
    relevant_users = [u for u in users or [] if u.user_id in read]
    return Plan(tuple(changes), tuple(warnings), seen.managed_count, seen.unmanaged + len(seen.handmade)
                + len(seen.unproven) - len(revoked), roster.sha256,
                fingerprint(relevant, seen_teams.relevant(roster), relevant_users), now,
                tuple(expiring), len(seen.current), tuple(sorted(team_ids.items())), revoked=len(revoked),
                proofs=proofs, environment=roster.environment, refusals=tuple(refusals),
                sops_config=sops)


def _hold_leaves(changes: list[Change], live: list[LiveKey]) -> tuple[list[Change], list[str]]:
    """A member leaves a team only when no key of theirs stays bound to it after this plan's key changes: LiteLLM
    may delete a member's keys in the team with the membership (docs/litellm.md §10). A key stays when the plan
    neither deletes it nor moves it (a key whose new team is in conflict waits, and so does its old membership;
    a rotated-out key keeps its team through its grace)."""
    going = {c.key.token for c in changes if isinstance(c, Delete)}
    # A key whose team or user changes is no longer the member's in that team when the member leaves.
    going |= {c.key.token for c in changes
              if isinstance(c, Update) and any(f in ("team", "user_id") for f, _, _ in c.fields)}
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


