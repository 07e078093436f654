"""Benchmarks for litellm-roster: plan at N keys, and apply with delivery of 200 keys.

    python bench/run.py                    # N = 100, 1,000, 10,000 and apply of 200 keys
    python bench/run.py --large            # also N = 100,000
    python bench/run.py --sizes 100 --apply 20 --out /tmp/smoke.json    # the CI smoke run
    python bench/run.py --target litellm --sizes 100,1000 --apply 1000   # LiteLLM's real proxy on PostgreSQL
    python bench/run.py --target litellm --compare --apply 0   # beside litellm-auto-synch-manager, same server

The LiteLLM target needs the conformance tier's virtualenv and PostgreSQL (docs/testing.md); its keys are seeded
with SQL into LiteLLM's own table, as LiteLLM writes them, because /key/generate would take minutes for 10,000.

For each N the sandbox (its own process) is seeded with N keys, 20 % of them managed by a roster that differs in a
few percent (model changes, removals, additions). Measured: `reconcile plan` wall time, HTTP requests, peak RSS of
its process; the floor (the same /key/list pages fetched by a bare sequential httpx loop); their ratio. Apply:
creating and then rotating the keys with real sops encryption, keys per second, and where the time goes.

`reconcile` is timed as users run it: installed (not editable, bytecode compiled) into a fresh virtualenv with its
runtime dependencies only, not from this checkout's development environment. `--compare` also times
litellm-auto-synch-manager (pinned below, installed the same way) planning the same keys on the same server, run
for run in turn with this tool.
Results print as a table and are written as JSON. Timing lives here, never in the test suite.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
MASTER = "sk-bench-master-key-0000"
MODELS = ["claude-sonnet-4-5-20250929", "claude-3-opus-20240229", "claude-haiku-4-5-20251001"]
MANAGED_SHARE = 0.20
def recipient(name: str, _made: dict[str, str] = {}) -> str:  # noqa: B006 - a cache on purpose
    """An age recipient of the developer's own (the roster refuses one shared by two)."""
    if name not in _made:
        import pyrage

        _made[name] = str(pyrage.x25519.Identity.generate().to_public())
    return _made[name]

ADMIN = "age1q3p0j8wz8s55vv2px960jm4cmrlvkatz6dg86t5qul4nmfwcxf2sfwcuxz"
LASM = "litellm-auto-synch-manager==1.9.1"


class Sandbox:
    name = "sandbox"

    def __init__(self, url: str):
        self.url = url

    def seed(self, rows: list[dict], users: list[dict]) -> None:
        with httpx.Client(timeout=60) as client:
            for start in range(0, max(len(rows), len(users)), 5000):
                client.post(f"{self.url}/_sandbox/seed", headers={"Authorization": f"Bearer {MASTER}"},
                            json={"keys": rows[start:start + 5000], "users": users[start:start + 5000]}
                            ).raise_for_status()

    def requests_made(self) -> int | None:
        stats = httpx.get(f"{self.url}/_sandbox/stats", headers={"Authorization": f"Bearer {MASTER}"}).json()
        return sum(n for route, n in stats["requests"].items() if not route.split()[1].startswith("/_sandbox"))


class LiteLLM:
    name = "litellm"

    def __init__(self, proxy):
        self.url, self.proxy = proxy.url, proxy

    def seed(self, rows: list[dict], users: list[dict]) -> None:
        def text(value: str | None) -> str:
            return "NULL" if value is None else "'" + value.replace("'", "''") + "'"

        def array(values: list[str]) -> str:
            return f"ARRAY[{', '.join(map(text, values))}]::text[]"

        values = ",\n".join(
            f"({text(r['token'])}, {text(r['key_alias'])}, {array(r['models'])}, {text(r.get('user_id'))}, "
            f"{text(json.dumps(r.get('metadata', {})))}::jsonb, 'default_user_id', 'default_user_id', "
            f"{text(r['created_at'])}::timestamp, {array(r.get('allowed_routes', []))})" for r in rows)
        sql = ('INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, models, user_id, metadata, created_by, '
               f"updated_by, created_at, allowed_routes) VALUES {values};")
        if users:
            sql += ('\nINSERT INTO "LiteLLM_UserTable" (user_id, user_role, models, metadata) VALUES '
                    + ",\n".join(f"({text(u['user_id'])}, {text(u['user_role'])}, {array(u['models'])}, "
                                  f"{text(json.dumps(u['metadata']))}::jsonb)" for u in users) + ";")
        self.proxy.database.psql(self.proxy.database.DATABASE, "-f", "-", stdin=sql)

    def requests_made(self) -> int | None:
        return None  # LiteLLM keeps no request count; the sandbox runs show the tool's requests


