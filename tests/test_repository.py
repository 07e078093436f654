"""reconcile init: a roster-only repository whose workflows call the tool's reusable workflows, pinned to a commit;
and the reusable plan workflow's own scripts, run as written in such a repository against the sandbox (no GitHub:
the pull request's head is fetched from a local repository)."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from github_fake import REPO, TOKEN
from helpers import BIN, MASTER, PROOF_KEY, RECONCILE, recipient_of

REF = "0123456789abcdef0123456789abcdef01234567"
REUSABLE = Path(__file__).parents[1] / ".github" / "workflows"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def git(repo: Path, *args: str) -> str:
    done = run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args, cwd=repo)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_init_writes_a_roster_repository_pinned_to_one_commit(tmp_path):
    done = run(RECONCILE, "init", str(tmp_path / "roster"), "--tool-repo", "acme/litellm-roster", "--ref", REF,
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "roster"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted([
        ".github/workflows/roster-apply.yml", ".github/workflows/roster-drift.yml",
        ".github/workflows/roster-plan.yml", ".gitignore", "README.md", "keys/.gitkeep", "roster.schema.json",
        "roster.yaml"])
    assert run(RECONCILE, "validate", "--offline", cwd=root).returncode == 0  # valid as it is
    for name in ("plan", "apply", "drift"):
        doc = yaml.safe_load((root / ".github" / "workflows" / f"roster-{name}.yml").read_text())
        (job,) = doc["jobs"].values()
        assert job["uses"] == f"acme/litellm-roster/.github/workflows/reusable-{name}.yml@{REF}"
        assert job["with"]["tool-repository"] == "acme/litellm-roster" and job["with"]["tool-ref"] == REF
        assert (REUSABLE / f"reusable-{name}.yml").exists()  # what they call exists in the tool's repository
    assert REF in (root / "README.md").read_text() and ".env" in (root / ".gitignore").read_text()
    for tool, args in (("check-jsonschema", ["--builtin-schema", "vendor.github-workflows"]),
                       ("zizmor", ["--offline", "--quiet"])):
        if (BIN / tool).exists():
            checked = run(str(BIN / tool), *args, *map(str, (root / ".github" / "workflows").glob("*.yml")), cwd=root)
            assert checked.returncode == 0, checked.stdout + checked.stderr
    again = run(RECONCILE, "init", str(root), "--ref", REF, cwd=tmp_path)
    assert again.returncode == 1 and "pass --overwrite" in again.stderr
    branch = run(RECONCILE, "init", str(tmp_path / "other"), "--ref", "main", cwd=tmp_path)
    assert branch.returncode == 1 and "is not a full commit SHA" in branch.stderr


def _step(name: str) -> str:
    doc = yaml.safe_load((REUSABLE / "reusable-plan.yml").read_text())
    return next(s["run"] for s in doc["jobs"]["plan"]["steps"] if s.get("name") == name)


@pytest.fixture
def roster_repo(tmp_path) -> Path:
    origin = tmp_path / "origin"
    assert run(RECONCILE, "init", str(origin), "--ref", REF, cwd=tmp_path).returncode == 0
    git(origin, "init", "-q", "-b", "main")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "init")
    return origin


def test_the_plan_workflow_runs_in_a_roster_repository(roster_repo, sandbox, tmp_path):
    base = git(roster_repo, "rev-parse", "HEAD")
    git(roster_repo, "checkout", "-q", "-b", "docs")
    (roster_repo / "NOTES.md").write_text("no roster change\n")
    git(roster_repo, "add", "-A")
    git(roster_repo, "commit", "-q", "-m", "docs")
    docs = git(roster_repo, "rev-parse", "HEAD")
    git(roster_repo, "checkout", "-q", "-b", "jane", base)
    text = (roster_repo / "roster.yaml").read_text().replace(
        "developers: []\n", f"developers:\n  - name: jane\n    recipient: {recipient_of('jane')}\n")
    (roster_repo / "roster.yaml").write_text(text)
    git(roster_repo, "commit", "-q", "-am", "add jane")
    head = git(roster_repo, "rev-parse", "HEAD")

    def plan_job(head_sha: str) -> str:
        work = tmp_path / f"work-{head_sha[:7]}"
        git(tmp_path, "clone", "-q", str(roster_repo), str(work))
        git(work, "checkout", "-q", base)  # the base branch, as the job checks it out
        env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "HEAD_SHA": head_sha,
               "HEAD_REPO": f"file://{roster_repo}", "BASE_SHA": base, "TOKEN": "not-a-token",
               "GITHUB_ENV": str(work / "github.env")}
        fetched = run("bash", "-e", "-c", _step("take the roster and key files from the pull request, as data"),
                      cwd=work, env=env)
        assert fetched.returncode == 0, fetched.stderr
        unchanged = "unchanged=true" in ((work / "github.env").read_text() if (work / "github.env").exists() else "")
        if not unchanged:
            planned = run("bash", "-e", "-c", _step("plan (read-only credential)"), cwd=work, env={
                **env, "LITELLM_VIEWER_KEY": MASTER, "LITELLM_PROXY_URL": sandbox.url})
            assert planned.returncode == 0, planned.stderr
        return (work / "plan.md").read_text()

    assert "No roster change in this pull request" in plan_job(docs)
    plan = plan_job(head)
    assert "**Plan: 1 to create, 0 to rotate, 0 to update, 0 to delete. Users: 1 to create" in plan, plan


def _roster_origin(tmp_path: Path, people) -> tuple[Path, Path]:
    """A roster repository made by init with one developer, pushed to a bare origin: (origin, seed clone)."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    seed = tmp_path / "seed"
    assert run(RECONCILE, "init", str(seed), "--ref", REF, cwd=tmp_path).returncode == 0
    text = (seed / "roster.yaml").read_text().replace(
        "developers: []\n", f"developers:\n  - name: jane\n    recipient: {people['jane'].recipient}\n")
    (seed / "roster.yaml").write_text(text)
    git(seed, "init", "-q", "-b", "main")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "roster")
    git(seed, "push", "-q", str(origin), "main")
    return origin, seed


