"""deploy/: the Kubernetes base, and its optional apply component, as shipped. The manifests validate offline
against Kubernetes' own schemas, the jobs need and get no Kubernetes API access, and the containers' commands, run
as written, see the whole roster repository: after an apply whose key files were committed, the drift check finds
nothing to do (the old ConfigMap-only job reported every key as drift), and a refused push loses no key."""

from __future__ import annotations

import re
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
    component = sorted(str(p) for p in (DEPLOY / "apply").glob("*.yaml") if p.name != "kustomization.yaml")
    files = [*base, *component, str(DEPLOY / "operator" / "rbac.yaml")]
    done = subprocess.run([validate, "--strict", *files], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count("passed") == len(files), done.stdout + done.stderr
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(Path(f).name for f in base)
    parts = yaml.safe_load((DEPLOY / "apply" / "kustomization.yaml").read_text())
    assert parts["kind"] == "Component" and sorted(parts["resources"]) == sorted(Path(f).name for f in component)


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


def _in_pod(text: str, root: Path) -> str:
    """A container's paths (/repo, /unpushed, /tmp) on the test's directories, in one pass."""
    return re.sub(r"(?<![\w./-])/(repo|unpushed|tmp)\b", lambda m: str(root / m.group(1)), text)


def _pod(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _env(container: dict, root: Path, settings: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """The container's environment as the manifest builds it, from the settings ConfigMap and the Secrets."""
    out = {"PATH": f"{BIN}:/usr/bin:/bin"}
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        out[item["name"]] = settings[source["configMapKeyRef"]["key"]] if "configMapKeyRef" in source else \
            secrets[source["secretKeyRef"]["key"]] if "secretKeyRef" in source else _in_pod(item["value"], root)
    return out


def _run_pod(pod: dict, root: Path, settings: dict[str, str], secrets: dict[str, str]) -> subprocess.CompletedProcess:
    """The init container's clone, then the main container, each as the manifest writes it, on fresh volumes."""
    for volume in ("repo", "tmp"):
        (root / volume).mkdir(parents=True)
    (clone,), (main,) = pod["initContainers"], pod["containers"]
    cloned = subprocess.run([*clone["command"], _in_pod(clone["args"][0], root)],
                            env=_env(clone, root, settings, secrets), capture_output=True, text=True)
    assert cloned.returncode == 0, cloned.stderr
    command = main.get("command") or [str(BIN / "reconcile")]  # the image's entrypoint
    return subprocess.run([*command, *(_in_pod(a, root) for a in main["args"])], capture_output=True, text=True,
                          env=_env(main, root, settings, secrets), cwd=_in_pod(main.get("workingDir", "/tmp"), root))


def _roster_origin(tmp_path: Path, workspace) -> tuple[Path, list[str]]:
    """A bare repository holding jane's roster, and the git command of the workspace that pushes to it."""
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    workspace.write_roster([{"name": "jane"}])
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(workspace.root)]
    for args in (["init", "-q", "-b", "main"], ["remote", "add", "origin", str(origin)], ["add", "roster.yaml"],
                 ["commit", "-q", "-m", "roster"], ["push", "-q", "origin", "main"]):
        subprocess.run([*git, *args], check=True)
    return origin, git


def test_the_shipped_plan_job_sees_the_whole_roster_repository(tmp_path, workspace, sandbox):
    """The CronJob's containers, run as written with the kustomization's settings pointed at a local repository
    and the sandbox: drift is exit 2; once apply's key files are committed, the next run finds nothing to do."""
    origin, git = _roster_origin(tmp_path, workspace)
    settings = {"repository": f"file://{origin}", "branch": "main", "proxy-url": sandbox.url, "environment": ""}
    secrets = {"viewer-key": MASTER, "proof-key": PROOF_KEY}

    def run_job() -> int:
        done = _run_pod(_pod(DEPLOY / "cronjob-plan.yaml"), tmp_path / f"pod-{len(list(tmp_path.glob('pod-*')))}",
                        settings, secrets)
        workspace.outputs += [done.stdout, done.stderr]
        return done.returncode

    assert run_job() == 2  # jane has no key yet: drift
    assert workspace.run("apply").rc == 0
    # What the apply workflow commits: keys/ and the audit trail.
    for args in (["add", "-A", "keys", "audit.jsonl"], ["commit", "-q", "-m", "keys"],
                 ["push", "-q", "origin", "main"]):
        subprocess.run([*git, *args], check=True)
    assert run_job() == 0  # the whole repository, key files included: no drift


def test_the_apply_component_keeps_what_a_refused_push_would_lose(tmp_path, workspace, sandbox):
    """The apply CronJob's commands as written: a push the repository refuses leaves the key files on the unpushed
    volume and fails the job; the next run puts them back (same key, no rotation) and pushes them."""
    pod = _pod(DEPLOY / "apply" / "cronjob-apply.yaml")
    assert pod["automountServiceAccountToken"] is False
    assert {v["name"] for v in pod["volumes"]} >= {"unpushed"}
    origin, _ = _roster_origin(tmp_path, workspace)
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'refusing: protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    settings = {"repository": f"file://{origin}", "branch": "main", "proxy-url": sandbox.url, "environment": ""}
    secrets = {"master-key": MASTER, "proof-key": PROOF_KEY}
    unpushed = tmp_path / "unpushed"
    unpushed.mkdir()

    def run_job() -> subprocess.CompletedProcess[str]:
        root = tmp_path / f"pod-{len(list(tmp_path.glob('pod-*')))}"
        root.mkdir()
        (root / "unpushed").symlink_to(unpushed)  # the claim outlives the pod
        done = _run_pod(pod, root, settings, secrets)
        workspace.outputs += [done.stdout, done.stderr]
        return done

    refused = run_job()
    assert refused.returncode == 1 and "could not push the key files" in refused.stderr, refused.stderr
    kept = yaml.safe_load((unpushed / "keys" / "jane.sops.yaml").read_text())["token_sha256"]
    hook.unlink()
    again = run_job()
    assert again.returncode == 0 and "jane: recover-file" in again.stdout, again.stdout + again.stderr
    assert "rotate" not in again.stdout.split("Plan:")[0] and len(sandbox.store.rows) == 1
    pushed = subprocess.run(["git", "-C", str(origin), "show", "main:keys/jane.sops.yaml"], capture_output=True,
                            text=True, check=True).stdout
    assert yaml.safe_load(pushed)["token_sha256"] == kept and not (unpushed / "keys").exists()