@contextlib.contextmanager
def server(target: str):
    if target == "sandbox":
        env = {**os.environ, "PYTHONPATH": str(ROOT / "sandbox")}
        proc = subprocess.Popen([sys.executable, "-m", "litellm_roster_sandbox", "--port", "0", "--master-key",
                                 MASTER], stdout=subprocess.PIPE, text=True, env=env)
        try:
            yield Sandbox(proc.stdout.readline().split()[3])
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from litellm_app import _python, running_litellm
    from postgres import bindir

    python, programs = _python(), bindir()
    if python is None or programs is None:
        raise SystemExit("the LiteLLM target needs bash tests/conformance/setup.sh and PostgreSQL (docs/testing.md)")
    with running_litellm(python, programs, MASTER, ROOT / "bench" / "litellm-models.yaml") as proxy:
        yield LiteLLM(proxy)


def seed(target, n: int) -> list[str]:
    """N keys, MANAGED_SHARE of them managed; returns the managed developer names."""
    managed = int(n * MANAGED_SHARE)
    created = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    names = [f"dev-{i:06d}" for i in range(managed)]
    rows = [{"token": hashlib.sha256(f"bench-{name}".encode()).hexdigest(), "key_alias": f"cc-{name}",
             "models": MODELS[:2], "user_id": f"roster:{name}", "created_at": created,
             "metadata": {"managed_by": "litellm-roster", "roster_name": name}, "allowed_routes": ["llm_api_routes"]}
            for name in names]
    rows += [{"token": hashlib.sha256(f"bench-svc-{i}".encode()).hexdigest(), "key_alias": f"svc-{i:06d}",
              "models": MODELS[:1], "created_at": created} for i in range(n - managed)]
    # Each developer's LiteLLM user, as apply makes it (docs/security.md, "LiteLLM identities").
    users = [{"user_id": f"roster:{name}", "user_role": "internal_user_viewer", "models": sorted(MODELS[:2]),
              "metadata": {"managed_by": "litellm-roster", "roster_name": name}} for name in names]
    target.seed(rows, users)
    return names


