"""Teams end to end on LiteLLM's real proxy on PostgreSQL: two teams and five developers plan, apply and re-plan
empty, and survive a member moved between teams, a team budget lowered under its spend, a team deleted by hand
between plan and apply, and a team that claims to be the roster's but is administered by someone else."""

from __future__ import annotations

import json

import httpx

OPUS, SONNET = "claude-3-opus-20240229", "claude-sonnet-4-5-20250929"
TEAMS = [{"name": "platform", "models": ["claude-code"], "max_budget": 100, "budget_duration": "30d",
          "rpm_limit": 60, "member_budget": 20},
         {"name": "data", "models": [SONNET], "max_budget": 50}]
DEVELOPERS = [{"name": "jane", "team": "platform"}, {"name": "john", "team": "platform"},
              {"name": "priya", "team": "platform"}, {"name": "ada", "team": "data", "models": [SONNET]},
              {"name": "omar", "team": "data", "models": [SONNET]}]


def _teams(litellm) -> dict[str, dict]:
    """The roster's teams as LiteLLM holds them, by alias, with their members and their keys' aliases."""
    out = {}
    for team in litellm.http.get("/team/list").json():
        if (team.get("metadata") or {}).get("managed_by") != "litellm-roster":
            continue
        info = litellm.http.get("/team/info", params={"team_id": team["team_id"]}).json()
        budgets = {m["user_id"]: (m.get("litellm_budget_table") or {}).get("max_budget")
                   for m in info["team_memberships"]}
        out[team["team_alias"]] = {
            "id": team["team_id"], "max_budget": team["max_budget"], "models": sorted(team["models"]),
            "members": sorted(m["user_id"] for m in team["members_with_roles"] if m["role"] == "user"),
            "budgets": {u: b for u, b in budgets.items() if u.startswith("roster:")},
            "keys": sorted(k["key_alias"] for k in info["keys"])}
    return out


def _converged(ws) -> None:
    replan = ws.run("plan", "--detailed-exitcode")
    assert replan.rc == 0 and "No changes." in replan.stdout, replan.stdout + replan.stderr


