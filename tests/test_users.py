"""The users diff, pure: which roster users are the tool's, what drifts, which keys are revoked, what the brakes
count (docs/security.md, "LiteLLM identities")."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from helpers import recipient_of

from reconciler.core.kinds.users import ROLE, LiveUser, user_metadata
from reconciler.core.live import LLM_ROUTES, LiveKey, managed_metadata
from reconciler.core.options import Options
from reconciler.core.plan import diff
from reconciler.core.records import Records
from reconciler.core.roster import parse_roster
from reconciler.core.safety import Brakes

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
A = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def roster(*names: str):
    devs = "".join(f"  - name: {n}\n    recipient: {recipient_of(n)}\n" for n in names) or "  []\n"
    text = f"version: 1\nkeys:\n  alias: 'cc-{{name}}'\ndefaults:\n  models: [m1]\ndevelopers:\n{devs}"
    return parse_roster(text, "roster.yaml")


def user(name: str, *, ours: bool = True, role: str = ROLE, models=("m1",), budget=None, teams=(), **extra):
    return LiveUser(user_id=f"roster:{name}", role=role, models=tuple(models), max_budget=budget, teams=tuple(teams),
                    metadata=user_metadata(name) if ours else {}, **extra)


def key(name: str, token: str, *, managed: bool = True, created_by: str = "default_user_id", alias=None):
    return LiveKey(token=token * 64, alias=alias or f"cc-{name}" if managed else alias, models=("m1",),
                   user_id=f"roster:{name}", metadata=managed_metadata(name) if managed else {},
                   created_at=NOW - timedelta(days=1), created_by=created_by, allowed_routes=LLM_ROUTES)


def plan(r, keys, users, **options):
    """A key file for each managed key of a roster developer, as apply would have written it."""
    from pathlib import Path

    from reconciler.core.kinds.keys import desired_state, file_document_fields
    from reconciler.core.records import KeyFile

    desired = desired_state(r, None, NOW)
    files = {k.roster_name: KeyFile(k.roster_name, Path(f"keys/{k.roster_name}.sops.yaml"), k.token,
                                    frozenset(desired[k.roster_name].recipients),
                                    file_document_fields(desired[k.roster_name], None))
             for k in keys if k.managed and k.roster_name in desired}
    return diff(r, keys, Records(files), NOW, users=users, options=Options(**options))


def kinds(p):
    return [(c.kind, c.name) for c in p.changes]


def test_a_new_developer_gets_a_user_before_the_key():
    p = plan(roster("jane"), [], [])
    assert kinds(p) == [("create-user", "jane"), ("create", "jane")]
    assert p.changes[0].data["after"] == {"user_role": ROLE, "models": ["m1"], "max_budget": None}


def test_a_user_changed_by_hand_is_an_update_with_before_and_after():
    live = user("jane", role="internal_user", models=("m1", "m2"), budget=0.0, teams=("elsewhere",))
    p = plan(roster("jane"), [], [live])
    update = next(c for c in p.changes if c.kind == "update-user")
    assert update.data["before"] == {"user_role": "internal_user", "models": ["m1", "m2"], "max_budget": 0.0,
                                     "other_teams": ["elsewhere"]}
    assert update.data["after"] == {"user_role": ROLE, "models": ["m1"], "max_budget": None, "other_teams": []}
    assert update.risk is None


def test_a_user_someone_else_made_blocks_the_developer_until_adopted():
    sso = user("jane", ours=False, role="internal_user", sso_user_id="okta|42", email="jane@example.com")
    theirs = key("jane", "b", managed=False, created_by="okta|42", alias="laptop")
    p = plan(roster("jane"), [theirs], [sso])
    assert kinds(p) == [("conflict", "jane")]  # no user change, no key, and their key is not the roster's to revoke
    assert "SSO id okta|42" in p.changes[0].reason and p.changes[0].data["keys"][0].startswith("laptop bbbbbbbb")
    adopted = plan(roster("jane"), [theirs], [sso], adopt=frozenset({"jane"}))
    assert sorted(kinds(adopted)) == [("create", "jane"), ("revoke", "jane"), ("update-user", "jane")]
    assert next(c for c in adopted.changes if c.kind == "update-user").risk  # a takeover needs --force


def test_a_user_litellm_made_for_a_team_membership_is_taken_over_unbraked():
    from reconciler.core.kinds.teams import LiveTeam

    team = LiveTeam(team_id="t1", alias="platform", models=(), metadata={"managed_by": "litellm-roster",
                                                                          "roster_team": "platform"},
                    admins=("default_user_id",), members=("roster:jane",))
    text = f"version: 1\nkeys:\n  alias: 'cc-{{name}}'\nteams:\n  - name: platform\ndefaults:\n  models: [m1]\n" \
           f"developers:\n  - name: jane\n    recipient: {A}\n    team: platform\n"
    auto = user("jane", ours=False, role="internal_user", models=(), teams=("t1",))
    p = diff(parse_roster(text, "roster.yaml"), [], Records({}), NOW, users=[auto], teams=[team])
    update = next(c for c in p.changes if c.kind == "update-user")
    assert "made by LiteLLM for a team membership" in update.reason and update.risk is None
    assert not [c for c in p.changes if c.kind == "conflict"]


def test_keys_under_roster_users_that_the_tool_did_not_issue_are_revoked_first():
    own, side = key("jane", "a"), key("jane", "b", managed=False, created_by="roster:jane", alias="side")
    p = plan(roster("jane"), [own, side], [user("jane")])
    assert kinds(p) == [("revoke", "jane")]
    assert p.changes[0].data["alias"] == "side" and p.changes[0].data["created_by"] == "roster:jane"
    assert p.revoked == 1 and p.unmanaged_count == 0
    Brakes().check(p)  # a revocation is not braked


def test_a_leaver_loses_keys_then_user_and_no_delete_keeps_both():
    own, side = key("jane", "a"), key("jane", "b", managed=False, created_by="roster:jane", alias="side")
    p = plan(roster(), [own, side], [user("jane")])
    assert sorted(kinds(p)) == [("delete", "jane"), ("delete-user", "jane"), ("revoke", "jane")]
    order = {c.kind: c.order for c in p.changes}
    assert order["revoke"] < order["delete"] < order["delete-user"]
    assert kinds(plan(roster(), [own, side], [user("jane")], no_delete=True)) == []


def test_keys_gain_llm_routes_and_the_migration_is_not_braked():
    keys = [LiveKey(token=c * 64, alias=f"cc-{n}", models=("m1",), user_id=f"roster:{n}", metadata=managed_metadata(n),
                    created_at=NOW - timedelta(days=1), created_by="default_user_id")
            for c, n in (("a", "jane"), ("b", "john"))]
    p = plan(roster("jane", "john"), keys, [user("jane"), user("john")])
    assert [(c.kind, c.data["after"]) for c in p.changes] == [("update", {"allowed_routes": list(LLM_ROUTES)})] * 2
    Brakes().check(p)  # 2 of 2 keys updated, and still not "all of them": nothing of anyone's access changed