def write_workspace(work: Path, url: str, names: list[str]) -> dict[str, int]:
    """A roster matching the seeded keys but for a few percent, and the key files plan reads (their readable
    part only: plan never decrypts, so these are written directly rather than through sops). work/lasm holds the
    same desired keys for litellm-auto-synch-manager."""
    changed = set(names[::50])  # 2 % get another model
    removed = set(names[1::100])  # 1 % leave
    added = [f"new-{i:06d}" for i in range(max(1, len(names) // 100))]  # 1 % join
    developers = []
    for name in names:
        if name in removed:
            continue
        dev = {"name": name, "recipient": recipient(name)}
        if name in changed:
            dev["models"] = MODELS
        developers.append(dev)
    developers += [{"name": name, "recipient": recipient(name)} for name in added]
    roster = {"version": 1, "proxy": {"url": url}, "keys": {"alias": "cc-{name}", "admin_recipients": [ADMIN]},
              "defaults": {"models": MODELS[:2]}, "developers": developers}
    (work / "roster.yaml").write_text(yaml.safe_dump(roster, sort_keys=False))
    write_lasm_workspace(work / "lasm", url, developers)
    keys = work / "keys"
    keys.mkdir()
    for name in names:
        token = hashlib.sha256(f"bench-{name}".encode()).hexdigest()
        models = "".join(f"    - {m}\n" for m in sorted(MODELS[:2]))
        (keys / f"{name}.sops.yaml").write_text(  # the layout sops writes
            f"developer: {name}\nkey_alias: cc-{name}\nproxy_url: {url}\nmodels:\n{models}expires: null\n"
            f'issued_at: "2026-01-01T00:00:00Z"\ntoken_sha256: {token}\n'
            "api_key: ENC[AES256_GCM,data:AAAA,iv:BBBB,tag:CCCC,type:str]\nsops:\n    age:\n"
            f"        - recipient: {recipient(name)}\n          enc: |\n            x\n"
            f"        - recipient: {ADMIN}\n          enc: |\n            x\n"
            '    lastmodified: "2026-01-01T00:00:00Z"\n    mac_only_encrypted: true\n    version: 3.11.0\n')
    return {"updates": len(changed - removed), "deletes": len(removed), "creates": len(added)}


def write_lasm_workspace(work: Path, url: str, developers: list[dict]) -> None:
    """litellm-auto-synch-manager's layout (config/ and data/, its format version 2.2): one key per developer,
    with the alias and models the roster gives it."""
    (work / "config").mkdir(parents=True)
    (work / "data").mkdir()
    config = {"settings": {"server": "bench"},
              "server_definition": {"bench": {"litellm_base_url": url, "litellm_api_key": MASTER}}}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    keys = [{"app": d["name"], "key_alias": f"cc-{d['name']}", "models": d.get("models", MODELS[:2])}
            for d in developers]
    (work / "data" / "keys.yaml").write_text(yaml.safe_dump({"version": "2.2", "keys": keys}, sort_keys=False))


def installed(spec: str, command: str, tmp: Path) -> Path:
    """A fresh virtualenv holding spec and its runtime dependencies only, installed as a user installs it (not
    editable; pip compiles the bytecode)."""
    venv = tmp / command
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", spec],
                   check=True, stdout=subprocess.DEVNULL)
    return venv / "bin" / command


def run_lasm(work: Path, lasm: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([str(lasm)], cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"litellm-auto-synch-manager failed with exit {proc.returncode}: {proc.stderr[-500:]}")
    # Its detailed plan has a line per desired key: "[SKIP] KEY cc-dev-000002 -- ...".
    verdicts = collections.Counter(line[1:line.index("]")] for line in proc.stdout.splitlines()
                                   if line.startswith("[") and "] KEY " in line)
    return {"wall_s": wall, "summary": ", ".join(f"{n} {verdict}" for verdict, n in sorted(verdicts.items()))}


def run_plan(work: Path, target, reconcile: Path) -> dict:
    env = {**os.environ, "LITELLM_MASTER_KEY": MASTER, "LITELLM_PROXY_URL": target.url}
    before = target.requests_made()
    start = time.perf_counter()
    proc = subprocess.Popen([str(reconcile), "plan", "--format", "json"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"plan failed with exit {proc.returncode}")
    plan = json.loads(out)
    after = target.requests_made()
    return {"wall_s": wall, "requests": None if after is None else after - before,
            "peak_rss_mb": usage.ru_maxrss / 1024, "summary": plan["summary"]}


def floor(url: str, n: int) -> float:
    pages = max(1, math.ceil(n / 100))
    params = {"size": 100, "return_full_object": "true", "sort_by": "token", "sort_order": "asc"}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60) as client:
        start = time.perf_counter()
        for page in range(1, pages + 1):
            _ = client.get("/key/list", params={**params, "page": page}).content
        return time.perf_counter() - start


def median(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def bench_plan(target_name: str, n: int, repeat: int, reconcile: Path, lasm: Path | None) -> dict:
    with server(target_name) as target, tempfile.TemporaryDirectory() as tmp:
        names = seed(target, n)
        expected = write_workspace(Path(tmp), target.url, names)
        floor(target.url, n)  # warm the server once
        runs, other = [], []
        for _ in range(repeat):  # in turn, so both meet the same server and the same machine
            runs.append(run_plan(Path(tmp), target, reconcile))
            if lasm:
                other.append(run_lasm(Path(tmp) / "lasm", lasm))
        result = median(runs)
        result["floor_s"] = min(floor(target.url, n) for _ in range(3))
        if lasm:
            result["lasm"] = median(other)
    result.update({"n": n, "managed": len(names), "expected": expected,
                   # pages of keys and of users, /model/info, /team/list, /health/readiness
                   "request_budget": math.ceil(n / 100) + max(1, math.ceil(n * MANAGED_SHARE / 100)) + 3,
                   "plan_over_floor": result["wall_s"] / result["floor_s"]})
    return result


class Timers:
    """Thread-seconds spent in sops and in each proxy route, summed over apply's worker threads."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def wrap(self, owner: type, name: str, bucket: Callable[..., str]) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                name = bucket(*args)
                with self.lock:
                    self.seconds[name] += time.perf_counter() - start
                    self.calls[name] += 1

        setattr(owner, name, timed)


def cpu_seconds() -> dict[str, float]:
    """CPU used so far: by this process (the tool), by its finished children (sops), and by the whole machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in
                                                                Path("/proc/stat").read_text().split()[1:9])
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"tool": me.ru_utime + me.ru_stime, "sops": children.ru_utime + children.ru_stime,
            "machine": (user + nice + system + irq + softirq + steal) / ticks}


def where_cpu_went(before: dict[str, float], after: dict[str, float], wall: float, keys: int) -> dict:
    """Milliseconds of CPU per key: the tool, sops, and the rest of the machine (the proxy and its database)."""
    used = {k: after[k] - before[k] for k in before}
    per_key = {"tool": used["tool"], "sops": used["sops"],
               "proxy_and_database": used["machine"] - used["tool"] - used["sops"]}
    return {"cpu_ms_per_key": {k: round(1000 * v / keys, 1) for k, v in per_key.items()},
            "machine_busy": round(used["machine"] / (wall * (os.cpu_count() or 1)), 2)}


def bench_apply(target_name: str, count: int) -> dict:
    from reconciler import cli
    from reconciler.adapters.delivery import Sops
    from reconciler.adapters.litellm import LiteLLMClient

    timers = Timers()
    timers.wrap(Sops, "_run", lambda *args: "sops")
    timers.wrap(LiteLLMClient, "request", lambda client, method, route, *rest: f"{method} {route}")
    results = {}
    with server(target_name) as target, tempfile.TemporaryDirectory() as tmp:
        url, work = target.url, Path(tmp)
        developers = [{"name": f"dev-{i:04d}", "recipient": recipient(f"dev-{i:04d}")} for i in range(count)]
        roster = {"version": 1, "keys": {"alias": "cc-{name}", "admin_recipients": [ADMIN]},
                  "defaults": {"models": MODELS[:2]}, "developers": developers}
        os.environ.update({"LITELLM_MASTER_KEY": MASTER, "LITELLM_PROXY_URL": url})
        for phase in ("create", "rotate"):
            if phase == "rotate":
                roster["defaults"]["rotate"] = "2099-01-01T00:00:00Z"
            (work / "roster.yaml").write_text(yaml.safe_dump(roster, sort_keys=False))
            timers.seconds.clear()
            timers.calls.clear()
            cpu = cpu_seconds()
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(["apply", "--roster", str(work / "roster.yaml"), "--force"])
            wall = time.perf_counter() - start
            cpu = where_cpu_went(cpu, cpu_seconds(), wall, count)
            if code != 0:
                raise SystemExit(f"apply ({phase}) failed with exit {code}")
            http = {k: v for k, v in timers.seconds.items() if k != "sops"}
            results[phase] = {"keys": count, "wall_s": wall, "keys_per_s": count / wall,
                              "sops_thread_s": timers.seconds["sops"], "http_thread_s": sum(http.values()),
                              "routes": {route: {"calls": timers.calls[route], "thread_s": round(seconds, 2)}
                                         for route, seconds in sorted(http.items(), key=lambda kv: -kv[1])},
                              **cpu}
    return results


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--large", action="store_true", help="also N = 100,000")
    parser.add_argument("--apply", type=int, default=200, metavar="KEYS")
    parser.add_argument("--target", choices=("sandbox", "litellm"), default="sandbox",
                        help="the bundled sandbox, or LiteLLM's real proxy on PostgreSQL")
    parser.add_argument("--repeat", type=int, default=5, help="plan runs per size; the median is reported")
    parser.add_argument("--compare", action="store_true", help="also time litellm-auto-synch-manager on the same keys")
    parser.add_argument("--out", default=None, help="default: bench/results/latest[-litellm].json")
    args = parser.parse_args()
    if args.compare and args.target != "litellm":
        parser.error("--compare needs --target litellm: the other tool asks for routes the sandbox does not serve")
    sizes = [int(s) for s in args.sizes.split(",")] + ([100_000] if args.large else [])
    out = args.out or str(ROOT / "bench" / "results" / f"latest{'' if args.target == 'sandbox' else '-litellm'}.json")
    with tempfile.TemporaryDirectory() as venvs:
        reconcile = installed(str(ROOT), "reconcile", Path(venvs))
        lasm = installed(LASM, "lasm", Path(venvs)) if args.compare else None
        report = {"machine": machine(), "target": args.target,
                  "plan": [bench_plan(args.target, n, args.repeat, reconcile, lasm) for n in sizes],
                  "apply": bench_apply(args.target, args.apply) if args.apply else {}}
    m = report["machine"]
    print(f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}; target: {args.target}")
    print(f"{'N':>8} {'plan s':>8} {'requests':>9} {'budget':>7} {'peak MB':>8} {'floor s':>8} {'plan/floor':>10}"
          "  summary")
    for r in report["plan"]:
        print(f"{r['n']:>8} {r['wall_s']:>8.2f} {r['requests'] if r['requests'] is not None else '-':>9} "
              f"{r['request_budget']:>7} {r['peak_rss_mb']:>8.0f} "
              f"{r['floor_s']:>8.3f} {r['plan_over_floor']:>10.2f}  {r['summary']}")
        if "lasm" in r:
            lasm_run = r["lasm"]
            print(f"{'':>8} litellm-auto-synch-manager: {lasm_run['wall_s']:.2f} s "
                  f"({lasm_run['wall_s'] / r['wall_s']:.1f}x this tool's plan); keys: {lasm_run['summary']}")
    for phase, r in report["apply"].items():
        print(f"apply {phase:<6} {r['keys']} keys: {r['wall_s']:.2f} s, {r['keys_per_s']:.1f} keys/s "
              f"(thread-seconds: sops {r['sops_thread_s']:.1f}, HTTP {r['http_thread_s']:.1f}: "
              + ", ".join(f"{route} {v['thread_s']:.1f} ({v['calls']})" for route, v in r["routes"].items()) + ")")
        print(f"{'':>13} CPU per key: " + ", ".join(f"{k} {v} ms" for k, v in r["cpu_ms_per_key"].items())
              + f"; the machine {r['machine_busy']:.0%} busy")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
