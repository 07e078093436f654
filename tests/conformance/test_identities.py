"""A delivered key can do only what the roster grants, on LiteLLM's real proxy on PostgreSQL (every version of the
matrix in CI): the tool owns each developer's LiteLLM user, every key under it that the tool did not issue is
revoked, and developer keys call LLM routes only (docs/security.md, "LiteLLM identities"; docs/litellm.md §11)."""

from __future__ import annotations

import json

import httpx

OPUS, SONNET = "claude-3-opus-20240229", "claude-sonnet-4-5-20250929"
TEAMS = [{"name": "platform", "models": ["claude-code"], "max_budget": 100}]
DEVELOPERS = [{"name": "jane", "team": "platform"}, {"name": "john", "models": [SONNET]}]


def _as(litellm, secret: str, method: str, route: str, body: dict | None = None) -> int:
    return httpx.request(method, f"{litellm.url}{route}", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {secret}"}).status_code


def _converged(ws) -> None:
    replan = ws.run("plan", "--detailed-exitcode")
    assert replan.rc == 0 and "No changes." in replan.stdout, replan.stdout + replan.stderr


def test_a_developer_key_mints_nothing_and_calls_exactly_its_models(real_workspace, litellm):
    """The attack: a roster edit that puts its author in a team made LiteLLM create roster:<name> as an
    internal_user, whose key then minted keys for any model. Now the user is the tool's, and the key LLM-only."""
    ws = real_workspace
    ws.write_roster(DEVELOPERS, teams=TEAMS)
    plan = ws.run("plan")
    assert plan.stdout.index("create-user") < plan.stdout.index("join-team"), plan.stdout  # the user comes first
    applied = ws.run("apply")
    assert applied.rc == 0, applied.stdout + applied.stderr
    for name, models in (("jane", [OPUS, SONNET]), ("john", [SONNET])):
        secret = ws.decrypt(name)
        user = litellm.user(f"roster:{name}")
        assert user["user_role"] == "internal_user_viewer" and sorted(user["models"]) == models, user
        assert user["max_budget"] is None and user["metadata"]["managed_by"] == "litellm-roster"
        for method, route, body in (("POST", "/key/generate", {"key_alias": "side", "models": [OPUS, SONNET]}),
                                    ("GET", "/key/list", None),
                                    ("POST", "/key/update", {"key": secret, "models": [OPUS]}),
                                    ("POST", "/user/update", {"user_id": f"roster:{name}", "user_role": "proxy_admin"}),
                                    ("POST", "/team/member_add", {"team_id": "x", "member": {"user_id": "eve"}}),
                                    ("POST", "/team/new", {"team_alias": "mine"})):
            status = _as(litellm, secret, method, route, body)  # 401/403 (1.77.7 errs with 500 on /key/list)
            assert status in (401, 403, 500), f"{name}: {method} {route} answered {status}"
        assert litellm.models_for(secret) == models  # the /v1/models proof keeps working
        for model in (OPUS, SONNET, "claude-sonnet-4.5"):  # a real model call: exactly the roster's models
            status = litellm.chat(secret, model)
            assert status == 200 if model in models else status in (400, 401, 403), (name, model, status)
    assert [k["key_alias"] for k in litellm.keys() if k.get("key_alias") == "side"] == []
    _converged(ws)


def test_keys_the_tool_did_not_issue_are_revoked_and_a_leaver_loses_everything(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(DEVELOPERS, teams=TEAMS)
    assert ws.run("apply").rc == 0
    side = "sk-side-key-0123456789abcdef"
    made = litellm.http.post("/key/generate", json={"key": side, "user_id": "roster:jane", "key_alias": "side",
                                                   "models": [OPUS, SONNET]})
    made.raise_for_status()
    ws.known_secrets.append(side)
    plan = json.loads(ws.run("plan", "--format", "json", env=ws.env(RECONCILE_COMMENT_DETAILS="1")).stdout)
    revoked = [c for c in plan["changes"] if c["kind"] == "revoke"]
    assert [(c["developer"], c["alias"], c["created_by"], c["models"]) for c in revoked] == \
        [("jane", "side", "default_user_id", sorted([OPUS, SONNET]))]
    assert revoked[0]["token_prefix"] == made.json()["token"][:12]
    applied = ws.run("apply")
    assert applied.rc == 0 and "revoke" in applied.stdout, applied.stdout + applied.stderr
    assert litellm.chat(side, SONNET) == 401

    jane = ws.decrypt("jane")
    ws.write_roster(DEVELOPERS[1:], teams=TEAMS)
    plan = ws.run("plan")
    assert "delete-user" in plan.stdout and "leave-team" in plan.stdout, plan.stdout
    applied = ws.run("apply")
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert litellm.chat(jane, SONNET) == 401
    assert litellm.user("roster:jane") is None  # removed, not left behind with a role
    assert not [k for k in litellm.keys() if k.get("user_id") == "roster:jane"]
    _converged(ws)


def test_a_roster_user_the_tool_did_not_make_is_a_conflict_until_adopted(real_workspace, litellm):
    ws = real_workspace
    litellm.http.post("/user/new", json={"user_id": "roster:john", "user_role": "internal_user",
                                         "user_email": "mallory@example.com", "auto_create_key": False}
                      ).raise_for_status()
    early = "sk-early-key-0123456789abcdef"
    litellm.http.post("/key/generate", json={"key": early, "user_id": "roster:john", "key_alias": "early"}
                      ).raise_for_status()
    ws.known_secrets.append(early)
    ws.write_roster(DEVELOPERS[1:])
    plan = ws.run("plan")
    assert "the LiteLLM user roster:john exists but the tool did not make it (role internal_user" in plan.stdout
    assert "its key early" in plan.stdout and "made by default_user_id" in plan.stdout, plan.stdout
    applied = ws.run("apply")
    assert applied.rc == 1 and "conflict(s) left unresolved: john" in applied.stdout, applied.stdout
    assert not litellm.managed()  # no key issued to a user someone else holds
    assert litellm.chat(early, SONNET) == 200  # and not theirs to revoke until an operator decides

    refused = ws.run("apply", "--adopt", "john")
    assert refused.rc == 4 and "takes over the LiteLLM user roster:john" in refused.stderr, refused.stderr
    adopted = ws.run("apply", "--adopt", "john", "--force")
    assert adopted.rc == 0, adopted.stdout + adopted.stderr
    assert litellm.user("roster:john")["user_role"] == "internal_user_viewer"
    assert litellm.chat(early, SONNET) == 401  # now the user is the tool's: its stray key is revoked
    assert litellm.chat(ws.decrypt("john"), SONNET) == 200
    _converged(ws)


def test_a_roster_user_changed_by_hand_is_put_back(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(DEVELOPERS, teams=TEAMS)
    assert ws.run("apply").rc == 0
    litellm.http.post("/team/new", json={"team_id": "elsewhere", "team_alias": "elsewhere"}).raise_for_status()
    added = litellm.http.post("/team/member_add", json={"team_id": "elsewhere",
                                                        "member": {"user_id": "roster:john", "role": "user"}})
    assert added.status_code == 200, added.text
    litellm.http.post("/user/update", json={"user_id": "roster:john", "user_role": "internal_user",
                                            "models": [OPUS, SONNET], "max_budget": 0}).raise_for_status()
    plan = ws.run("plan")
    assert "update-user" in plan.stdout, plan.stdout
    for line in ("user_role: internal_user -> internal_user_viewer", f"models: [{OPUS}, {SONNET}] -> [{SONNET}]",
                 "max_budget: 0.0 -> none", "other_teams: [elsewhere] -> []"):
        assert line in plan.stdout, plan.stdout
    applied = ws.run("apply")
    assert applied.rc == 0, applied.stdout + applied.stderr
    john = litellm.user("roster:john")
    assert (john["user_role"], john["models"], john["teams"]) == ("internal_user_viewer", [SONNET], [])
    _converged(ws)


def test_an_installation_of_the_previous_version_migrates_without_new_secrets(real_workspace, litellm):
    """What the previous version left: no user for a developer without a team, LiteLLM's own internal_user for a
    team member, and keys that may call every route. The next apply corrects all of it in place, under the brakes."""
    ws = real_workspace
    ws.write_roster([*DEVELOPERS, {"name": "priya", "team": "platform"}], teams=TEAMS)
    assert ws.run("apply").rc == 0
    before = {n: ws.decrypt(n) for n in ("jane", "john", "priya")}
    db = litellm.database
    db.psql(db.DATABASE, "-c", """DELETE FROM "LiteLLM_UserTable" WHERE user_id = 'roster:john'""")
    db.psql(db.DATABASE, "-c", """UPDATE "LiteLLM_UserTable" SET user_role = 'internal_user', models = '{}',
                                  metadata = '{}' WHERE user_id IN ('roster:jane', 'roster:priya')""")
    db.psql(db.DATABASE, "-c", """UPDATE "LiteLLM_VerificationToken" SET allowed_routes = '{}'""")
    plan = ws.run("plan")
    assert "made by LiteLLM for a team membership: taken over" in plan.stdout, plan.stdout
    assert "Users: 1 to create, 2 to update, 0 to delete." in plan.stdout
    applied = ws.run("apply")  # no --force: the migration is not a change of anyone's access
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert {n: ws.decrypt(n) for n in before} == before
    assert all(k["allowed_routes"] == ["llm_api_routes"] for k in litellm.managed())
    assert {litellm.user(f"roster:{n}")["user_role"] for n in before} == {"internal_user_viewer"}
    _converged(ws)