def test_two_teams_five_developers_apply_and_replan_empty(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(DEVELOPERS, teams=TEAMS)
    plan = ws.run("plan")
    assert "Teams: 2 to create, 0 to update, 0 to delete; 5 membership change(s)." in plan.stdout, plan.stdout
    # Teams come before the keys that are bound to them.
    assert plan.stdout.index("create-team") < plan.stdout.index("join-team") < plan.stdout.index(" create:")
    applied = ws.run("apply")
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert "Apply complete: 17 done, 0 failed." in applied.stdout  # 5 users, 2 teams, 5 joins, 5 keys
    teams = _teams(litellm)
    assert teams["platform"]["members"] == ["roster:jane", "roster:john", "roster:priya"]
    assert teams["platform"]["budgets"] == dict.fromkeys(teams["platform"]["members"], 20.0)
    assert teams["platform"]["keys"] == ["claude-code-jane", "claude-code-john", "claude-code-priya"]
    assert teams["platform"]["models"] == [OPUS, SONNET] and teams["data"]["models"] == [SONNET]
    assert teams["data"]["keys"] == ["claude-code-ada", "claude-code-omar"]
    assert litellm.models_for(ws.decrypt("ada")) == [SONNET]  # LiteLLM's auth, through the team
    _converged(ws)
    status = json.loads(ws.run("status", "--format", "json").stdout)
    assert {k["developer"]: k["team"] for k in status["keys"]} == {d["name"]: d["team"] for d in DEVELOPERS}
    platform = next(t for t in status["teams"] if t["team"] == "platform")
    assert (platform["state"], platform["spend"], platform["max_budget"]) == ("active", 0.0, 100.0)
    assert platform["members"] == [{"developer": n, "spend": 0.0, "budget": 20.0} for n in ("jane", "john", "priya")]

    # A member moves: joins the new team, the key is rebound, then leaves the old one. The key keeps its secret.
    jane = ws.decrypt("jane")
    moved = [{**d, "team": "data", "models": [SONNET]} if d["name"] == "jane" else d for d in DEVELOPERS]
    ws.write_roster(moved, teams=TEAMS)
    applied = ws.run("apply")
    assert applied.rc == 0, applied.stdout + applied.stderr
    teams = _teams(litellm)
    assert "roster:jane" in teams["data"]["members"] and "roster:jane" not in teams["platform"]["members"]
    assert "claude-code-jane" in teams["data"]["keys"] and "claude-code-jane" not in teams["platform"]["keys"]
    assert ws.decrypt("jane") == jane and litellm.models_for(jane) == [SONNET]
    _converged(ws)


def test_team_budget_lowered_under_its_spend(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(DEVELOPERS[3:], teams=TEAMS[1:])
    assert ws.run("apply").rc == 0
    team = _teams(litellm)["data"]
    litellm.database.psql(litellm.database.DATABASE, "-c",
                          f"""UPDATE "LiteLLM_TeamTable" SET spend = 30 WHERE team_id = '{team["id"]}'""")
    ws.write_roster(DEVELOPERS[3:], teams=[{**TEAMS[1], "max_budget": 10}])
    plan = ws.run("plan")
    assert "max_budget: 50.0 -> 10" in plan.stdout, plan.stdout
    assert "team data: its budget $10 is under what it has spent ($30.00)" in plan.stdout
    assert ws.run("apply").rc == 0
    assert _teams(litellm)["data"]["max_budget"] == 10
    _converged(ws)
    status = ws.run("status").stdout
    assert "data  active  30 / 10.0  " in status, status  # the team's spend against its budget


def test_team_deleted_by_hand_between_plan_and_apply(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(DEVELOPERS[3:], teams=TEAMS[1:])
    assert ws.run("apply").rc == 0
    ws.write_roster(DEVELOPERS[3:], teams=[{**TEAMS[1], "rpm_limit": 30}])
    assert ws.run("plan", "--out", "reviewed.json").rc == 0
    team = _teams(litellm)["data"]
    litellm.http.post("/team/delete", json={"team_ids": [team["id"]]}).raise_for_status()  # and its keys with it

    stale = ws.run("apply", "--plan", "reviewed.json")
    assert stale.rc == 3 and "plan is stale: the live keys or teams changed" in stale.stderr, stale.stderr
    assert "data" not in _teams(litellm)  # nothing was done
    recovered = ws.run("apply")  # a fresh plan: the team again, and fresh keys for its members
    assert recovered.rc == 0, recovered.stdout + recovered.stderr
    assert _teams(litellm)["data"]["keys"] == ["claude-code-ada", "claude-code-omar"]
    _converged(ws)


def test_team_removed_from_the_roster_is_deleted_only_with_force_and_only_empty(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(DEVELOPERS[3:], teams=TEAMS[1:])
    assert ws.run("apply").rc == 0
    ws.write_roster([{k: v for k, v in d.items() if k != "team"} for d in DEVELOPERS[3:]], teams=[])
    refused = ws.run("apply")
    assert refused.rc == 4 and "data: deletes team data" in refused.stderr, refused.stderr  # the brakes
    assert "data" in _teams(litellm)
    forced = ws.run("apply", "--force")
    assert forced.rc == 0, forced.stdout + forced.stderr
    assert "data" not in _teams(litellm)
    keys = {k["key_alias"]: k for k in litellm.managed()}
    assert sorted(keys) == ["claude-code-ada", "claude-code-omar"]  # unbound first, so not deleted with the team
    assert all(k["team_id"] is None for k in keys.values())
    _converged(ws)


def test_a_team_administered_by_someone_else_is_never_ours(real_workspace, litellm):
    ws = real_workspace
    litellm.http.post("/user/new", json={"user_id": "mallory"}).raise_for_status()
    forged = litellm.http.post("/team/new", json={
        "team_alias": "data", "metadata": {"managed_by": "litellm-roster", "roster_team": "data"},
        "members_with_roles": [{"user_id": "mallory", "role": "admin"}]}).json()["team_id"]
    ws.write_roster(DEVELOPERS[3:], teams=TEAMS[1:])
    data = json.loads(ws.run("plan", "--format", "json").stdout)
    conflict = [c for c in data["changes"] if c["kind"] == "conflict"]
    assert len(conflict) == 1 and "mallory can administer it" in conflict[0]["reason"]
    assert [c["kind"] for c in data["changes"]].count("create-team") == 1  # the roster's own, beside it
    applied = ws.run("apply")
    assert applied.rc == 1 and "1 conflict(s) left unresolved: data" in applied.stdout
    info = litellm.http.get("/team/info", params={"team_id": forged}).json()
    assert info["keys"] == [] and info["team_info"]["max_budget"] is None  # never changed, no key bound to it
    assert _teams(litellm)["data"]["id"] != forged
    assert all(k["team_id"] == _teams(litellm)["data"]["id"] for k in litellm.managed())


def test_import_brings_a_hand_made_team_in_and_apply_takes_it_over_in_place(real_workspace, litellm, people):
    import yaml

    ws = real_workspace
    team = litellm.http.post("/team/new", json={"team_alias": "research", "models": [SONNET],
                                                "max_budget": 40}).json()["team_id"]
    made = litellm.http.post("/key/generate", json={"key_alias": "claude-code-ada", "models": [SONNET],
                                                    "team_id": team}).json()
    ws.known_secrets.append(made["key"])
    imported = ws.run("import", "--out", "roster.yaml", "--overwrite")
    assert imported.rc == 0, imported.stderr
    doc = yaml.safe_load(ws.roster.read_text())
    assert doc["teams"] == [{"name": "research", "models": [SONNET], "max_budget": 40.0}]
    assert doc["developers"][0]["team"] == "research"
    doc["developers"][0]["recipient"] = people["ada"].recipient
    ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))

    plan = ws.run("plan")
    assert "adopt-team: taking over a team made by hand" in plan.stdout, plan.stdout
    assert "create-team" not in plan.stdout  # the team is taken over, not duplicated
    assert ws.run("apply").rc == 4  # a takeover is high-risk: the brakes want --force
    applied = ws.run("apply", "--force")
    assert applied.rc == 0, applied.stdout + applied.stderr
    teams = _teams(litellm)
    assert teams["research"]["id"] == team and teams["research"]["keys"] == ["claude-code-ada"]
    assert teams["research"]["members"] == ["roster:ada"]
    assert litellm.models_for(made["key"]) == [SONNET]  # the same key, still working
    _converged(ws)


def test_a_member_budget_change_applies_and_every_change_is_audited(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(DEVELOPERS[:3], teams=TEAMS[:1])
    assert ws.run("apply").rc == 0
    ws.write_roster(DEVELOPERS[:3], teams=[{**TEAMS[0], "member_budget": 35}])
    applied = ws.run("apply")
    assert applied.rc == 0 and "Apply complete: 3 done, 0 failed." in applied.stdout, applied.stdout + applied.stderr
    assert set(_teams(litellm)["platform"]["budgets"].values()) == {35.0}
    lines = [json.loads(line) for line in (ws.root / "audit.jsonl").read_text().splitlines()]
    budgets = [line for line in lines if line["change"] == "member-budget"]
    assert sorted(line["developer"] for line in budgets) == ["jane", "john", "priya"]
    assert all(line["result"] == "ok" for line in budgets)
    _converged(ws)


def test_no_member_leaves_a_team_while_a_key_of_theirs_is_bound_there(real_workspace, litellm):
    """A move into a team that is in conflict: the key cannot move, so the old membership stays (LiteLLM 1.80
    deletes a member's keys in the team with the membership; docs/litellm.md §10), and the key keeps working."""
    ws = real_workspace
    ws.write_roster(DEVELOPERS[:3], teams=TEAMS[:1])
    assert ws.run("apply").rc == 0
    jane = ws.decrypt("jane")
    litellm.http.post("/team/new", json={"team_alias": "research", "models": [SONNET]}).raise_for_status()
    moved = [{**DEVELOPERS[0], "team": "research"}, *DEVELOPERS[1:3]]
    ws.write_roster(moved, teams=[*TEAMS[:1], {"name": "research", "models": [SONNET]}])
    plan = ws.run("plan")
    assert "leave-team" not in plan.stdout, plan.stdout
    assert "jane: stays a member of team platform while 1 key(s) of theirs are bound to it" in plan.stdout
    assert "until then its members' changes wait (members: jane)" in plan.stdout
    applied = ws.run("apply")
    assert applied.rc == 1 and "1 conflict(s) left unresolved: research" in applied.stdout, applied.stdout
    assert "roster:jane" in _teams(litellm)["platform"]["members"]
    assert litellm.models_for(jane) == [OPUS, SONNET] and ws.decrypt("jane") == jane


def test_member_permissions_granted_by_hand_are_removed_in_one_apply(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(DEVELOPERS[3:], teams=TEAMS[1:])
    assert ws.run("apply").rc == 0
    team = _teams(litellm)["data"]["id"]
    litellm.http.post("/team/permissions_update", json={
        "team_id": team, "team_member_permissions": ["/key/generate", "/key/update"]}).raise_for_status()
    plan = ws.run("plan")
    assert "team_member_permissions: [/key/generate, /key/update] -> []" in plan.stdout, plan.stdout
    assert ws.run("apply").rc == 0
    info = litellm.http.get("/team/info", params={"team_id": team}).json()["team_info"]
    assert info["team_member_permissions"] == []
    _converged(ws)


def test_an_internal_user_cannot_create_teams(litellm):
    """docs/litellm.md §10: /team/new is the proxy admin's."""
    litellm.http.post("/user/new", json={"user_id": "eve", "user_role": "internal_user",
                                         "auto_create_key": False}).raise_for_status()
    secret = "sk-eve-0123456789abcdef"
    litellm.http.post("/key/generate", json={"key": secret, "user_id": "eve"}).raise_for_status()
    made = httpx.post(f"{litellm.url}/team/new", json={"team_alias": "eves"},
                      headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    assert made.status_code in (401, 403), made.text


def test_a_relabelled_team_key_is_never_adopted(real_workspace, litellm):
    """A team admin may change a team key's alias and metadata: with a planted adoption record, such a key looked
    like the next hire's adopted key, and its secret stayed with the team admin. A key bound to a team that is not
    the tool's is never believed to be adopted, nor adopted."""
    from reconciler.core.records import adoption_document

    ws = real_workspace
    team = litellm.http.post("/team/new", json={"team_alias": "side-team"}).json()["team_id"]
    made = litellm.http.post("/key/generate", json={
        "key_alias": "claude-code-ada", "team_id": team, "models": [SONNET],
        "metadata": {"managed_by": "litellm-roster", "roster_name": "ada", "delivery": "external"}}).json()
    ws.known_secrets.append(made["key"])
    ws.keys.mkdir()
    (ws.keys / "ada.adopted.yaml").write_bytes(adoption_document("ada", made["token"], "2026-01-01T00:00:00Z"))
    ws.write_roster([{"name": "ada", "models": [SONNET]}])
    plan = json.loads(ws.run("plan", "--format", "json", env=ws.env(RECONCILE_COMMENT_DETAILS="1")).stdout)
    kinds = {c["kind"] for c in plan["changes"] if c["developer"] == "ada"}
    assert "update" not in kinds and "adopt" not in kinds and "conflict" in kinds, plan["changes"]
    assert any(f"is bound to team {team}, which is not the tool's" in c["reason"] for c in plan["changes"])
    assert ws.run("apply", "--adopt", "ada", "--force").rc == 1
    row = next(k for k in litellm.keys() if k["token"] == made["token"])
    assert row["team_id"] == team and row["user_id"] != "roster:ada"  # never taken for ada's


def test_the_tools_team_is_known_by_its_proof(real_workspace, litellm):
    """A team the tool made carries a proof bound to its id. A second team made later with the same claim and
    alias, and no admin (as the proxy admin's own tooling could), is a conflict; the proven team stays the
    roster's and keeps its keys (before proofs, two claims cancelled each other and the members waited)."""
    import time

    ws = real_workspace
    ws.write_roster(DEVELOPERS[3:], teams=TEAMS[1:])
    assert ws.run("apply").rc == 0
    ours = _teams(litellm)["data"]["id"]
    team = next(t for t in litellm.http.get("/team/list").json() if t["team_id"] == ours)
    assert team["metadata"]["roster_proof"].startswith("v1:")
    time.sleep(1.1)  # made strictly after proofs began
    copy = litellm.http.post("/team/new", json={
        "team_alias": "data", "metadata": {**team["metadata"], "roster_team": "data"}}).json()["team_id"]
    data = json.loads(ws.run("plan", "--format", "json").stdout)
    conflicts = [c for c in data["changes"] if c["kind"] == "conflict"]
    assert len(conflicts) == 1 and conflicts[0]["team_id"] == copy, conflicts
    assert "carries a proof that does not verify" in conflicts[0]["reason"], conflicts
    assert [c["kind"] for c in data["changes"]] == ["conflict"]  # nothing else: the proven team is the roster's
    keys = litellm.http.get("/team/info", params={"team_id": ours}).json()["keys"]
    assert sorted(k["key_alias"] for k in keys) == ["claude-code-ada", "claude-code-omar"]


def test_a_renamed_team_member_keeps_their_key(real_workspace, litellm):
    """previously: on a team member: the key moves to the new user and alias, still bound to the team; the new user
    joins and the old one leaves only once no key of theirs is bound there (LiteLLM may delete it with the
    membership); the same secret works throughout."""
    ws = real_workspace
    ws.write_roster(DEVELOPERS[3:], teams=TEAMS[1:])
    assert ws.run("apply").rc == 0
    secret = ws.decrypt("ada")
    ws.people["ada-lovelace"] = ws.people["ada"]
    ws.write_roster([{**DEVELOPERS[3], "name": "ada-lovelace", "previously": "ada"}, DEVELOPERS[4]], teams=TEAMS[1:])
    for _ in range(2):  # the old membership may wait for the key's move, one apply later
        applied = ws.run("apply")
        assert applied.rc == 0, applied.stdout + applied.stderr
    assert litellm.chat(secret, SONNET) == 200 and ws.decrypt("ada-lovelace", "ada") == secret
    data = _teams(litellm)["data"]
    assert data["members"] == ["roster:ada-lovelace", "roster:omar"]
    assert data["keys"] == ["claude-code-ada-lovelace", "claude-code-omar"]
    assert litellm.user("roster:ada") is None
    _converged(ws)


def test_one_apply_per_proxy_wherever_it_runs(real_workspace, litellm):
    """The lock kept on the proxy (a blocked team with a fixed id, made atomically by /team/new): an apply from another
    machine (its own lock directory, so no local lock is shared) is refused while one holds it, an expired one is
    taken over, force-unlock clears it, and a team of that id that is not the tool's is never touched."""
    import time

    from helpers import MASTER

    from reconciler.adapters.litellm import LiteLLMClient
    from reconciler.adapters.proxylock import LOCK_TEAM, ProxyLock

    ws = real_workspace
    ws.write_roster([{"name": "jane"}])
    elsewhere = LiteLLMClient(litellm.url, MASTER)
    theirs = ProxyLock(elsewhere, "ci@runner pid 1")
    theirs.acquire()
    assert theirs.available and theirs.held
    refused = ws.run("apply")
    assert refused.rc == 1 and f"another apply holds this proxy's lock (team {LOCK_TEAM}): ci@runner pid 1, lock " \
        f"{theirs.id}" in refused.stderr, refused.stderr
    assert not litellm.managed()  # nothing changed
    assert "litellm-roster-lock" not in ws.run("plan").stdout  # the lock team is no roster team: plans ignore it
    unlocked = ws.run("force-unlock", theirs.id)
    assert unlocked.rc == 0 and f"removed lock {theirs.id} held by ci@runner pid 1" in unlocked.stdout
    theirs._stop.set()
    assert ws.run("apply").rc == 0 and litellm.managed()
    assert litellm.http.get("/team/info", params={"team_id": LOCK_TEAM}).status_code != 200  # released

    dead = ProxyLock(elsewhere, "laptop pid 2", ttl=1)
    dead.acquire()
    dead._stop.set()  # killed: no more renewals
    time.sleep(1.5)
    assert ws.run("apply").rc == 0  # the expired lock is taken over

    litellm.http.post("/team/new", json={"team_id": LOCK_TEAM, "team_alias": "someone's"})
    squatted = ws.run("apply")
    assert squatted.rc == 1 and "is not this tool's lock; rename or delete it" in squatted.stderr
    assert litellm.http.get("/team/info", params={"team_id": LOCK_TEAM}).json()["team_info"]["team_alias"] == \
        "someone's"
    elsewhere.close()