def _apply_step(name: str) -> str:
    doc = yaml.safe_load((REUSABLE / "reusable-apply.yml").read_text())
    return next(s["run"] for s in doc["jobs"]["apply"]["steps"] if s.get("name") == name)


def _job_env(tmp_path: Path, sandbox) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LITELLM_MASTER_KEY": MASTER,
            "LITELLM_PROXY_URL": sandbox.url, "RECONCILE_LOCK_DIR": str(tmp_path / "locks"),
            "RECONCILE_PROOF_KEY": PROOF_KEY, "ACTOR": "ci-bot", "ENVIRONMENT": "", "TOKEN": "not-a-token"}


def test_the_apply_workflow_commits_the_key_files_onto_a_main_that_moved(tmp_path, sandbox, people):
    """The reusable apply workflow's commit step, run as written in a roster repository made by init: the key files
    and audit trail are committed and pushed, rebased onto a main that moved while apply ran; nothing is lost."""
    origin, seed = _roster_origin(tmp_path, people)
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))  # the job's checkout
    env = _job_env(tmp_path, sandbox)
    applied = run(RECONCILE, "apply", cwd=work, env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    (work / "apply.txt").write_text(applied.stdout)
    git(seed, "commit", "-q", "--allow-empty", "-m", "meanwhile, on main")  # main moves while apply runs
    git(seed, "push", "-q", str(origin), "main")
    committed = run("bash", "-e", "-c", _apply_step("commit key files and the audit trail"), cwd=work, env=env)
    assert committed.returncode == 0, committed.stdout + committed.stderr
    log = git(origin, "log", "--format=%s", "main")
    assert log.splitlines()[:2] == ["reconcile apply by ci-bot: 0 failed [skip ci]", "meanwhile, on main"]
    files = git(origin, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert "keys/jane.sops.yaml" in files and "audit.jsonl" in files


def test_a_refused_push_loses_no_key(tmp_path, sandbox, people, github):
    """The apply job's push refused (a hook on the origin, as a branch rule would): the step fails at once and
    loudly, and the run keeps the key files as its roster-keys artifact. The next run fetches that artifact, puts the
    files back without a new secret, and pushes them."""
    origin, _ = _roster_origin(tmp_path, people)
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'refusing: protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    env = {**_job_env(tmp_path, sandbox), "GITHUB_API_URL": github.url, "GITHUB_REPOSITORY": REPO,
           "GITHUB_TOKEN": TOKEN, "API": github.url, "REPO": REPO, "NAME": "roster-keys", "CHECKSUM": "",
           "FORCE": "", "ON_MERGE": "", "PUSH_CHECK": "main", "TOKEN": TOKEN}
    first = tmp_path / "first"
    git(tmp_path, "clone", "-q", str(origin), str(first))
    applied = run("bash", "-e", "-c", _apply_step("apply"), cwd=first, env=env)
    assert applied.returncode == 0 and "jane: create" in applied.stdout, applied.stdout + applied.stderr
    token = yaml.safe_load((first / "keys" / "jane.sops.yaml").read_text())["token_sha256"]
    pushed = run("bash", "-e", "-c", _apply_step("commit key files and the audit trail"), cwd=first, env=env)
    assert pushed.returncode == 1 and "could not push the key files" in pushed.stdout, pushed.stdout + pushed.stderr
    artifact = io.BytesIO()  # what upload-artifact keeps: keys/ and the audit trail, paths as in the repository
    with zipfile.ZipFile(artifact, "w") as archive:
        for path in [*first.glob("keys/**/*"), *first.glob("audit*.jsonl")]:
            if path.is_file():
                archive.write(path, path.relative_to(first).as_posix())
    github.artifacts = [("roster-keys", "main", artifact.getvalue()), ("roster-keys", "mallory-branch", b"")]
    hook.unlink()

    second = tmp_path / "second"  # the next run: main has no key file for jane
    git(tmp_path, "clone", "-q", str(origin), str(second))
    assert not (second / "keys" / "jane.sops.yaml").exists()
    fetched = run("bash", "-e", "-c", _apply_step("fetch the key files an earlier run could not push"), cwd=second,
                  env=env)
    assert fetched.returncode == 0 and (second / ".recovered" / "keys" / "jane.sops.yaml").is_file(), fetched.stderr
    again = run("bash", "-e", "-c", _apply_step("apply"), cwd=second, env=env)
    assert again.returncode == 0 and "jane: recover-file" in again.stdout, again.stdout + again.stderr
    assert "rotate" not in again.stdout.split("Plan:")[0] and len(sandbox.store.rows) == 1
    assert run("bash", "-e", "-c", _apply_step("commit key files and the audit trail"), cwd=second,
               env=env).returncode == 0
    assert yaml.safe_load(git(origin, "show", "main:keys/jane.sops.yaml"))["token_sha256"] == token
    assert ".recovered" not in git(origin, "ls-tree", "-r", "--name-only", "main")
