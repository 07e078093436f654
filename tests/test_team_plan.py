"""The team diff, pure: which teams are the tool's, and what changes make the proxy's teams match the roster's.
End to end against LiteLLM's real proxy: tests/conformance/test_teams.py."""

from __future__ import annotations

from datetime import datetime, timezone

from reconciler.core.kinds.teams import LiveTeam, classify_teams
from reconciler.core.plan import diff
from reconciler.core.proofs import Prover
from reconciler.core.records import Records
from reconciler.core.roster import parse_roster

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
R = "age1m9pfl7efvru89xwn6rdl5xpkus6q6g2vrhwstqgyqlz4laj6cfwqepjg7h"
OURS = {"managed_by": "litellm-roster"}
PROVER = Prover(b"unit-test-proof-key-0123456789abcdef")


def roster(teams: str, developers: str, adopt: bool = False):
    return parse_roster(f"""version: 1
keys:
  alias: cc-{{name}}
  adopt_unmanaged: {str(adopt).lower()}
teams:
{teams}
defaults:
  models: [m1]
developers:
{developers}
""")


def team(team_id: str, name: str | None, *, admins=("default_user_id",), members=(), org=None, **fields) -> LiveTeam:
    roles = [{"user_id": a, "role": "admin"} for a in admins] + [{"user_id": m, "role": "user"} for m in members]
    metadata = {**OURS, "roster_team": name} if name else {}
    return LiveTeam.from_api({"team_id": team_id, "team_alias": fields.pop("alias", name), "metadata": metadata,
                              "members_with_roles": roles, "organization_id": org, "models": ["m1"], **fields})


def kinds(plan) -> list[tuple[str, str]]:
    return [(c.kind, c.name) for c in plan.changes]


def test_a_team_is_ours_only_if_nobody_else_can_administer_it():
    seen = classify_teams([team("t1", "a"), team("t2", "b", admins=("default_user_id", "mallory")),
                           team("t3", "c", org="org-1"), team("t5", None, alias="d"), team("t6", "e", alias="evil")])
    assert list(seen.ours) == ["a"] and seen.ours["a"].team_id == "t1"
    problems = [p for _, p in seen.unproven]
    assert "mallory can administer it" in problems[0] and "organization org-1" in problems[1]
    assert "claims to be the roster's team e, but it is called 'evil'" in problems[2]  # the alias must match
    assert list(seen.handmade) == ["d"]


def test_two_teams_claiming_one_roster_team_are_both_conflicts_and_its_members_wait():
    """No tie-break by id: a forgery whose id sorts first would win it (and have the roster's keys bound to it)."""
    r = roster("  - {name: a}", f"  - {{name: jane, recipient: {R}, team: a}}")
    plan = diff(r, [], Records(), NOW, teams=[team("t1", "a"), team("t0-forged", "a")])
    assert sorted(kinds(plan)) == [("conflict", "a"), ("conflict", "a")], kinds(plan)
    assert all("2 teams (t0-forged, t1) claim to be the roster's team a" in c.reason for c in plan.changes)
    assert plan.team_ids == ()  # nothing is bound to either, nothing new is made, jane's key waits


def test_new_teams_come_first_with_their_members_then_the_keys_bound_to_them():
    r = roster("  - {name: platform, max_budget: 10, member_budget: 2}",
               f"  - {{name: jane, recipient: {R}, team: platform}}")
    plan = diff(r, [], Records(), NOW, teams=[])
    assert kinds(plan) == [("create-team", "platform"), ("join-team", "jane"), ("create", "jane")]
    create = plan.changes[2]
    assert create.desired.team == "platform" and create.desired.team_id is None
    assert plan.changes[1].budget == 2
    assert "Teams: 1 to create, 0 to update, 0 to delete; 1 membership change(s)." in plan.summary


def test_a_member_moves_and_the_old_team_is_left_after_the_key_is_rebound():
    r = roster("  - {name: a}\n  - {name: b}", f"  - {{name: jane, recipient: {R}, team: b}}")
    teams = [team("ta", "a", members=("roster:jane",)), team("tb", "b")]
    plan = diff(r, [], Records(), NOW, teams=teams)
    order = kinds(plan)
    assert order.index(("join-team", "jane")) < order.index(("create", "jane")) < order.index(("leave-team", "jane"))
    assert dict(plan.team_ids) == {"a": "ta", "b": "tb"}


