"""Rotation with overlap, expiry, disabling, hand-made keys, status: over HTTP against the sandbox, with its clock
and the tool's (RECONCILE_NOW) moved together."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import yaml
from helpers import MASTER, check_invariant, managed_keys, sandbox_models

from reconciler.core.timeutil import iso, utcnow

OPUS, SONNET = "claude-3-opus-20240229", "claude-sonnet-4-5-20250929"
DAY = 86400


def advance(ws, sandbox, seconds: float) -> dict[str, str]:
    """Move the sandbox's clock; return the environment that moves the tool's clock to match."""
    sandbox.store.offset += timedelta(seconds=seconds)
    return ws.env(RECONCILE_NOW=iso(utcnow() + sandbox.store.offset))


def test_rotation_after_age_with_grace_overlap(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}], rotate_after="30d", grace="2d")
    assert workspace.run("apply").rc == 0
    old = workspace.decrypt("jane")

    env = advance(workspace, sandbox, 30 * DAY - 60)
    assert workspace.run("plan", "--detailed-exitcode", env=env).rc == 0  # a minute early: nothing
    env = advance(workspace, sandbox, 61)
    plan = workspace.run("plan", env=env)
    assert "+/- jane" in plan.stdout and "rotate: older than 30d: issued" in plan.stdout
    assert "Plan: 0 to create, 1 to rotate, 0 to update, 0 to delete." in plan.stdout
    assert workspace.run("apply", "--simulated-clock", env=env).rc == 0
    new = workspace.decrypt("jane")
    assert new != old
    assert sandbox_models(sandbox.url, old) == sandbox_models(sandbox.url, new) == [OPUS, SONNET]  # both work
    aliases = sorted(r["key_alias"] for r in managed_keys(sandbox))
    assert aliases == ["claude-code-jane", "claude-code-jane--retiring"]
    assert workspace.run("plan", "--detailed-exitcode", env=env).rc == 0

    env = advance(workspace, sandbox, 2 * DAY + 1)
    assert sandbox_models(sandbox.url, old) == 401  # LiteLLM itself stops the old key when grace ends
    plan = workspace.run("plan", env=env)
    assert "delete: grace ended" in plan.stdout
    assert workspace.run("apply", "--simulated-clock", env=env).rc == 0
    assert [r["key_alias"] for r in managed_keys(sandbox)] == ["claude-code-jane"]
    assert sandbox_models(sandbox.url, new) == [OPUS, SONNET]
    assert workspace.run("plan", "--detailed-exitcode", env=env).rc == 0


def test_rotation_with_zero_grace_revokes_at_once(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0
    old = workspace.decrypt("jane")
    workspace.write_roster([{"name": "jane", "rotate": iso(utcnow() + timedelta(minutes=1))}])
    assert "revoked at once (rotate: is a revocation)" in workspace.run("plan").stdout
    assert workspace.run("apply").rc == 0
    assert sandbox_models(sandbox.url, old) == 401
    assert sandbox_models(sandbox.url, workspace.decrypt("jane")) == [OPUS, SONNET]


def test_recipient_change_rotates_to_the_new_recipient(workspace, sandbox, people):
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0
    workspace.write_roster([{"name": "jane", "recipient": people["omar"].recipient}])
    plan = workspace.run("plan")
    assert "rotate: recipient changed" in plan.stdout
    assert workspace.run("apply").rc == 0
    secret = workspace.decrypt("jane", person="omar")
    assert sandbox_models(sandbox.url, secret) == [OPUS, SONNET]
    import subprocess

    from helpers import SOPS
    denied = subprocess.run([SOPS, "decrypt", str(workspace.keys / "jane.sops.yaml")], capture_output=True,
                            env={**workspace.env(), "SOPS_AGE_KEY_FILE": str(people["jane"].identity_file)})
    assert denied.returncode != 0  # the old recipient can no longer read it


def test_expiry_set_moved_and_passed(workspace, sandbox):
    first = (utcnow() + timedelta(days=10)).date().isoformat()
    workspace.write_roster([{"name": "jane", "expires": first}])
    assert workspace.run("apply").rc == 0
    row = managed_keys(sandbox)[0]
    assert row["expires"].startswith(first + "T23:59")
    plan = workspace.run("plan")
    assert "jane: key expires in" in plan.stdout and "No changes." in plan.stdout  # flagged within 14d

    later = (utcnow() + timedelta(days=60)).date().isoformat()
    workspace.write_roster([{"name": "jane", "expires": later}])
    plan = workspace.run("plan")
    assert f"expires: {first}T23:59:" in plan.stdout and f" -> {later}T23:59:59Z" in plan.stdout
    assert workspace.run("apply").rc == 0
    secret = workspace.decrypt("jane")
    assert managed_keys(sandbox)[0]["expires"].startswith(later)
    assert workspace.key_file("jane")["expires"] == f"{later}T23:59:59Z"

    env = advance(workspace, sandbox, 61 * DAY)
    assert sandbox_models(sandbox.url, secret) == 401  # expired keys stay listed but do not work
    plan = workspace.run("plan", env=env)
    assert "delete: access expired" in plan.stdout
    assert workspace.run("apply", "--simulated-clock", env=env).rc == 0
    assert managed_keys(sandbox) == [] and not (workspace.keys / "jane.sops.yaml").exists()


def test_disable_blocks_and_enable_unblocks_the_same_key(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0
    secret = workspace.decrypt("jane")
    workspace.write_roster([{"name": "jane", "disabled": True}])
    assert "blocked: false -> true" in workspace.run("plan").stdout
    assert workspace.run("apply").rc == 0
    assert sandbox.counts["POST /key/block"] == 1
    assert sandbox_models(sandbox.url, secret) == 401
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0
    # Unblocked with /key/update {"blocked": false}, which every LiteLLM version reads right (docs/litellm.md).
    assert sandbox.counts["POST /key/unblock"] == 0 and sandbox.counts["POST /key/update"] == 1
    assert sandbox_models(sandbox.url, secret) == [OPUS, SONNET]


def _handmade(sandbox, alias: str, ws) -> dict:
    made = httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"key_alias": alias, "models": [SONNET]}).json()
    ws.known_secrets.append(made["key"])
    return made


def test_handmade_key_conflict_then_adopt_keeps_its_secret(workspace, sandbox):
    made = _handmade(sandbox, "claude-code-jane", workspace)
    workspace.write_roster([{"name": "jane"}])
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.rc == 2 and "!   jane" in plan.stdout and "--adopt jane" in plan.stdout  # a decision is due
    undecided = workspace.run("apply")
    assert undecided.rc == 1 and "1 conflict(s) left unresolved: jane" in undecided.stdout
    assert sandbox.store.rows[made["token"]]["metadata"] == {}  # untouched without a decision

    braked = workspace.run("apply", "--adopt", "jane")  # a takeover is high-risk: it needs --force, always
    assert braked.rc == 4 and "takes over a key made by hand (claude-code-jane" in braked.stderr
    assert workspace.run("apply", "--adopt", "jane", "--force").rc == 0
    row = sandbox.store.rows[made["token"]]
    assert row["metadata"]["managed_by"] == "litellm-roster" and row["user_id"] == "roster:jane"
    assert yaml.safe_load((workspace.keys / "jane.adopted.yaml").read_text())["token_sha256"] == made["token"]
    assert sandbox_models(sandbox.url, made["key"]) == [OPUS, SONNET]  # same secret, roster's models
    assert not (workspace.keys / "jane.sops.yaml").exists()
    assert workspace.run("plan", "--detailed-exitcode").rc == 0


def test_handmade_key_replaced_by_a_delivered_one(workspace, sandbox):
    made = _handmade(sandbox, "claude-code-jane", workspace)
    workspace.write_roster([{"name": "jane"}], grace="1h")
    assert workspace.run("apply", "--replace", "jane").rc == 4  # replacing is high-risk too
    assert workspace.run("apply", "--replace", "jane", "--force").rc == 0
    secret = workspace.decrypt("jane")
    assert secret != made["key"]
    assert sandbox.store.rows[made["token"]]["key_alias"] == "claude-code-jane--retiring"
    assert sandbox_models(sandbox.url, made["key"]) == [SONNET]  # still works during grace
    check_invariant(workspace, sandbox)


def test_status_report(workspace, sandbox):
    _handmade(sandbox, "claude-code-omar", workspace)
    workspace.write_roster([{"name": "jane", "expires": (utcnow() + timedelta(days=3)).date().isoformat()},
                            {"name": "john", "disabled": True}, {"name": "omar"}], rotate_after="90d")
    assert workspace.run("apply").rc == 1  # omar's hand-made key is a conflict left unresolved
    workspace.write_roster([{"name": "jane"}, {"name": "omar"}, {"name": "priya"}], rotate_after="90d")
    result = workspace.run("status", "--format", "json")
    rows = {(r["developer"], r["state"]): r for r in json.loads(result.stdout)["keys"]}
    assert set(rows) == {("jane", "active"), ("john", "not in roster"), ("omar", "hand-made"), ("priya", "no key")}
    assert rows[("jane", "active")]["rotation_due_in"] in ("89d", "90d")
    assert rows[("jane", "active")]["expires_in"] in ("3d", "4d", "2d")
    assert rows[("jane", "active")]["max_budget"] is None and rows[("jane", "active")]["spend"] == 0
    text = workspace.run("status").stdout
    assert text.splitlines()[0].split()[:3] == ["developer", "state", "age"]
    assert max(map(len, text.splitlines())) <= 120  # a terminal's width; --wide and JSON have the rest
    assert workspace.run("status", "--wide").stdout.splitlines()[0].split()[:3] == ["developer", "state", "alias"]
    jane = rows[("jane", "active")]
    assert jane["issued_at"].endswith("Z") and jane["expires_at"].endswith("Z") and jane["rotation_due_at"]
    assert "| developer | state |" in workspace.run("status", "--format", "markdown").stdout


def test_status_charts_spend_against_budget(workspace, sandbox):
    """The markdown status (the drift job's summary) draws each developer's spend against their budget as a Mermaid
    xychart, biggest spenders first."""
    import hashlib

    workspace.write_roster([{"name": "jane", "max_budget": 50}, {"name": "john", "max_budget": 20}])
    assert workspace.run("apply").rc == 0
    sandbox.store.rows[hashlib.sha256(workspace.decrypt("john").encode()).hexdigest()]["spend"] = 12.5
    chart = workspace.run("status", "--format", "markdown").stdout.split("```mermaid\n")[1].split("```")[0]
    assert chart.splitlines() == ["xychart-beta", '  title "Developers: spend and budget (USD)"',
                                  '  x-axis ["john", "jane"]', '  y-axis "USD"', "  bar [12.5, 0]",
                                  "  line [20, 50]"]
    assert "mermaid" not in workspace.run("status").stdout
