"""End to end: the installed `reconcile` command against the sandbox over HTTP, real sops, real age identities."""

from __future__ import annotations

import json

from helpers import MASTER, managed_keys, sandbox_models

OPUS, SONNET, SONNET_SHORT = "claude-3-opus-20240229", "claude-sonnet-4-5-20250929", "claude-sonnet-4.5"
TEAM = [{"name": "jane"}, {"name": "john", "models": [SONNET]}, {"name": "priya", "max_budget": 25}]


def posts(sandbox) -> int:
    return sum(n for route, n in sandbox.counts.items() if route.startswith("POST"))


def test_create_three_then_nothing_to_do(workspace, sandbox):
    workspace.write_roster(TEAM)
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.rc == 2, plan.stderr
    assert "Plan: 3 to create, 0 to rotate, 0 to update, 0 to delete." in plan.stdout
    assert posts(sandbox) == 0

    applied = workspace.run("apply")
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert "Apply complete: 6 done, 0 failed." in applied.stdout  # each developer's user, then their key
    assert len(managed_keys(sandbox)) == 3
    assert {u: r["user_role"] for u, r in sandbox.store.users.items()} == \
        dict.fromkeys(("roster:jane", "roster:john", "roster:priya"), "internal_user_viewer")

    for name, models in (("jane", [OPUS, SONNET]), ("john", [SONNET]), ("priya", [OPUS, SONNET])):
        secret = workspace.decrypt(name)
        assert sandbox_models(sandbox.url, secret) == models
        assert workspace.decrypt(name, person="admin") == secret  # the break-glass recipient reads it too
        meta = workspace.key_file(name)
        assert meta["developer"] == name and meta["key_alias"] == f"claude-code-{name}"
        assert meta["api_key"].startswith("ENC[AES256_GCM,")

    again = workspace.run("plan", "--detailed-exitcode")
    assert again.rc == 0, again.stdout
    assert "No changes." in again.stdout
    before = {p.name: p.read_bytes() for p in workspace.keys.iterdir()}
    assert workspace.run("apply").rc == 0
    assert {p.name: p.read_bytes() for p in workspace.keys.iterdir()} == before  # no change rewrites no file


def test_update_models_in_place_keeps_the_secret(workspace, sandbox):
    workspace.write_roster(TEAM)
    assert workspace.run("apply").rc == 0
    secret = workspace.decrypt("john")
    assert sandbox_models(sandbox.url, secret) == [SONNET]

    workspace.write_roster([TEAM[0], {"name": "john", "models": [SONNET, OPUS]}, TEAM[2]])
    plan = workspace.run("plan")
    assert "Plan: 0 to create, 0 to rotate, 1 to update, 0 to delete." in plan.stdout
    assert f"models: [{SONNET}] -> [{OPUS}, {SONNET}]" in plan.stdout
    assert workspace.run("apply").rc == 0

    assert workspace.decrypt("john") == secret  # same secret, and the key file still decrypts
    assert sandbox_models(sandbox.url, secret) == [OPUS, SONNET]
    assert workspace.key_file("john")["models"] == [OPUS, SONNET]
    assert "No changes." in workspace.run("plan").stdout


def test_removed_developer_loses_access_and_file(workspace, sandbox):
    workspace.write_roster(TEAM)
    assert workspace.run("apply").rc == 0
    secret = workspace.decrypt("priya")
    workspace.write_roster(TEAM[:2])
    plan = workspace.run("plan")
    assert "-   priya" in plan.stdout and "no longer in the roster" in plan.stdout
    assert workspace.run("apply").rc == 0
    assert sandbox_models(sandbox.url, secret) == 401
    assert not (workspace.keys / "priya.sops.yaml").exists()
    assert "No changes." in workspace.run("plan").stdout


def test_wrong_master_key_is_clear_and_changes_nothing(workspace, sandbox):
    workspace.write_roster(TEAM)
    result = workspace.run("apply", env=workspace.env(LITELLM_MASTER_KEY="sk-not-the-master-key-99"))
    assert result.rc == 1
    assert result.stderr.startswith("error: GET /key/info: HTTP 401: Authentication Error, Invalid API key")
    assert "sk-not-the-master-key-99" not in result.stderr + result.stdout
    assert posts(sandbox) == 0 and not sandbox.store.rows
    assert not workspace.keys.exists()


def test_missing_master_key(workspace, sandbox):
    workspace.write_roster(TEAM)
    env = workspace.env()
    del env["LITELLM_MASTER_KEY"]
    result = workspace.run("plan", env=env)
    assert result.rc == 1
    assert "LITELLM_MASTER_KEY is not set" in result.stderr
    assert sum(sandbox.counts.values()) == 0


def test_unknown_model_fails_with_a_suggestion(workspace, sandbox):
    workspace.write_roster([{"name": "jane", "models": ["claude-sonnet-4-5"]}, {"name": "john", "models": ["gpt-4o"]}])
    result = workspace.run("apply")
    assert result.rc == 1
    assert "claude-sonnet-4-5 is not served by this proxy; did you mean claude-sonnet-4-5-20250929?" in result.stderr
    assert "developers[1] (john).models[0]: gpt-4o is not served by this proxy" in result.stderr
    assert posts(sandbox) == 0 and not workspace.keys.exists()


