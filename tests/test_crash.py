"""SIGKILL apply at every step boundary of a create and of a rotation, re-run, and check nothing was lost."""

from __future__ import annotations

import pytest
from helpers import check_invariant, managed_keys, sandbox_models

TEAM = [{"name": "jane"}, {"name": "john"}]


def killed(ws, step: str, *args: str):
    result = ws.run("apply", *args, env=ws.env(RECONCILE_CRASH_AT=step))
    assert result.rc == -9, (result.rc, result.stdout, result.stderr)  # really SIGKILLed, not an exception
    return result


@pytest.mark.parametrize("step", ["after-file", "after-register"])
def test_create_killed_then_rerun(workspace, sandbox, step):
    workspace.write_roster(TEAM)
    killed(workspace, f"{step}:jane")
    rerun = workspace.run("apply")
    assert rerun.rc == 0, rerun.stdout + rerun.stderr
    check_invariant(workspace, sandbox)
    assert sandbox_models(sandbox.url, workspace.decrypt("jane")) == ["claude-3-opus-20240229",
                                                                      "claude-sonnet-4-5-20250929"]


def test_orphaned_file_is_replaced_never_registered(workspace, sandbox, people):
    """A key file whose key never reached the proxy is replaced by a fresh key, even by a run that could decrypt
    it: the tool registers only secrets it has just made (a committed file could hold one its author chose)."""
    workspace.write_roster(TEAM)
    killed(workspace, "after-file:jane")
    orphan = workspace.key_file("jane")["token_sha256"]
    assert orphan not in sandbox.store.rows
    plan = workspace.run("plan")
    assert "create: no live key for this developer; a fresh key replaces keys/jane.sops.yaml" in plan.stdout
    rerun = workspace.run("apply", env=workspace.env(SOPS_AGE_KEY_FILE=str(people["admin"].identity_file)))
    assert rerun.rc == 0, rerun.stdout + rerun.stderr
    assert workspace.key_file("jane")["token_sha256"] != orphan
    assert orphan not in sandbox.store.rows
    check_invariant(workspace, sandbox)


@pytest.mark.parametrize("grace", ["0", "1h"])
@pytest.mark.parametrize("step", ["after-file", "after-retire", "after-register"])
def test_rotation_killed_then_rerun(workspace, sandbox, step, grace):
    workspace.write_roster(TEAM, grace=grace)
    assert workspace.run("apply").rc == 0
    old_secret = workspace.decrypt("jane")
    workspace.write_roster([{"name": "jane", "rotate": "2099-01-01T00:00:00Z"}, TEAM[1]], grace=grace)
    # rotate: in the future rotates any key issued before it; pin the instant so the re-run is not asked again
    killed(workspace, f"{step}:jane")
    workspace.write_roster(TEAM, grace=grace)
    rerun = workspace.run("apply")
    assert rerun.rc == 0, rerun.stdout + rerun.stderr
    check_invariant(workspace, sandbox)
    new_secret = workspace.decrypt("jane")
    assert sandbox_models(sandbox.url, new_secret) != 401
    assert new_secret != old_secret
    retiring = [r for r in managed_keys(sandbox) if "retire_at" in r["metadata"]]
    assert len(retiring) <= 1


def test_temp_files_of_a_killed_write_are_cleaned_and_ignored(workspace, sandbox):
    """A run killed inside write_atomic leaves `.jane.sops.yaml.XXXX.tmp`; the next apply removes it, and the
    delivery directory's .gitignore keeps git from committing one meanwhile."""
    import subprocess

    workspace.write_roster(TEAM)
    assert workspace.run("apply").rc == 0
    left = workspace.keys / ".jane.sops.yaml.abc123.tmp"
    left.write_text("sops output of a killed run\n")
    subprocess.run(["git", "init", "-q", str(workspace.root)], check=True)
    ignored = subprocess.run(["git", "-C", str(workspace.root), "check-ignore", "-q", str(left)])
    assert ignored.returncode == 0
    workspace.write_roster(TEAM + [{"name": "priya"}])
    assert workspace.run("apply").rc == 0
    assert not left.exists() and sorted(p.name for p in workspace.keys.iterdir()) == [
        ".gitignore", ".sops.yaml", "jane.sops.yaml", "john.sops.yaml", "priya.sops.yaml"]


def test_restore_killed_then_rerun(workspace, sandbox, people):
    """apply --restore SIGKILLed right after registering jane's key: the re-run finds it current and restores
    john's; both keep their secrets."""
    workspace.write_roster(TEAM)
    assert workspace.run("apply").rc == 0
    secrets = {name: workspace.decrypt(name) for name in ("jane", "john")}
    sandbox.store.clear()
    admin = workspace.env(SOPS_AGE_KEY_FILE=str(people["admin"].identity_file))
    result = workspace.run("apply", "--restore", env={**admin, "RECONCILE_CRASH_AT": "after-register:jane"})
    assert result.rc == -9, (result.rc, result.stdout, result.stderr)
    rerun = workspace.run("apply", "--restore", env=admin)
    assert rerun.rc == 0 and "jane: restore" not in rerun.stdout, rerun.stdout + rerun.stderr
    check_invariant(workspace, sandbox)
    assert {name: workspace.decrypt(name) for name in ("jane", "john")} == secrets
