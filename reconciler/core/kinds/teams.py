"""The roster's teams against the proxy's: which teams are the tool's, and the changes that make them match. Pure.

A team is the tool's when its metadata says so and nobody but the proxy admin can administer it: no admin member
other than the master key's user, and no organization (whose admins would control it). That is the property that
matters, because a team's admins can manage its members' keys (docs/design.md, "Teams"). A team that claims to be
ours and fails it is a conflict, never changed, and no key is bound to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ... import TOOL_NAME
from ..catalog import ModelCatalog
from ..changes import Change, Conflict, Desired, before_after, field_lines, same_value, value_text
from ..live import ADMIN_CREATOR, MARKER, USER_PREFIX, Checker, user_id_for
from ..proofs import FIELD, NO_PROOFS, Proofs, Standing
from ..roster import TEAM_FIELDS, Roster, Team
from .keys import desired_models

TEAM_ROUTE = "GET /team/list"


@dataclass(frozen=True)
class LiveTeam:
    team_id: str
    alias: str | None
    models: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    max_budget: float | None = None
    budget_duration: str | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    spend: float = 0.0
    organization_id: str | None = None
    admins: tuple[str, ...] = ()
    members: tuple[str, ...] = ()  # role "user"
    member_permissions: tuple[str, ...] = ()
    created_at: datetime | None = None
    # From /team/info, for the tool's own teams only: each member's budget inside the team, and spend.
    member_budgets: dict[str, float | None] = field(default_factory=dict, hash=False, compare=False)
    member_spend: dict[str, float] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> LiveTeam:
        check = Checker(obj, TEAM_ROUTE, "team", "team_id")
        roles = obj.get("members_with_roles") or []
        if not isinstance(roles, list) or not all(
                isinstance(m, dict) and isinstance(m.get("user_id"), (str, type(None))) for m in roles):
            raise check.bad("members_with_roles", "a list of members")
        admins = {m["user_id"] for m in roles if m.get("role") == "admin" and m.get("user_id")}
        admins.update(check.strings("admins"))
        return cls(
            team_id=check.text("team_id", required=True),
            alias=check.text("team_alias"),
            models=tuple(check.strings("models")),
            metadata=dict(check.mapping("metadata")),
            max_budget=check.number("max_budget"),
            budget_duration=check.text("budget_duration"),
            tpm_limit=check.integer("tpm_limit"),
            rpm_limit=check.integer("rpm_limit"),
            spend=check.number("spend") or 0.0,
            organization_id=check.text("organization_id"),
            admins=tuple(sorted(admins)),
            members=tuple(sorted({m["user_id"] for m in roles if m.get("role") != "admin" and m.get("user_id")})),
            member_permissions=tuple(check.strings("team_member_permissions")),
            created_at=check.time("created_at"),
        )

    def with_memberships(self, memberships: Any) -> LiveTeam:
        """/team/info's team_memberships: each member's budget inside the team, and their spend in it."""
        budgets: dict[str, float | None] = {}
        spend: dict[str, float] = {}
        for row in memberships if isinstance(memberships, list) else []:
            if not isinstance(row, dict) or not isinstance(row.get("user_id"), str):
                continue
            table = row.get("litellm_budget_table")
            budget = table.get("max_budget") if isinstance(table, dict) else None
            budgets[row["user_id"]] = budget if isinstance(budget, (int, float)) else None
            if isinstance(row.get("spend"), (int, float)):
                spend[row["user_id"]] = float(row["spend"])
        return replace(self, member_budgets=budgets, member_spend=spend)

    @property
    def claims(self) -> str | None:
        """The roster team name this team's metadata claims, if it claims to be the tool's."""
        name = self.metadata.get("roster_team")
        return name if self.metadata.get(MARKER) == TOOL_NAME and isinstance(name, str) else None

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TEAM_FIELDS}


def team_metadata(name: str, base: dict[str, Any] | None = None, proof: str | None = None) -> dict[str, Any]:
    return {**(base or {}), MARKER: TOOL_NAME, "roster_team": name, **({FIELD: proof} if proof else {})}


def team_standing(team: LiveTeam, proofs: Proofs) -> tuple[Standing, str]:
    return proofs.check(team.metadata.get(FIELD), team.created_at, "team", team.claims or "", team.team_id)


@dataclass(frozen=True)
class TeamsSeen:
    ours: dict[str, LiveTeam]  # roster team name -> the tool's team
    unproven: list[tuple[LiveTeam, str]]
    handmade: dict[str, LiveTeam] = field(default_factory=dict)  # alias -> a team made by hand, claiming nothing
    contested: frozenset[str] = frozenset()  # roster team names that two teams claim: neither is used

    def relevant(self, roster: Roster) -> list[LiveTeam]:
        """The teams a plan for this roster reads: the tool's, and hand-made ones carrying a roster team's name."""
        return [*self.ours.values(), *(self.handmade[t.name] for t in roster.teams if t.name in self.handmade)]

    def ids(self, roster: Roster, *, adopting: bool = True) -> dict[str, str]:
        """Roster team -> id, for binding keys: the tool's teams, and the hand-made ones this plan takes over.
        adopting: adoption is possible at all (proofs are on)."""
        ids = {name: team.team_id for name, team in self.ours.items()}
        for team in roster.teams if roster.keys.adopt_unmanaged and adopting else ():
            hand = self.handmade.get(team.name)
            if team.name not in ids and hand is not None and _admin_problem(hand) is None:
                ids[team.name] = hand.team_id
        return ids


def _admin_problem(team: LiveTeam) -> str | None:
    """Who besides the proxy admin controls this team, if anyone."""
    others = [a for a in team.admins if a != ADMIN_CREATOR]
    if others:
        return f"{', '.join(others)} can administer it"
    if team.organization_id:
        return f"it belongs to organization {team.organization_id}, whose admins control it"
    return None


def classify_teams(teams: list[LiveTeam], proofs: Proofs = NO_PROOFS) -> TeamsSeen:
    """A claim holds when the team's proof verifies (or it predates proofs), it passes the admin proof and carries
    the roster team's name as its alias. A team with a valid proof beats claimants without one; when two teams
    hold a claim otherwise, neither is trusted (which one is the forgery cannot be told from the proxy): both are
    conflicts and the roster team waits for an operator."""
    claimants: dict[str, list[LiveTeam]] = {}
    proven: set[str] = set()
    unproven: list[tuple[LiveTeam, str]] = []
    handmade: dict[str, LiveTeam] = {}
    for team in sorted(teams, key=lambda t: t.team_id):
        name = team.claims
        if name is None:
            if team.alias:
                handmade.setdefault(team.alias, team)
            continue
        standing, why = team_standing(team, proofs)
        problem = why or _admin_problem(team) or (None if team.alias == name else f"it is called {team.alias!r}")
        if problem:
            unproven.append((team, f"team {team.alias or team.team_id} claims to be the roster's team {name}, but "
                                   f"{problem}"))
        else:
            claimants.setdefault(name, []).append(team)
            if standing is Standing.PROVEN:
                proven.add(team.team_id)
    for name, found in claimants.items():
        beaten = [t for t in found if t.team_id not in proven] if any(t.team_id in proven for t in found) else []
        unproven += [(t, f"team {t.alias or t.team_id} claims to be the roster's team {name}, but carries no valid "
                         "proof, and another team does") for t in beaten]
        claimants[name] = [t for t in found if t not in beaten]
    ours = {name: found[0] for name, found in claimants.items() if len(found) == 1}
    for name, found in sorted(claimants.items()):
        if len(found) > 1:
            unproven += [(team, f"{len(found)} teams ({', '.join(t.team_id for t in found)}) claim to be the roster's "
                                f"team {name}; none is trusted until the others are deleted") for team in found]
    return TeamsSeen(ours, unproven, handmade, frozenset(n for n, found in claimants.items() if len(found) > 1))


# ---------------------------------------------------------------- changes


@dataclass(frozen=True)
class TeamChange(Change):
    subject = "team"


@dataclass(frozen=True)
class CreateTeam(TeamChange):
    kind, symbol = "create-team", "+"
    models: tuple[str, ...] = ()
    settings: tuple[tuple[str, Any], ...] = ()

    def _data(self) -> dict[str, Any]:
        return {"after": {"models": list(self.models), **dict(self.settings)}}

    def details(self) -> list[str]:
        settings = ", ".join(f"{k} {value_text(v, k)}" for k, v in self.settings if v is not None)
        return [f"models {value_text(self.models) if self.models else 'all the proxy serves'}",
                *([settings] if settings else [])]


@dataclass(frozen=True)
class UpdateTeam(TeamChange):
    kind, symbol = "update-team", "~"
    team_id: str = ""
    fields: tuple[tuple[str, Any, Any], ...] = ()
    metadata: tuple[tuple[str, Any], ...] = ()  # the team's own, kept when its metadata is written

    def _data(self) -> dict[str, Any]:
        return {"team_id": self.team_id, **before_after(self.fields)}

    def details(self) -> list[str]:
        return field_lines(self.fields)


@dataclass(frozen=True)
class AdoptTeam(UpdateTeam):
    """Take over a team made by hand that carries a roster team's name: it gains the marker and the settings."""

    kind = "adopt-team"
    takes_over = True

    @property
    def risk(self) -> str | None:
        return f"takes over team {self.name}, made by hand: its keys stay, its settings become the roster's"