def test_settings_member_permissions_and_budgets_are_brought_back_to_the_roster():
    r = roster("  - {name: a, models: [m1], max_budget: 5, member_budget: 3}",
               f"  - {{name: jane, recipient: {R}, team: a}}")
    live = team("ta", "a", members=("roster:jane", "someone"), max_budget=50, spend=9.5,
                team_member_permissions=["/key/update"]).with_memberships(
        [{"user_id": "roster:jane", "litellm_budget_table": {"max_budget": 1}, "spend": 0.5}])
    plan = diff(r, [], Records(), NOW, teams=[live])
    update = next(c for c in plan.changes if c.kind == "update-team")
    assert dict((f, a) for f, _, a in update.fields) == {"max_budget": 5, "team_member_permissions": []}
    budget = next(c for c in plan.changes if c.kind == "member-budget")
    assert (budget.before, budget.after) == (1, 3)
    assert any("its budget $5 is under what it has spent ($9.50)" in w for w in plan.warnings)
    assert any("members the roster does not list are left alone: someone" in w for w in plan.warnings)
    assert not any(c.kind == "leave-team" for c in plan.changes)  # only roster users are removed


def test_a_team_removed_from_the_roster_is_deleted_last_and_is_high_risk():
    r = roster("  []", f"  - {{name: jane, recipient: {R}}}")
    plan = diff(r, [], Records(), NOW, teams=[team("ta", "gone")])
    assert kinds(plan)[-1] == ("delete-team", "gone")
    assert plan.high_risk and "deletes team gone" in plan.high_risk[0].risk


def test_a_forged_team_is_a_conflict_and_the_roster_team_is_made_beside_it():
    r = roster("  - {name: a}", f"  - {{name: jane, recipient: {R}, team: a}}")
    plan = diff(r, [], Records(), NOW, teams=[team("evil", "a", admins=("mallory",))])
    assert ("conflict", "a") in kinds(plan) and ("create-team", "a") in kinds(plan)
    assert plan.team_ids == ()  # no key is bound to the forgery


def test_a_hand_made_team_is_taken_over_only_when_asked_and_only_if_nobody_else_administers_it():
    hand = team("th", None, alias="a", members=("roster:jane",))
    asked = diff(roster("  - {name: a}", f"  - {{name: jane, recipient: {R}, team: a}}", adopt=True), [],
                 Records(), NOW, teams=[hand], prover=PROVER)
    assert ("adopt-team", "a") in kinds(asked) and dict(asked.team_ids) == {"a": "th"}
    off = diff(roster("  - {name: a}", f"  - {{name: jane, recipient: {R}, team: a}}", adopt=True), [],
               Records(), NOW, teams=[hand])  # proofs off: nothing is adopted, and no key is bound to it
    assert ("conflict", "a") in kinds(off) and dict(off.team_ids) == {}
    assert "taking it over needs proofs (RECONCILE_PROOF_KEY)" in off.changes[0].reason
    assert "takes over team a" in asked.high_risk[0].risk
    not_asked = diff(roster("  - {name: a}", f"  - {{name: jane, recipient: {R}, team: a}}"), [], Records(), NOW,
                     teams=[hand])
    assert ("conflict", "a") in kinds(not_asked) and ("create-team", "a") not in kinds(not_asked)
    held = team("th", None, alias="a", admins=("default_user_id", "bob"))
    refused = diff(roster("  - {name: a}", f"  - {{name: jane, recipient: {R}, team: a}}", adopt=True), [],
                   Records(), NOW, teams=[held], prover=PROVER)
    conflict = next(c for c in refused.changes if c.kind == "conflict")
    assert "bob can administer it, so it cannot be taken over" in conflict.reason
    assert ("create", "jane") not in kinds(refused)  # her key waits: it could not be bound to her team


def test_a_developer_model_outside_the_team_stops_apply_at_plan_time():
    """LiteLLM refuses a key a model its team lacks (HTTP 403): the plan says apply would stop, before any change."""
    from reconciler.core.safety import Brakes

    r = roster("  - {name: a, models: [m2]}", f"  - {{name: jane, recipient: {R}, team: a}}")
    plan = diff(r, [], Records(), NOW, teams=[])
    assert plan.refusals == ("jane: m1 not among team a's models: LiteLLM refuses them for this key (HTTP 403); add "
                             "them to the team, or remove them",)
    assert Brakes(0.3).problems(plan) == [f"LiteLLM would refuse {plan.refusals[0]}"]


def test_model_aliases_granted_to_a_developer_are_granted_to_their_team():
    """keys.grant_model_aliases also widens the team's models: before, its members' keys asked for aliases the team
    lacked, and apply half-failed with 403."""
    from reconciler.core.catalog import ModelCatalog

    catalog = ModelCatalog({"m1": "p/m1", "m1-short": "p/m1"})
    r = parse_roster(f"""version: 1
keys: {{alias: "cc-{{name}}", grant_model_aliases: true}}
teams: [{{name: a, models: [m1]}}]
developers: [{{name: jane, recipient: {R}, team: a, models: [m1]}}]
""")
    plan = diff(r, [], Records(), NOW, teams=[], catalog=catalog)
    create = next(c for c in plan.changes if c.kind == "create-team")
    assert create.models == ("m1", "m1-short") and plan.refusals == ()
