"""A hostile or broken proxy gets a one-line error, and no secret reaches any output.

The master key here is not `sk-`-shaped (LiteLLM accepts any string), so only real redaction can hide it. Every run
of `plan` and `apply` against each misbehaving route is scanned: stdout, stderr, the audit log, the plan files and
what the key files hold in the clear, for the master key and every key the run made. No run may print a traceback,
pass its time limit or grow past 200 MB."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from helpers import RECONCILE, SOPS, Workspace
from hostile import HostileProxy

from litellm_roster_sandbox import start_sandbox

MASTER = "MasterSecret-correct-horse-battery-42"  # not sk-shaped
MAX_RSS_KB = 200 * 1024
TIME_LIMIT = 60

PLAN_ROUTES = ("/model/info", "/key/list", "/team/list")
APPLY_ROUTES = ("/key/info", "/model/info", "/key/list", "/key/generate", "/v1/models", "/key/update")
SHAPES = ("echo-200", "echo-400", "echo-500", "list-not-object", "wrong-types")
CASES = ([("plan", r, m) for r in PLAN_ROUTES for m in SHAPES]
         + [("apply", r, m) for r in APPLY_ROUTES for m in SHAPES]
         + [("plan", "/key/list", "lying-paging"), ("apply", "/key/list", "lying-paging"),
            ("plan", "/key/list", "slow-drip"), ("apply", "/key/generate", "slow-drip"),
            ("plan", "/key/list", "huge-body"), ("apply", "/key/generate", "huge-body")])


@pytest.fixture(scope="module")
def upstream():
    with start_sandbox(master_key=MASTER) as sandbox:
        yield sandbox


@pytest.fixture
def hostile(upstream):
    proxy = HostileProxy(upstream.url)
    yield proxy
    proxy.stop()


def run(ws: Workspace, url: str, *args: str) -> tuple[int, str, str, int]:
    """The installed command, and its own peak RSS in KB (os.wait4 reaps it, so the rusage is the child's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "SOPS_", "RECONCILE_"))}
    env.update({"LITELLM_MASTER_KEY": MASTER, "LITELLM_PROXY_URL": url, "RECONCILE_LOCK_DIR": str(ws.root / ".locks")})
    process = subprocess.Popen([RECONCILE, *args, "--timeout", "2"], cwd=ws.root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    streams: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: streams.__setitem__(n, f.read()))
               for n, f in (("out", process.stdout), ("err", process.stderr))]
    for reader in readers:
        reader.start()
    timer = threading.Timer(TIME_LIMIT, process.kill)
    timer.start()
    _, status, usage = os.wait4(process.pid, 0)
    timer.cancel()
    for reader in readers:
        reader.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    out, err = streams["out"].decode(errors="replace"), streams["err"].decode(errors="replace")
    ws.outputs += [out, err]
    assert process.returncode != -9, f"reconcile {' '.join(args)} ran past {TIME_LIMIT} s"
    return process.returncode, out, err, usage.ru_maxrss


def decrypted_secrets(ws: Workspace) -> list[str]:
    found = []
    env = {**os.environ, "SOPS_AGE_KEY_FILE": str(ws.people["admin"].identity_file)}
    for path in sorted(ws.keys.glob("*.sops.yaml")) if ws.keys.is_dir() else []:
        done = subprocess.run([SOPS, "decrypt", "--extract", '["api_key"]', str(path)], capture_output=True,
                              text=True, env=env, timeout=60)
        if done.returncode == 0:
            found.append(done.stdout.strip())
    return found


@pytest.mark.parametrize(("command", "route", "mode"), CASES, ids=[f"{c}-{r}-{m}" for c, r, m in CASES])
def test_hostile_answers(tmp_path, people, upstream, hostile, command, route, mode):
    ws = Workspace(tmp_path, hostile.url, people)
    ws.write_roster([{"name": "jane"}, {"name": "john"}], proxy_url=False)
    if command == "apply":
        # jane has a key already (so apply updates it); john is new (so apply creates one).
        upstream.store.clear()
        ws.write_roster([{"name": "jane", "models": ["claude-3-opus-20240229"]}], proxy_url=False)
        rc, out, err, _ = run(ws, hostile.url, "apply")
        assert rc == 0, out + err
        ws.write_roster([{"name": "jane"}, {"name": "john"}], proxy_url=False)
    hostile.misbehave(route, mode)
    args = ("plan", "--out", "plan.json", "--format", "markdown") if command == "plan" else ("apply",)
    rc, out, err, rss = run(ws, hostile.url, *args)
    assert hostile.server.hits > 0, f"{route} was never called"
    texts = [out, err] + [p.read_text(errors="replace") for p in tmp_path.glob("*") if p.is_file()]
    texts += [p.read_text(errors="replace") for p in ws.keys.glob("*")] if ws.keys.is_dir() else []
    secrets = [MASTER, *upstream.store.plaintexts, *decrypted_secrets(ws)]
    for secret in secrets:
        assert not any(secret in text for text in texts), f"{secret[:6]}... leaked"
    assert "Traceback" not in out + err
    assert rc in (0, 1), (rc, out, err)
    if command == "plan" or not out:
        assert rc == 1 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    if rc == 1 and out:  # an apply whose changes failed: each outcome printed, with a summary
        assert "FAILED" in out and "Apply finished with failures" in out
    assert rss < MAX_RSS_KB, f"peak RSS {rss // 1024} MB"
