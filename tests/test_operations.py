"""Operating from CI: brakes, the apply lock, the audit trail, bootstrap by import."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import yaml
from helpers import MASTER, RECONCILE, Workspace, check_invariant, managed_keys

from litellm_roster_sandbox import Fault
from reconciler.adapters.lock import FileLock, lock_path

NAMES = ["jane", "john", "priya", "ada", "omar"]


def write_team(ws: Workspace, n: int, **keys) -> None:
    """n developers dev-00.., each with a recipient of their own."""
    names = [f"dev-{i:02d}" for i in range(n)]
    ws.add_people(names)
    ws.write_roster([{"name": name} for name in names], **keys)


def test_brake_on_deletes_names_the_numbers(workspace, sandbox):
    write_team(workspace, 12)
    assert workspace.run("apply").rc == 0  # creates are never braked
    write_team(workspace, 8)
    braked = workspace.run("apply")
    assert braked.rc == 4
    assert ("error: Too many deletes: 4 of 12 managed keys (33%) is over 30% (--allow-deletes 4 passes exactly "
            "these); nothing was changed. Re-run with --force if this is intended.") in braked.stderr
    assert len(managed_keys(sandbox)) == 12
    assert workspace.run("apply", "--allow-deletes", "3").rc == 4  # a count, not a switch: 4 deletes are not 3
    assert len(managed_keys(sandbox)) == 12
    assert workspace.run("apply", "--allow-deletes", "4").rc == 0
    assert len(managed_keys(sandbox)) == 8


def test_brake_absolute_count_and_force(workspace, sandbox):
    write_team(workspace, 4)
    assert workspace.run("apply").rc == 0
    write_team(workspace, 1)
    braked = workspace.run("apply", "--max-count", "2")
    assert braked.rc == 4 and "Too many deletes: 3 is over the limit of 2" in braked.stderr
    assert workspace.run("apply", "--max-count", "2", "--force").rc == 0
    assert len(managed_keys(sandbox)) == 1


def test_rotate_everything_is_braked_and_counted(workspace, sandbox):
    write_team(workspace, 12)
    assert workspace.run("apply").rc == 0
    doc = yaml.safe_load(workspace.roster.read_text())
    doc["defaults"]["rotate"] = "2099-01-01T00:00:00Z"
    workspace.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = workspace.run("plan")
    assert "Plan: 0 to create, 12 to rotate, 0 to update, 0 to delete." in plan.stdout
    assert plan.stdout.count("before the rotation requested for 2099-01-01T00:00:00Z") == 12
    braked = workspace.run("apply")
    assert braked.rc == 4 and "Too many rotations: 12 of 12 managed keys (all of them)" in braked.stderr
    old = {r["token"] for r in managed_keys(sandbox)}
    assert workspace.run("apply", "--force").rc == 0
    assert not old & {r["token"] for r in managed_keys(sandbox)}


def test_concurrent_applies_never_create_twice(workspace, sandbox, tmp_path):
    write_team(workspace, 3)
    sandbox.set_faults(Fault("POST /key/generate", "delay", rate=1.0, seconds=1.0))
    env = workspace.env(RECONCILE_LOCK_DIR=str(tmp_path / "locks"))
    first = subprocess.Popen([RECONCILE, "apply"], cwd=workspace.root, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    path = lock_path(sandbox.url).name
    for _ in range(100):  # wait until the first holds the lock
        if (tmp_path / "locks" / path).exists():
            break
        time.sleep(0.05)
    second = workspace.run("apply", env=env)
    assert second.rc == 1 and "another apply holds the lock for this proxy:" in second.stderr
    assert "reconcile force-unlock" in second.stderr
    waiting = subprocess.run([RECONCILE, "apply", "--lock-timeout", "60"], cwd=workspace.root, env=env,
                             capture_output=True, text=True, timeout=120)
    out, err = first.communicate(timeout=60)
    workspace.outputs += [out, err, waiting.stdout, waiting.stderr]
    assert first.returncode == 0, out + err
    assert waiting.returncode == 0 and "No changes." in waiting.stdout  # it waited, then found nothing to do
    assert len(managed_keys(sandbox)) == 3 and len(sandbox.store.plaintexts) == 3
    sandbox.set_faults()
    check_invariant(workspace, sandbox)


def test_force_unlock(workspace, sandbox, tmp_path):
    write_team(workspace, 1)
    env = workspace.env(RECONCILE_LOCK_DIR=str(tmp_path / "locks"))
    import os
    os.environ["RECONCILE_LOCK_DIR"] = str(tmp_path / "locks")
    try:
        held = FileLock(lock_path(sandbox.url), holder="ci@runner-7 pid 4242")
        held.acquire()  # held by this (live) test process
        blocked = workspace.run("apply", env=env)
        assert blocked.rc == 1 and f"ci@runner-7 pid 4242, lock {held.record.id}" in blocked.stderr
        wrong = workspace.run("force-unlock", "nope", env=env)
        assert wrong.rc == 1 and "not nope; nothing removed" in wrong.stderr
        freed = workspace.run("force-unlock", held.record.id, env=env)
        assert freed.rc == 0 and f"removed lock {held.record.id} held by ci@runner-7 pid 4242" in freed.stdout
        assert workspace.run("apply", env=env).rc == 0
        held.release()  # its record is gone: release touches nothing
    finally:
        del os.environ["RECONCILE_LOCK_DIR"]


def test_audit_trail_and_changed_by(workspace, sandbox):
    write_team(workspace, 2)
    assert workspace.run("apply", env=workspace.env(RECONCILE_ACTOR="octocat")).rc == 0
    write_team(workspace, 1)
    assert workspace.run("apply", env=workspace.env(RECONCILE_ACTOR="octocat")).rc == 0
    lines = [json.loads(line) for line in (workspace.root / "audit.jsonl").read_text().splitlines()]
    # The users first, then the two creates; each group runs in parallel, so its lines come in either order.
    assert sorted((e["change"], e["developer"], e["result"]) for e in lines[:4]) == [
        ("create", "dev-00", "ok"), ("create", "dev-01", "ok"), ("create-user", "dev-00", "ok"),
        ("create-user", "dev-01", "ok")]
    assert [(e["change"], e["developer"], e["result"]) for e in lines[4:]] == [
        ("delete", "dev-01", "ok"), ("delete-user", "dev-01", "ok")]
    assert {e["actor"] for e in lines} == {"octocat"}
    assert len(lines[4]["token_prefix"]) == 12 and lines[4]["alias"] == "claude-code-dev-01"
    assert set(sandbox.server.changed_by) == {"octocat"}


def test_import_writes_a_roster_that_adopts_in_place(workspace, sandbox, people):
    made = {}
    for name, models in (("jane", ["claude-3-opus-20240229"]), ("john", ["claude-sonnet-4-5-20250929"])):
        out = httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                         json={"key_alias": f"claude-code-{name}", "models": models, "max_budget": 5}).json()
        made[name] = out
        workspace.known_secrets.append(out["key"])
    httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
               json={"key_alias": "ci-bot"})
    httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
               json={"key_alias": "claude-code-omar", "models": ["claude-sonnet-4.5-old"]})
    imported = workspace.run("import", "--proxy-url", sandbox.url, "--out", "roster.yaml")
    assert imported.rc == 0 and "imported 3 developer(s)" in imported.stderr
    assert "warning: omar: claude-sonnet-4.5-old is not served by this proxy" in imported.stderr, imported.stderr
    text = workspace.roster.read_text()
    assert "proxy:" not in text and "admin_recipients: []" in text and "set it to false after that first" in text
    doc = yaml.safe_load(text)
    doc["developers"] = [d for d in doc["developers"] if d["name"] != "omar"]  # the admin fixes what was flagged
    workspace.roster.write_text("# yaml-language-server: $schema=roster.schema.json\n" + yaml.safe_dump(doc))
    # Its $schema reference works outside this repository: the schema is written beside it.
    assert workspace.roster.read_text().startswith("# yaml-language-server: $schema=roster.schema.json\n")
    assert (workspace.root / "roster.schema.json").read_text() == workspace.run("schema").stdout
    doc = yaml.safe_load(workspace.roster.read_text())
    assert [(d["name"], d["models"], d["max_budget"]) for d in doc["developers"]] == [
        ("jane", ["claude-3-opus-20240229"], 5), ("john", ["claude-sonnet-4-5-20250929"], 5)]
    invalid = workspace.run("validate", "--offline")
    assert invalid.rc == 1 and invalid.stderr.count("REPLACE-with-the-developers-age-or-ssh-public-key") == 2
    for dev in doc["developers"]:
        dev["recipient"] = people[dev["name"]].recipient
    workspace.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = workspace.run("plan")
    assert "Plan: 0 to create, 0 to rotate, 2 to update, 0 to delete." in plan.stdout
    assert "4 other key(s) on the proxy, of which this plan takes over 2" in plan.stdout
    assert workspace.run("apply", "--force").rc == 0
    for out in made.values():
        row = sandbox.store.rows[out["token"]]  # the same keys, now managed
        assert row["metadata"]["managed_by"] == "litellm-roster" and row["metadata"]["delivery"] == "external"
    assert workspace.run("plan", "--detailed-exitcode").rc == 0


def test_narrow_overrides_pass_only_what_they_name(workspace, sandbox):
    """--allow-scheduled-rotations passes rotations due to keys.rotate_after, not a requested one; --allow-takeover
    passes the named developer's takeover, not another's; --force is never needed for these."""
    from datetime import timedelta

    from reconciler.core.timeutil import iso, utcnow

    write_team(workspace, 3, rotate_after="30d")
    assert workspace.run("apply").rc == 0
    later = workspace.env(RECONCILE_NOW=iso(utcnow() + timedelta(days=31)))
    braked = workspace.run("apply", "--simulated-clock", env=later)
    assert braked.rc == 4 and "Too many rotations: 3 of 3 managed keys (all of them) (--allow-scheduled-rotations " \
        "passes them, each due to keys.rotate_after)" in braked.stderr, braked.stderr
    doc = yaml.safe_load(workspace.roster.read_text())
    doc["defaults"]["rotate"] = iso(utcnow() + timedelta(days=1))  # rotations asked for: not scheduled ones
    workspace.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    asked = workspace.run("apply", "--simulated-clock", "--allow-scheduled-rotations", env=later)
    assert asked.rc == 4 and "Too many rotations: 3 of 3" in asked.stderr and "(--allow-sched" not in asked.stderr
    del doc["defaults"]["rotate"]
    workspace.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    old = {r["token"] for r in managed_keys(sandbox)}
    assert workspace.run("apply", "--simulated-clock", "--allow-scheduled-rotations", env=later).rc == 0
    assert not old & {r["token"] for r in managed_keys(sandbox)}



def test_allow_takeover_passes_only_the_named_takeover(workspace, sandbox):
    import httpx
    from helpers import MASTER

    for name in ("dev-00", "dev-01"):
        made = httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                          json={"key_alias": f"claude-code-{name}", "models": ["claude-3-opus-20240229"]}).json()
        workspace.known_secrets.append(made["key"])
    write_team(workspace, 2)
    one = workspace.run("apply", "--adopt", "dev-00", "dev-01", "--allow-takeover", "dev-00")
    assert one.rc == 4 and "1 high-risk change(s) need --force (dev-01: takes over" in one.stderr, one.stderr
    assert "--allow-takeover dev-01 passes the takeovers alone" in one.stderr
    assert not any(r["metadata"] for r in sandbox.store.rows.values())  # nothing taken over
    both = workspace.run("apply", "--adopt", "dev-00", "dev-01", "--allow-takeover", "dev-00", "dev-01")
    assert both.rc == 0, both.stdout + both.stderr
    assert all(r["metadata"].get("managed_by") == "litellm-roster" for r in sandbox.store.rows.values())
