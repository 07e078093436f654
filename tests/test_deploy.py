"""deploy/: the Kubernetes base as shipped. Its manifests validate offline against Kubernetes' own schemas, the plan
job needs and gets no Kubernetes API access, and its two containers' commands, run as written (the init container's
clone, then the plan), see the whole roster repository: after an apply whose key files were committed, the shipped
drift check finds nothing to do, where the old ConfigMap-only job reported every key as drift."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import BIN, MASTER, PROOF_KEY

DEPLOY = Path(__file__).parents[1] / "deploy"


def _cronjob() -> dict:
    return yaml.safe_load((DEPLOY / "cronjob-plan.yaml").read_text())


def test_the_manifests_validate_against_kubernetes_schemas():
    validate = shutil.which("kubernetes-validate", path=str(BIN))
    if validate is None:
        pytest.skip("kubernetes-validate is in the lint group: pip install --group lint")
    base = sorted(str(p) for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    files = [*base, str(DEPLOY / "operator" / "rbac.yaml")]
    done = subprocess.run([validate, "--strict", *files], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count("passed") == len(files), done.stdout + done.stderr
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(Path(f).name for f in base)


def test_the_plan_job_runs_with_least_privilege():
    job = _cronjob()["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert job["activeDeadlineSeconds"] and job["backoffLimit"] == 0 and _cronjob()["spec"]["timeZone"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"]
    for container in pod["initContainers"] + pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
        assert context["capabilities"] == {"drop": ["ALL"]}
    (plan,) = pod["containers"]
    env = {e["name"]: e for e in plan["env"]}
    # The credential is a viewer key from the operator's Secret; the master key is nowhere in the plan job.
    assert env["LITELLM_VIEWER_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "litellm-roster-viewer"
    assert "LITELLM_MASTER_KEY" not in env and "MASTER" not in (DEPLOY / "cronjob-plan.yaml").read_text()
    service_account = yaml.safe_load((DEPLOY / "serviceaccount.yaml").read_text())
    assert service_account["automountServiceAccountToken"] is False
    assert not list(DEPLOY.glob("*rbac*")) and "Role" not in (DEPLOY / "kustomization.yaml").read_text()


def test_the_shipped_plan_job_sees_the_whole_roster_repository(tmp_path, workspace, sandbox):
    """The CronJob's containers, run as written with the kustomization's settings pointed at a local repository
    and the sandbox: drift is exit 2; once apply's key files are committed, the next run finds nothing to do."""
    pod = _cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    workspace.write_roster([{"name": "jane"}])
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(workspace.root)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "remote", "add", "origin", str(origin)], check=True)

    def push() -> None:
        subprocess.run([*git, "add", "-A", "roster.yaml", *(["keys"] if workspace.keys.exists() else [])],
                       check=True)
        subprocess.run([*git, "commit", "-q", "-m", "roster"], check=True)
        subprocess.run([*git, "push", "-q", "origin", "main"], check=True)

    settings = {"repository": f"file://{origin}", "branch": "main", "proxy-url": sandbox.url, "environment": ""}
    secrets = {"viewer-key": MASTER, "proof-key": PROOF_KEY}

    def env_of(container: dict, root: Path) -> dict[str, str]:
        out = {"PATH": f"{BIN}:/usr/bin:/bin"}
        for item in container.get("env", []):
            source = item.get("valueFrom", {})
            if "configMapKeyRef" in source:
                out[item["name"]] = settings[source["configMapKeyRef"]["key"]]
            elif "secretKeyRef" in source:
                out[item["name"]] = secrets[source["secretKeyRef"]["key"]]
            else:
                out[item["name"]] = item["value"].replace("/tmp", str(root / "tmp"))
        return out

    def run_job() -> int:
        root = tmp_path / f"pod-{len(list(tmp_path.glob('pod-*')))}"  # the pod's volumes, fresh for each run
        for volume in ("repo", "tmp"):
            (root / volume).mkdir(parents=True)
        (clone,), (plan,) = pod["initContainers"], pod["containers"]
        script = clone["args"][0].replace("/repo", str(root / "repo"))
        cloned = subprocess.run([*clone["command"], script], env=env_of(clone, root), capture_output=True, text=True)
        assert cloned.returncode == 0, cloned.stderr
        args = [a.replace("/repo", str(root / "repo")) for a in plan["args"]]
        done = subprocess.run([str(BIN / "reconcile"), *args], env=env_of(plan, root), capture_output=True,
                              text=True, cwd=plan["workingDir"].replace("/repo", str(root / "repo")))
        workspace.outputs += [done.stdout, done.stderr]
        return done.returncode

    push()
    assert run_job() == 2  # jane has no key yet: drift
    assert workspace.run("apply").rc == 0
    push()  # what the apply workflow commits: keys/ and the audit trail
    assert run_job() == 0  # the whole repository, key files included: no drift
