"""Nothing a pull request commits, and nothing another local user plants, makes the tool write outside its tree or
spend minutes on a file (docs/security.md, "Delivery stays inside the repository"). Against the sandbox: the files
are the tool's own business, whatever the proxy."""

from __future__ import annotations

import hashlib
import os
import pwd
import resource
import subprocess

from helpers import RECONCILE

from reconciler.core.addresses import normalize_url


def test_a_committed_audit_symlink_is_refused_and_its_target_untouched(workspace, sandbox, tmp_path_factory):
    victim = tmp_path_factory.mktemp("elsewhere") / "victim.txt"
    victim.write_text("precious\n")
    workspace.write_roster([{"name": "jane"}])
    (workspace.root / "audit.jsonl").symlink_to(victim)
    applied = workspace.run("apply")
    assert applied.rc == 1 and "audit.jsonl: it is a symlink" in applied.stderr, applied.stdout + applied.stderr
    assert victim.read_text() == "precious\n"
    assert not sandbox.store.rows  # refused before any change


def test_a_lock_directory_made_by_another_user_is_refused(workspace, sandbox):
    nobody = pwd.getpwnam("nobody")
    locks = workspace.root / "shared-locks"
    locks.mkdir(mode=0o777)
    os.chown(locks, nobody.pw_uid, nobody.pw_gid)
    workspace.write_roster([{"name": "jane"}])
    applied = workspace.run("apply", env=workspace.env(RECONCILE_LOCK_DIR=str(locks)))
    assert applied.rc != 0 and "is not a directory of this user's" in applied.stderr, applied.stderr
    assert not sandbox.store.rows


def test_a_planted_symlink_in_the_lock_directory_is_not_written_through(workspace, sandbox, tmp_path_factory):
    victim = tmp_path_factory.mktemp("elsewhere") / "victim.txt"
    victim.write_text("precious\n")
    workspace.write_roster([{"name": "jane"}])
    locks = workspace.root / ".locks"
    locks.mkdir(mode=0o700)
    stem = hashlib.sha256(normalize_url(workspace.url).encode()).hexdigest()[:16]
    (locks / f"{stem}.tmp").symlink_to(victim)
    (locks / f"{stem}.lock.guard").symlink_to(victim)
    applied = workspace.run("apply")
    assert victim.read_text() == "precious\n", applied.stdout + applied.stderr


def test_a_key_file_that_is_a_yaml_bomb_is_a_problem_not_minutes(workspace, sandbox):
    """500 bytes of nested aliases: plain YAML expands them for minutes and gigabytes. Under a 1 GB address-space
    limit the plan must still finish and name the file."""
    workspace.write_roster([{"name": "jane"}])
    workspace.keys.mkdir()
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    rows += ["developer: jane", "sops:", "    age:", "        - recipient: *a8"]  # read as text: expanded
    (workspace.keys / "jane.sops.yaml").write_text("\n".join(rows) + "\n")

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    done = subprocess.run([RECONCILE, "plan"], cwd=workspace.root, env=workspace.env(), capture_output=True,
                          text=True, timeout=120, preexec_fn=limited)
    workspace.outputs += [done.stdout, done.stderr]
    assert done.returncode == 0, done.stderr
    assert "a fresh key replaces keys/jane.sops.yaml" in done.stdout, done.stdout
