"""No key lost on push-back: when the apply job could not push the key files it wrote, the next apply puts them back
from the run's roster-keys artifact (--recover-from) instead of rotating everyone again; only files whose proof
verifies and whose key is live come back."""

from __future__ import annotations

import json
import shutil

import yaml


def _lose_push(ws, tmp_path, names):
    """What a refused push leaves: the files in the artifact, not in the repository."""
    artifact = tmp_path / "artifact"
    for name in names:
        target = artifact / "keys" / f"{name}.sops.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(ws.keys / f"{name}.sops.yaml"), target)
    return artifact


def test_files_a_push_lost_come_back_without_a_new_secret(workspace, sandbox, tmp_path):
    workspace.write_roster([{"name": "jane"}, {"name": "john"}])
    assert workspace.run("apply").rc == 0
    secrets = {n: workspace.decrypt(n) for n in ("jane", "john")}
    artifact = _lose_push(workspace, tmp_path, ["jane", "john"])
    assert "2 to rotate" in workspace.run("plan").stdout  # without the artifact, both would get new secrets
    plan = workspace.run("plan", "--recover-from", str(artifact))
    assert plan.rc == 0 and plan.stdout.count("recover-file") == 2 and "0 to rotate" in plan.stdout, plan.stdout
    assert "2 key file(s) an earlier apply could not push to put back." in plan.stdout
    applied = workspace.run("apply", "--recover-from", str(artifact))
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert {n: workspace.decrypt(n) for n in ("jane", "john")} == secrets
    assert "No changes." in workspace.run("plan", "--recover-from", str(artifact)).stdout  # a stale artifact: nothing


def test_an_artifact_file_without_its_proof_is_not_put_back(workspace, sandbox, tmp_path):
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0
    artifact = _lose_push(workspace, tmp_path, ["jane"])
    planted = artifact / "keys" / "jane.sops.yaml"
    doc = yaml.safe_load(planted.read_text())
    doc["proof"] = "v1:2026-01-01T00:00:00Z:" + "0" * 64
    planted.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = workspace.run("plan", "--recover-from", str(artifact))
    assert f"{artifact}/keys/jane.sops.yaml is not recovered: its proof does not verify" in plan.stdout, plan.stdout
    assert "recover-file" not in plan.stdout and "1 to rotate" in plan.stdout
    off = workspace.run("plan", "--recover-from", str(artifact), env=workspace.env(RECONCILE_PROOF_KEY=""))
    assert "only a proven file is put back" in off.stdout, off.stdout


def test_a_recovery_leaves_the_reviewed_checksum_as_it_was(workspace, sandbox, tmp_path):
    """The plan reviewed on the pull request saw the files in place; putting back files a failed push lost must not
    make apply on merge refuse that plan."""
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0
    workspace.write_roster([{"name": "jane", "models": ["claude-haiku-4-5-20251001"]}])  # the pull request's change
    reviewed = json.loads(workspace.run("plan", "--format", "json").stdout)
    artifact = _lose_push(workspace, tmp_path, ["jane"])
    recovering = json.loads(workspace.run("plan", "--format", "json", "--recover-from", str(artifact)).stdout)
    assert [c["kind"] for c in recovering["changes"]][0] == "recover-file" and len(recovering["changes"]) > 1
    checksum = reviewed["checksum"]
    assert recovering["checksum"] == checksum
    assert workspace.run("apply", "--recover-from", str(artifact), "--checksum", checksum).rc == 0
    assert (workspace.keys / "jane.sops.yaml").is_file()