@dataclass(frozen=True)
class DeleteTeam(TeamChange):
    kind, symbol = "delete-team", "-"
    team_id: str = ""

    def _data(self) -> dict[str, Any]:
        return {"team_id": self.team_id}

    def details(self) -> list[str]:
        return [f"team {self.team_id}"]

    @property
    def risk(self) -> str | None:
        return f"deletes team {self.name} (LiteLLM would delete any key still bound to it: apply checks first)"


@dataclass(frozen=True)
class Join(Change):
    """A developer becomes a member of a team (and gets its member budget)."""

    kind, symbol = "join-team", "+"
    team: str = ""
    budget: float | None = None

    def _data(self) -> dict[str, Any]:
        return {"team": self.team, "member_budget": self.budget}

    def details(self) -> list[str]:
        return [f"team {self.team}" + (f", member budget {value_text(self.budget, 'max_budget')}" if self.budget
                                       else "")]


@dataclass(frozen=True)
class MemberBudget(Change):
    kind, symbol = "member-budget", "~"
    team: str = ""
    before: float | None = None
    after: float | None = None

    def _data(self) -> dict[str, Any]:
        return {"team": self.team, **before_after((("member_budget", self.before, self.after),))}

    def details(self) -> list[str]:
        return [f"team {self.team}: {value_text(self.before, 'max_budget')} -> {value_text(self.after, 'max_budget')}"]


