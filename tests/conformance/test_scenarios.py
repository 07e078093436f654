"""The end-to-end scenarios of the core, delivery and lifecycle issues, against LiteLLM's real key handlers and
auth (the same tool, the same real sops and age identities)."""

from __future__ import annotations

OPUS, SONNET = "claude-3-opus-20240229", "claude-sonnet-4-5-20250929"
TEAM = [{"name": "jane"}, {"name": "john", "models": [SONNET]}, {"name": "priya"}]


def _invariant(ws, litellm) -> None:
    """The delivery invariant, read over HTTP: each live managed key has its file, which decrypts to it."""
    import hashlib

    from reconciler.adapters.keyfiles import read_key_files

    current = [k for k in litellm.managed() if "retire_at" not in k["metadata"]]
    files = read_key_files(ws.keys)
    assert sorted(files) == sorted(k["metadata"]["roster_name"] for k in current)
    for key in current:
        name = key["metadata"]["roster_name"]
        assert hashlib.sha256(ws.decrypt(name, "admin").encode()).hexdigest() == key["token"] == \
            files[name].token_sha256
    assert ws.run("plan", "--detailed-exitcode").rc == 0


def test_create_replan_update_delete(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(TEAM)
    applied = ws.run("apply")
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert "Apply complete: 6 done, 0 failed." in applied.stdout  # 3 users, then 3 keys proven on /v1/models
    _invariant(ws, litellm)

    john = ws.decrypt("john")
    assert litellm.models_for(john) == [SONNET]
    ws.write_roster([TEAM[0], {"name": "john", "models": [SONNET, OPUS]}, TEAM[2]])
    assert "1 to update" in ws.run("plan").stdout
    assert ws.run("apply").rc == 0
    assert ws.decrypt("john") == john and litellm.models_for(john) == [OPUS, SONNET]  # LiteLLM's real auth

    priya = ws.decrypt("priya")
    ws.write_roster(TEAM[:2])
    assert ws.run("apply").rc == 0
    assert litellm.models_for(priya) == 401
    _invariant(ws, litellm)


def test_block_and_unblock(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster([{"name": "jane"}])
    assert ws.run("apply").rc == 0
    secret = ws.decrypt("jane")
    ws.write_roster([{"name": "jane", "disabled": True}])
    assert ws.run("apply").rc == 0
    assert litellm.models_for(secret) == 401
    ws.write_roster([{"name": "jane"}])
    assert ws.run("apply").rc == 0
    assert litellm.models_for(secret) == [OPUS, SONNET]
    _invariant(ws, litellm)


def test_rotation_with_and_without_grace(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster([{"name": "jane"}, {"name": "john"}], grace="1h")
    assert ws.run("apply").rc == 0
    old_jane, old_john = ws.decrypt("jane"), ws.decrypt("john")
    # A scheduled rotation (here: a new recipient) keeps the grace; rotate: (below) is a revocation.
    moved = {"name": "jane", "recipient": ws.people["priya"].recipient}
    ws.write_roster([moved, {"name": "john"}], grace="1h")
    assert ws.run("apply").rc == 0
    new_jane = ws.decrypt("jane", "priya")
    assert new_jane != old_jane
    assert litellm.models_for(old_jane) == litellm.models_for(new_jane) == [OPUS, SONNET]  # overlap
    retiring = [k for k in litellm.managed() if k["key_alias"] == "claude-code-jane--retiring"]
    assert len(retiring) == 1 and retiring[0]["expires"]  # LiteLLM will stop it when grace ends

    ws.write_roster([moved, {"name": "john", "rotate": "2099-01-01T00:00:00Z"}])  # grace 0
    assert ws.run("apply").rc == 0
    assert litellm.models_for(old_john) == 401 and litellm.models_for(ws.decrypt("john")) == [OPUS, SONNET]


def test_wrong_master_key_and_unknown_model(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster(TEAM)
    wrong = ws.run("apply", env=ws.env(LITELLM_MASTER_KEY="sk-not-the-master-key-99"))
    assert wrong.rc == 1 and "GET /key/info: HTTP 401: Authentication Error" in wrong.stderr
    ws.write_roster([{"name": "jane", "models": ["claude-sonnet-4-5"]}])
    unknown = ws.run("apply")
    assert unknown.rc == 1
    assert "claude-sonnet-4-5 is not served by this proxy; did you mean claude-sonnet-4-5-20250929?" in unknown.stderr
    assert litellm.keys() == []


def test_handmade_key_adopted_in_place(real_workspace, litellm):
    ws = real_workspace
    made = litellm.http.post("/key/generate", json={"key_alias": "claude-code-jane", "models": [SONNET]}).json()
    ws.known_secrets.append(made["key"])
    ws.write_roster([{"name": "jane"}])
    assert "!   jane" in ws.run("plan").stdout
    assert ws.run("apply", "--adopt", "jane", "--force").rc == 0
    assert litellm.models_for(made["key"]) == [OPUS, SONNET]
    assert ws.run("plan", "--detailed-exitcode").rc == 0


def test_expiry_set_moved_and_removed(real_workspace, litellm):
    """A 30-day key expires in 30 days (LiteLLM 1.77 read generate's duration as a reset time), moving the date
    updates it in place, and removing it leaves a key that never expires (1.80 ignores duration: null)."""
    import json
    from datetime import timedelta

    from reconciler.core.live import NEVER
    from reconciler.core.timeutil import parse_litellm_time, utcnow

    ws = real_workspace
    in_30_days = (utcnow() + timedelta(days=30)).date()
    ws.write_roster([{"name": "jane", "expires": in_30_days.isoformat()}])
    assert ws.run("apply").rc == 0
    (key,) = litellm.managed()
    assert parse_litellm_time(key["expires"]).date() == in_30_days
    assert ws.run("plan", "--detailed-exitcode").rc == 0
    later = in_30_days + timedelta(days=10)
    ws.write_roster([{"name": "jane", "expires": later.isoformat()}])
    assert ws.run("apply").rc == 0
    assert parse_litellm_time(litellm.managed()[0]["expires"]).date() == later
    ws.write_roster([{"name": "jane"}])
    assert "expires: " in ws.run("plan").stdout
    assert ws.run("apply").rc == 0
    expires = litellm.managed()[0]["expires"]  # 1.77 cannot clear it: the tool moves it past NEVER instead
    assert expires is None or parse_litellm_time(expires) >= NEVER
    assert ws.run("plan", "--detailed-exitcode").rc == 0
    assert json.loads(ws.run("status", "--format", "json").stdout)["keys"][0]["expires_in"] is None
    _invariant(ws, litellm)


def test_restore_after_truncate_gives_every_developer_the_same_secret(real_workspace, litellm, people):
    """LiteLLM's tables emptied (a lost database): apply --restore registers each proven key file's secret again,
    with exactly its models, and the tool's proofs on the new rows; the keys work on LiteLLM's own auth."""
    ws = real_workspace
    ws.write_roster(TEAM)
    assert ws.run("apply").rc == 0
    secrets = {d["name"]: ws.decrypt(d["name"], "admin") for d in TEAM}
    litellm.reset()
    applied = ws.run("apply", "--restore", env=ws.env(SOPS_AGE_KEY_FILE=str(people["admin"].identity_file)))
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert "Plan: 0 to create, 3 to restore" in applied.stdout, applied.stdout
    assert litellm.models_for(secrets["john"]) == [SONNET] and litellm.chat(secrets["john"], SONNET) == 200
    assert litellm.models_for(secrets["jane"]) == litellm.models_for(secrets["priya"]) == [OPUS, SONNET]
    assert all(k["metadata"]["roster_proof"].startswith("v1:") for k in litellm.managed())
    _invariant(ws, litellm)


def test_a_special_model_name_is_granted_and_verified(real_workspace, litellm):
    """all-proxy-models is a wildcard like anthropic/* (one rule, catalog.is_wildcard): its grant needs --force, and
    apply's check on /v1/models accepts the models the proxy lists under it (it used to fail every such key)."""
    ws = real_workspace
    ws.write_roster([{"name": "jane", "models": ["all-proxy-models"]}], allow_wildcard_models=True)
    assert ws.run("apply").rc == 4  # a wildcard grant is high-risk
    applied = ws.run("apply", "--force")
    assert applied.rc == 0 and "(verified on /v1/models)" in applied.stdout, applied.stdout + applied.stderr
    assert {OPUS, SONNET} <= set(litellm.models_for(ws.decrypt("jane")))


def test_the_developer_fetches_their_key_through_a_devcontainer_route(real_workspace, litellm, people,
                                                                    tmp_path_factory):
    """reconcile key with jane's own identity and no admin credential, proven on LiteLLM's own /v1/models through an
    nginx-like Host-header route, written to an ignored env file; a blocked key is refused with its reason."""
    import subprocess

    from helpers import RECONCILE, host_route

    ws = real_workspace
    ws.write_roster([{"name": "jane"}])
    assert ws.run("apply").rc == 0
    project = tmp_path_factory.mktemp("project")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / ".gitignore").write_text(".env\n")
    env = {k: v for k, v in ws.env().items() if not k.startswith(("LITELLM_", "RECONCILE_", "SOPS_"))}
    env.update(HOME=str(project), SOPS_AGE_KEY_FILE=str(people["jane"].identity_file))
    with host_route(litellm.url, "litellm.localhost") as route:
        args = [RECONCILE, "key", "jane", "--env-file", str(project / ".env"), "--base-url", route,
                "--host-header", "litellm.localhost"]
        done = subprocess.run(args, cwd=ws.root, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"models {OPUS}, {SONNET}" in done.stdout
        ws.write_roster([{"name": "jane", "disabled": True}])
        assert ws.run("apply").rc == 0
        (project / ".env").unlink()
        blocked = subprocess.run(args, cwd=ws.root, capture_output=True, text=True, env=env, timeout=120)
    assert blocked.returncode == 1 and "the key is blocked" in blocked.stderr, blocked.stderr
    assert not (project / ".env").exists()


def test_a_rotation_carries_spend_over_and_a_released_key_keeps_working(real_workspace, litellm):
    """On LiteLLM: /key/generate takes the predecessor's spend, so a rotation does not reset a budget; a released
    key loses the tool's marks (/key/update replaces metadata whole, /user/update too) and keeps working."""
    import yaml

    from reconciler.core.timeutil import iso, utcnow

    ws = real_workspace
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    db = litellm.database
    db.psql(db.DATABASE, "-c", """UPDATE "LiteLLM_VerificationToken" SET spend = 12.5
                                  WHERE key_alias = 'claude-code-jane'""")
    __import__("time").sleep(2)  # rotate: asks for keys issued before it, to the second
    ws.write_roster([{"name": "jane", "rotate": iso(utcnow())}, {"name": "john"}])
    assert "the new key starts with the old key's spend (12.5 so far)" in ws.run("plan").stdout
    assert ws.run("apply").rc == 0
    (jane,) = [k for k in litellm.managed() if k["key_alias"] == "claude-code-jane"]
    assert jane["spend"] == 12.5 and jane["token"] == __import__("hashlib").sha256(
        ws.decrypt("jane").encode()).hexdigest()

    # With a budget and a grace, the old key's budget closes at its spend: the grace adds no second budget.
    moved = {"name": "jane", "recipient": ws.people["priya"].recipient, "max_budget": 50}
    ws.write_roster([moved, {"name": "john"}], grace="1h")
    assert "the old key's budget closes at its spend" in ws.run("plan").stdout
    assert ws.run("apply").rc == 0
    (old,) = [k for k in litellm.managed() if k["key_alias"] == "claude-code-jane--retiring"]
    (new,) = [k for k in litellm.managed() if k["key_alias"] == "claude-code-jane"]
    assert old["max_budget"] == old["spend"] == 12.5 and new["spend"] == 12.5 and new["max_budget"] == 50

    secret = ws.decrypt("john")
    doc = yaml.safe_load(ws.roster.read_text())
    doc["developers"] = [d for d in doc["developers"] if d["name"] != "john"]
    doc["released"] = ["john"]
    ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    applied = ws.run("apply", "--allow-release", "john")
    assert applied.rc == 0 and "john: release" in applied.stdout, applied.stdout + applied.stderr
    (john,) = [k for k in litellm.keys() if k["key_alias"] == "claude-code-john"]
    assert not {"managed_by", "roster_name", "roster_proof"} & set(john["metadata"] or {})
    assert litellm.models_for(secret) == [OPUS, SONNET]
    assert "managed_by" not in ((litellm.user("roster:john") or {}).get("metadata") or {})
    assert ws.run("plan", "--detailed-exitcode").rc == 0
