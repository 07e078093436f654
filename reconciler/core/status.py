"""`reconcile status`: who has access to what, and what will change next. Pure: rows from roster, keys, records
and now, classified by the same rules as the plan (ownership.classify). cli/status.py renders them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .kinds.teams import LiveTeam, classify_teams
from .live import USER_PREFIX, LiveKey
from .ownership import classify, proofs_for
from .proofs import Prover
from .records import Records
from .roster import Roster
from .timeutil import humanize, iso


@dataclass(frozen=True)
class StatusRow:
    developer: str
    state: str  # active, blocked, expired, retiring, second key, no key, not in roster, hand-made, unproven claim
    alias: str | None
    models: list[str]
    age: str | None
    expires_in: str | None
    rotation_due_in: str | None
    spend: float | None
    max_budget: float | None
    last_active: str | None
    token_prefix: str | None
    team: str | None = None
    # The same moments as timestamps, for machines (the "in 3d" columns are for people).
    issued_at: str | None = None
    expires_at: str | None = None
    rotation_due_at: str | None = None


@dataclass(frozen=True)
class TeamRow:
    team: str
    state: str  # active, not created, not in roster
    spend: float | None
    max_budget: float | None
    budget_duration: str | None
    members: list[dict]  # {"developer", "spend", "budget"}: each member's spend and budget inside the team


def _row(roster: Roster, name: str, key: LiveKey | None, state: str, now: datetime,
         team_names: dict[str, str]) -> StatusRow:
    dev = roster.developer(name)
    due_at = None
    if key is not None and key.created_at is not None and key.retire_at is None:
        moments = []
        if roster.keys.rotate_after is not None:
            moments.append(key.created_at + roster.keys.rotate_after)
        if dev is not None and dev.rotation_requested(key.created_at):
            moments.append(now)
        due_at = min(moments) if moments else None
    due = humanize(due_at - now) if due_at is not None else None
    return StatusRow(
        developer=name, state=state, alias=key.alias if key else roster.keys.alias_for(name),
        models=list(key.models) if key else [], age=humanize(now - key.created_at) if key and key.created_at else None,
        expires_in=humanize(key.expires - now) if key and key.expires else None, rotation_due_in=due,
        spend=key.spend if key else None, max_budget=key.limits.max_budget if key else None,
        last_active=iso(key.last_active) if key else None, token_prefix=key.token[:8] if key else None,
        team=team_names.get(key.team_id or "", key.team_id) if key else None,
        issued_at=iso(key.created_at) if key else None, expires_at=iso(key.expires) if key else None,
        rotation_due_at=iso(due_at))


def status_rows(roster: Roster, live: list[LiveKey], records: Records, now: datetime,
                teams: list[LiveTeam] | None = None,
                prover: Prover | None = None) -> tuple[list[StatusRow], list[TeamRow]]:
    proofs = proofs_for(prover or Prover(), live, teams or [])
    ours = classify_teams(teams or [], proofs).ours
    seen = classify(roster, live, records, now, frozenset(t.team_id for t in ours.values()), proofs)
    names = {team.team_id: name for name, team in ours.items()}
    rows = []
    for name, key in seen.current.items():
        state = "not in roster" if roster.developer(name) is None else "blocked" if key.blocked else \
            "expired" if key.expired(now) else "active"
        rows.append(_row(roster, name, key, state, now, names))
    rows += [_row(roster, name, key, "retiring", now, names) for name, keys in seen.retiring.items() for key in keys]
    rows += [_row(roster, key.roster_name or "?", key, "second key", now, names) for key in seen.extra_current]
    rows += [_row(roster, name, key, "hand-made", now, names) for name, key in seen.handmade.items()]
    rows += [_row(roster, key.roster_name or "?", key, "unproven claim", now, names) for key, _ in seen.unproven]
    named = {r.developer for r in rows}
    rows += [_row(roster, d.name, None, "no key", now, names) for d in roster.developers if d.name not in named]
    team_rows = [_team_row(name, ours.get(name), "active" if name in ours else "not created")
                 for name in (t.name for t in roster.teams)]
    team_rows += [_team_row(name, team, "not in roster") for name, team in ours.items() if roster.team(name) is None]
    return sorted(rows, key=lambda r: (r.developer, r.state != "active", r.alias or "")), team_rows


def _team_row(name: str, team: LiveTeam | None, state: str) -> TeamRow:
    members = [] if team is None else [
        {"developer": user[len(USER_PREFIX):], "spend": team.member_spend.get(user, 0.0),
         "budget": team.member_budgets.get(user)} for user in team.members if user.startswith(USER_PREFIX)]
    return TeamRow(team=name, state=state, spend=team.spend if team else None,
                   max_budget=team.max_budget if team else None,
                   budget_duration=team.budget_duration if team else None, members=members)