@dataclass(frozen=True)
class Leave(Change):
    """After every key change: LiteLLM may delete a member's keys in the team with the membership (docs/litellm.md
    §10), so a member leaves only once no key of theirs is bound there (the diff waits; apply checks again)."""

    kind, symbol = "leave-team", "-"
    team: str = ""
    team_id: str = ""

    def _data(self) -> dict[str, Any]:
        return {"team": self.team}

    def details(self) -> list[str]:
        return [f"team {self.team}"]


@dataclass(frozen=True)
class TeamConflict(Conflict):
    subject = "team"
    team: LiveTeam = None  # type: ignore[assignment]

    def _data(self) -> dict[str, Any]:
        return {"team_id": self.team.team_id, "alias": self.team.alias, "admins": list(self.team.admins)}

    def details(self) -> list[str]:
        return [f"team {self.team.team_id} ({self.team.alias}); admins {value_text(self.team.admins)}"]


# ---------------------------------------------------------------- diff


def team_fields(roster: Roster, want: Team, team: LiveTeam,
                catalog: ModelCatalog | None = None) -> list[tuple[str, Any, Any]]:
    fields = []
    models = list(desired_models(roster, want, catalog))
    if sorted(team.models) != models:
        fields.append(("models", sorted(team.models), models))
    for name in TEAM_FIELDS:
        before, after = getattr(team, name), getattr(want, name)
        if not same_value(before, after):
            fields.append((name, before, after))
    if team.member_permissions:  # members who may manage keys could manage each other's: the tool grants none
        fields.append(("team_member_permissions", list(team.member_permissions), []))
    return fields