def test_bad_roster_exits_1_before_any_request(workspace, sandbox):
    workspace.roster.write_text("version: 1\nkeys:\n  alias: x-{name}\ndevelopers:\n  - name: Jane Smith\n"
                                "    recipient: age1nope\n")
    result = workspace.run("apply")
    assert result.rc == 1
    assert "roster.yaml:5:11: developers[0] (Jane Smith).name:" in result.stderr
    assert "roster.yaml:6:16: developers[0] (Jane Smith).recipient:" in result.stderr
    assert sum(sandbox.counts.values()) == 0


def test_json_and_markdown_plans(workspace, sandbox):
    workspace.write_roster(TEAM)
    result = workspace.run("plan", "--format", "json", "--out", "plan.json")
    data = json.loads(result.stdout)
    assert data["format_version"] == 1
    assert [c["kind"] for c in data["changes"]] == ["create-user"] * 3 + ["create"] * 3
    assert data["changes"][1]["after"] == {"user_role": "internal_user_viewer", "models": [SONNET], "max_budget": None}
    assert data["changes"][4]["after"]["models"] == [SONNET]
    assert json.loads((workspace.root / "plan.json").read_text())["checksum"] == data["checksum"]
    md = workspace.run("plan", "--format", "markdown").stdout
    assert "| `+` | jane | create | new in the roster |" in md
    assert "**Plan: 3 to create, 0 to rotate, 0 to update, 0 to delete. Users: 3 to create, 0 to update, 0 to " \
        "delete.**" in md


def test_unmanaged_keys_are_counted_never_touched(workspace, sandbox):
    import httpx

    made = httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"key_alias": "ci-bot", "models": [SONNET]}).json()
    workspace.known_secrets.append(made["key"])
    workspace.write_roster(TEAM)
    assert workspace.run("apply").rc == 0
    plan = workspace.run("plan")
    assert "3 managed key(s); 1 other key(s) on the proxy are never touched;" in plan.stdout
    assert sandbox.store.rows[made["token"]]["key_alias"] == "ci-bot"
    workspace.write_roster([])
    assert workspace.run("apply").rc == 4  # every managed key at once: braked, whatever the team size
    assert workspace.run("apply", "--force").rc == 0
    assert list(sandbox.store.rows) == [made["token"]]


def test_reviewed_plan_must_match(workspace, sandbox):
    workspace.write_roster(TEAM)
    assert workspace.run("plan", "--out", "plan.json").rc == 0
    workspace.write_roster(TEAM[:2])
    stale = workspace.run("apply", "--plan", "plan.json")
    assert stale.rc == 3 and "plan is stale: roster.yaml changed" in stale.stderr
    assert not sandbox.store.rows
    checksum = json.loads(workspace.run("plan", "--format", "json").stdout)["checksum"]
    wrong = workspace.run("apply", "--checksum", "0" * 64)
    assert wrong.rc == 3 and not sandbox.store.rows
    assert workspace.run("apply", "--checksum", checksum).rc == 0
    assert len(managed_keys(sandbox)) == 2


def test_proxy_headers_from_roster_and_environment(tmp_path, people):
    from helpers import Workspace

    from litellm_roster_sandbox import start_sandbox

    token = "ingress-token-value-7f3a"
    with start_sandbox(master_key="sk-test-master-key-0123456789", required_headers={"X-Ingress-Auth": token}) as sb:
        ws = Workspace(tmp_path, sb.url, people)
        ws.write_roster([{"name": "jane"}])
        text = ws.roster.read_text().replace(f"  url: {sb.url}\n", f"  url: {sb.url}\n  headers:\n"
                                             "    X-Ingress-Auth: ${INGRESS_TOKEN}\n")
        ws.roster.write_text(text)
        # The roster names the variable; only the operator can allow it (a pull request could name any other).
        refused = ws.run("plan", env=ws.env(INGRESS_TOKEN=token))
        assert refused.rc == 1
        assert ("proxy.headers.X-Ingress-Auth uses ${INGRESS_TOKEN}, which the operator has not allowed; list it "
                "in RECONCILE_HEADER_VARS" in refused.stderr)
        missing = ws.run("plan", env=ws.env(RECONCILE_HEADER_VARS="INGRESS_TOKEN"))
        assert missing.rc == 1
        assert ("proxy.headers.X-Ingress-Auth uses ${INGRESS_TOKEN}, which is not set in the environment"
                in missing.stderr)
        ok = ws.run("apply", "-vv", env=ws.env(INGRESS_TOKEN=token, RECONCILE_HEADER_VARS="INGRESS_TOKEN"))
        assert ok.rc == 0, ok.stdout + ok.stderr
        assert token not in ok.stdout + ok.stderr
        assert ws.decrypt("jane")


def test_unwritable_delivery_dir_fails_the_change_cleanly(workspace, sandbox):
    workspace.write_roster(TEAM[:1])
    workspace.keys.write_text("a file where the key directory should be\n")  # fails for root too
    result = workspace.run("apply")
    assert result.rc == 1
    assert f"error: keys.delivery_dir: {workspace.keys} is not a directory" in result.stderr
    assert managed_keys(sandbox) == [] and result.stdout == ""  # refused before anything changed