def diff_teams(roster: Roster, seen: TeamsSeen, desired: dict[str, Desired], proofs: Proofs = NO_PROOFS,
               catalog: ModelCatalog | None = None) -> tuple[list[Change], list[str], list[str]]:
    """Team changes, warnings, and what LiteLLM would refuse (a key with a model outside its team's): apply stops
    on those before any change, so the plan shows them. Keys are bound to teams by the key diff (Desired.team)."""
    changes: list[Change] = []
    warnings: list[str] = []
    members: dict[str, list[str]] = {t.name: [] for t in roster.teams}
    for want in desired.values():
        if want.team is not None:
            members[want.team].append(want.name)
    for want in roster.teams:
        if want.name in seen.contested:  # the claimants' conflicts say why; its members wait
            continue
        live = seen.ours.get(want.name)
        hand = seen.handmade.get(want.name) if live is None else None
        if hand is not None:
            problem = _admin_problem(hand)
            if problem or not roster.keys.adopt_unmanaged or not proofs.enabled:
                why = (f"{problem}, so it cannot be taken over" if problem else
                       "set keys.adopt_unmanaged: true to take it over in place, or rename the roster's team"
                       if not roster.keys.adopt_unmanaged else
                       "taking it over needs proofs (RECONCILE_PROOF_KEY), or rename the roster's team")
                waiting = ", ".join(sorted(members[want.name])) or "none"
                changes.append(TeamConflict(want.name, f"a team made by hand is called {want.name}: {why}; until "
                                                       f"then its members' changes wait (members: {waiting})",
                                            team=hand))
                continue
            changes.append(AdoptTeam(want.name, "taking over a team made by hand", team_id=hand.team_id,
                                     fields=tuple(team_fields(roster, want, hand)),
                                     metadata=tuple(sorted(hand.metadata.items()))))
            live = hand
        elif live is None:
            changes.append(CreateTeam(want.name, "new in the roster", models=desired_models(roster, want, catalog),
                                      settings=tuple(want.settings().items())))
        else:
            fields = team_fields(roster, want, live)
            if team_standing(live, proofs)[0] is Standing.FIRST_USE:
                fields.append(("proof", "missing", "set"))
            if fields:
                changes.append(UpdateTeam(want.name, f"{', '.join(f for f, _, _ in fields)} differ from the roster",
                                          team_id=live.team_id, fields=tuple(fields),
                                          metadata=tuple(sorted(live.metadata.items()))))
            if want.max_budget is not None and live.spend > want.max_budget:
                warnings.append(f"team {want.name}: its budget ${want.max_budget:g} is under what it has spent "
                                f"(${live.spend:.2f}): its keys are refused until the budget resets")
            strangers = [m for m in live.members if not m.startswith(USER_PREFIX)]
            if strangers:
                warnings.append(f"team {want.name}: members the roster does not list are left alone: "
                                f"{', '.join(strangers)}")
        present = set(live.members) if live else set()
        for name in sorted(members[want.name]):
            user = user_id_for(name)
            if user not in present:
                changes.append(Join(name, f"member of team {want.name} in the roster", team=want.name,
                                    budget=want.member_budget))
            elif want.member_budget is not None and not same_value(live.member_budgets.get(user), want.member_budget):
                changes.append(MemberBudget(name, f"member budget in team {want.name} differs from the roster",
                                            team=want.name, before=live.member_budgets.get(user),
                                            after=want.member_budget))
        listed = {user_id_for(n) for n in members[want.name]}
        for user in sorted(present - listed):
            if user.startswith(USER_PREFIX):
                changes.append(Leave(user[len(USER_PREFIX):], f"no longer in team {want.name} in the roster",
                                     team=want.name, team_id=live.team_id))
    wanted = {t.name for t in roster.teams}
    for name, live in sorted(seen.ours.items()):
        if name not in wanted:
            changes.append(DeleteTeam(name, "no longer in the roster", team_id=live.team_id))
    for team, problem in seen.unproven:
        changes.append(TeamConflict(team.claims or team.team_id, f"{problem}; it is never changed, and no key is "
                                                                  "bound to it", team=team))
    refusals = []
    for want in desired.values():
        team = roster.team(want.team)
        allowed = set(desired_models(roster, team, catalog)) if team is not None and team.models else None
        outside = sorted(m for m in want.models if allowed is not None and m not in allowed)
        if outside:
            refusals.append(f"{want.name}: {', '.join(outside)} not among team {want.team}'s models: LiteLLM "
                            "refuses them for this key (HTTP 403); add them to the team, or remove them")
    return changes, warnings, refusals
