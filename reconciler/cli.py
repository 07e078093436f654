"""The `reconcile` command: the only module that prints or exits.

stdout carries the plan, JSON or results; stderr carries logs and errors. Exit codes: 0 success (plan: no changes),
1 error, 2 changes present (plan --detailed-exitcode), 3 stale reviewed plan, 4 stopped by a brake.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .apply import Applier, live_keys
from .audit import AuditLog, actor
from .catalog import ModelCatalog
from .delivery import Sops, read_key_files
from .errors import ConfigError, ModelError, ReconcileError, StalePlanError
from .litellm import LiteLLMClient, redact
from .plan import Options, Plan, desired_models, diff
from .render import render
from .roster import Roster, load_roster
from .timeutil import parse_instant, utcnow

log = logging.getLogger("reconciler")
_REDACT: list[str] = []  # credentials this process holds, removed from anything it prints


class _RedactingFilter(logging.Filter):
    """Defence in depth: whatever a log call was handed, nothing shaped like a key reaches the output."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger("reconciler")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _clock() -> Callable[[], datetime]:
    """RECONCILE_NOW pretends the time is another: for what-if plans and for tests that move a sandbox's clock."""
    fixed = os.environ.get("RECONCILE_NOW")
    if not fixed:
        return utcnow
    try:
        start = parse_instant(fixed, end_of_day=False)
    except ValueError:
        raise ConfigError(f"RECONCILE_NOW={fixed!r} is not a time; use 2027-01-31T09:00:00Z") from None
    offset = start - utcnow()
    return lambda: utcnow() + offset


def _expand_headers(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        def lookup(m: re.Match[str], name: str = name) -> str:
            if m.group(1) not in os.environ:
                raise ConfigError(f"proxy.headers.{name} uses ${{{m.group(1)}}}, which is not set in the environment")
            return os.environ[m.group(1)]
        out[name] = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lookup, value)
    return out


@dataclass
class Context:
    roster: Roster
    client: LiteLLMClient  # connected to the proxy (through a port-forward, when there is one)
    proxy_url: str  # the proxy's stable address: for key files, reports and the lock
    clock: Callable[[], datetime]
    kube_api: Any = None  # set when the roster reaches the proxy or its master key through Kubernetes
    closers: list[Callable[[], None]] = field(default_factory=list)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        for close in self.closers:
            close()

    def lock(self) -> Any:
        """One apply per proxy: a Lease where the roster uses Kubernetes, else a local lock file."""
        from .lock import FileLock, default_holder, lock_path

        kube = self.roster.kubernetes
        if self.kube_api is None or kube is None:
            return FileLock(lock_path(self.proxy_url))
        from .kube import LeaseLock

        # Named for the Service (or URL), not the local port-forward address, which changes every run.
        target = hashlib.sha256(f"{kube.namespace}/{kube.service or self.proxy_url}".encode()).hexdigest()[:12]
        return LeaseLock(self.kube_api, kube.namespace, f"litellm-roster-{target}", default_holder())


def _explicit_url(args: argparse.Namespace, roster: Roster) -> str | None:
    url = args.proxy_url or os.environ.get("LITELLM_PROXY_URL") or roster.proxy_url
    return url.rstrip("/") if url else None


_NO_URL = ConfigError("no proxy URL: set proxy.url or proxy.kubernetes.service in the roster, LITELLM_PROXY_URL, "
                      "or --proxy-url")


def _context(args: argparse.Namespace) -> Context:
    roster = load_roster(args.roster)
    kube = roster.kubernetes
    api = None
    if kube is not None:
        from .kube import api_client

        api = api_client(getattr(args, "kube_context", None) or kube.context)
    closers: list[Callable[[], None]] = []
    url = public_url = _explicit_url(args, roster)
    if url is None and kube is not None and kube.service:
        from .kube import proxy_url

        url, public_url, forward = proxy_url(api, kube)
        if forward is not None:
            closers.append(forward.close)
    if url is None or public_url is None:
        raise _NO_URL
    master = os.environ.get("LITELLM_MASTER_KEY", "")
    if not master and kube is not None and kube.secret_name:
        from .kube import read_secret

        master = read_secret(api, kube.namespace, kube.secret_name, kube.secret_key or "")
    if not master:
        raise ConfigError("LITELLM_MASTER_KEY is not set: export the proxy's master key (from your secret store), "
                          "or name its Kubernetes Secret in proxy.kubernetes.master_key_secret")
    client = LiteLLMClient(url, master, headers=_expand_headers(roster.proxy_headers), actor=actor(),
                           verify=args.ca_bundle or True, timeout=args.timeout)
    _REDACT.append(master)  # it may have come from a Secret: keep it out of every message this process prints
    return Context(roster, client, public_url, _clock(), api, closers)


def check_models(roster: Roster, catalog: ModelCatalog) -> None:
    problems = []
    for dev in roster.developers:
        for name in desired_models(roster, dev, None):
            if not catalog.serves(name):
                problems.append(f"  {roster.path}:{dev.line}: developers ({dev.name}).models: "
                                f"{catalog.unknown_message(name)}")
    if problems:
        raise ModelError("the roster grants models this proxy does not serve; nothing was changed:\n"
                         + "\n".join(sorted(set(problems))))


def _options(args: argparse.Namespace, roster: Roster) -> Options:
    names = {d.name for d in roster.developers}
    for flag in ("adopt", "replace"):  # --only may name a developer who left, to delete just their key
        for name in getattr(args, flag, None) or []:
            if name not in names:
                raise ConfigError(f"--{flag} {name}: no developer of that name in {roster.path}")
    return Options(adopt=frozenset(args.adopt or ()), replace=frozenset(args.replace or ()),
                   only=frozenset(args.only) if args.only else None, no_delete=args.no_delete)


def compute_plan(ctx: Context, args: argparse.Namespace) -> Plan:
    catalog = ModelCatalog.from_model_info(ctx.client.model_info())
    check_models(ctx.roster, catalog)
    live = live_keys(ctx.client)
    files = read_key_files(ctx.roster.delivery_path)
    return diff(ctx.roster, live, files, ctx.clock(), catalog=catalog, proxy_url=ctx.proxy_url,
                options=_options(args, ctx.roster))


# ---------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    roster = load_roster(args.roster)
    if not args.offline:
        ctx = _context(args)
        with ctx:
            check_models(roster, ModelCatalog.from_model_info(ctx.client.model_info()))
    where = "offline" if args.offline else "against the proxy's models"
    print(f"{args.roster}: valid ({len(roster.developers)} developers; checked {where})")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    ctx = _context(args)
    with ctx:
        plan = compute_plan(ctx, args)
    if args.out:
        Path(args.out).write_text(render(plan, "json", roster=args.roster, proxy_url=ctx.proxy_url), "utf-8")
    sys.stdout.write(render(plan, args.format, roster=args.roster, proxy_url=ctx.proxy_url))
    log.info("%d requests to the proxy", ctx.client.stats.requests)
    return 2 if args.detailed_exitcode and not plan.empty else 0


def _check_reviewed(plan: Plan, args: argparse.Namespace) -> None:
    if args.plan:
        try:
            reviewed = json.loads(Path(args.plan).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--plan {args.plan}: cannot read it ({type(exc).__name__})") from None
        if reviewed.get("roster_sha256") != plan.roster_sha256:
            raise StalePlanError(f"plan is stale: {args.roster} changed since {args.plan} was made; plan again")
        if reviewed.get("checksum") != plan.checksum:
            what = "the live keys changed" if reviewed.get("live_fingerprint") != plan.live_fingerprint \
                else "the changes differ"
            raise StalePlanError(f"plan is stale: {what} since {args.plan} was made "
                                 f"({reviewed.get('summary')} then; {plan.summary} now); plan again")
    if args.checksum and args.checksum != plan.checksum:
        raise StalePlanError(f"plan checksum is {plan.checksum}, not the reviewed {args.checksum}: the roster or "
                             "the proxy changed since review; plan again")


def cmd_apply(args: argparse.Namespace) -> int:
    from .safety import Brakes

    ctx = _context(args)
    sops = Sops()  # a missing or old sops is an error before anything changes
    lock = ctx.lock()
    lock.acquire(args.lock_timeout)
    try:
        with ctx:
            plan = compute_plan(ctx, args)
            _check_reviewed(plan, args)
            sys.stdout.write(render(plan, "text", roster=args.roster, proxy_url=ctx.proxy_url))
            if plan.empty:
                return 0
            if not args.force:
                Brakes(args.max_share, args.max_count).check(plan)
            audit = AuditLog(Path(args.audit_log) if args.audit_log else Path(ctx.roster.path).parent / "audit.jsonl",
                             checksum=plan.checksum, proxy_url=ctx.proxy_url)
            outcomes = Applier(ctx.roster, ctx.client, sops, proxy_url=ctx.proxy_url, clock=ctx.clock,
                               hooks=_crash_hook(), on_outcome=audit).run(plan)
    finally:
        lock.release()
    failed = [o for o in outcomes if not o.ok]
    for outcome in outcomes:
        state = "ok" if outcome.ok else "FAILED"
        print(f"{state:>6}  {outcome.change.symbol:<3} {outcome.change.name}: {outcome.change.kind}"
              + (f": {outcome.message}" if outcome.message else ""))
    print(f"Apply {'finished with failures' if failed else 'complete'}: {len(outcomes) - len(failed)} done, "
          f"{len(failed)} failed.")
    return 1 if failed else 0


def cmd_force_unlock(args: argparse.Namespace) -> int:
    roster = load_roster(args.roster)
    if roster.kubernetes is not None:
        with _context(args) as ctx:
            released = ctx.lock().force_unlock(args.lock_id)
    else:
        from .lock import FileLock, lock_path

        url = _explicit_url(args, roster)
        if url is None:
            raise _NO_URL
        released = FileLock(lock_path(url)).force_unlock(args.lock_id)
    print(f"removed lock {released.id} held by {released.holder}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .bootstrap import import_roster

    url = args.proxy_url or os.environ.get("LITELLM_PROXY_URL")
    if not url:
        raise ConfigError("no proxy URL: set LITELLM_PROXY_URL or pass --proxy-url")
    master = os.environ.get("LITELLM_MASTER_KEY", "")
    if not master:
        raise ConfigError("LITELLM_MASTER_KEY is not set")
    with LiteLLMClient(url, master, actor=actor(), verify=args.ca_bundle or True) as client:
        live = live_keys(client)
    text, count = import_roster(live, args.alias, url.rstrip("/"))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise ConfigError(f"{out} exists; pass --overwrite, or --out another path")
        out.write_text(text, "utf-8")
    print(f"imported {count} developer(s) from keys whose alias matches {args.alias}", file=sys.stderr)
    return 0


def _crash_hook() -> Callable[[str, str], None] | None:
    """RECONCILE_CRASH_AT=step:name kills this process with SIGKILL at that step: for the crash-safety tests."""
    spec = os.environ.get("RECONCILE_CRASH_AT")
    if not spec:
        return None
    import signal

    def hook(step: str, name: str) -> None:
        if spec in (step, f"{step}:{name}"):
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def cmd_status(args: argparse.Namespace) -> int:
    from .status import render_status, status_rows

    ctx = _context(args)
    with ctx:
        live = live_keys(ctx.client)
    sys.stdout.write(render_status(status_rows(ctx.roster, live, ctx.clock()), args.format))
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox.server import Fault, load_models, start_sandbox

    models = load_models(args.models)
    master = args.master_key or os.environ.get("LITELLM_MASTER_KEY") or "sk-sandbox-master-key"
    faults = [Fault.parse(spec) for spec in args.fault or []]
    sandbox = start_sandbox(args.port, master, models, host=args.host, faults=faults)
    print(f"sandbox listening on {sandbox.url} ({len(models)} models); Ctrl-C stops it", flush=True)
    try:
        sandbox.thread.join()
    except KeyboardInterrupt:
        sandbox.stop()
    return 0


# ---------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconcile", description="Make a LiteLLM proxy's virtual keys match "
                                                                   "roster.yaml, delivering each key with SOPS.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, proxy: bool = True) -> None:
        p.add_argument("--roster", default="roster.yaml", help="the roster file (default: roster.yaml)")
        p.add_argument("-v", "--verbose", action="count", default=0, help="log progress to stderr (-vv: debug)")
        if proxy:
            p.add_argument("--proxy-url", help="the proxy (beats LITELLM_PROXY_URL and proxy.url)")
            p.add_argument("--ca-bundle", help="a CA bundle to verify the proxy's TLS certificate with")
            p.add_argument("--timeout", type=float, metavar="SECONDS", help="per-request timeout (default 15)")
            p.add_argument("--kube-context", help="kubeconfig context (beats proxy.kubernetes.context)")

    def selection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--only", nargs="+", metavar="NAME", help="limit to these developers")
        p.add_argument("--no-delete", action="store_true", help="never delete keys or key files")
        p.add_argument("--adopt", nargs="+", metavar="NAME", help="take over these hand-made keys in place")
        p.add_argument("--replace", nargs="+", metavar="NAME", help="rotate these hand-made keys into delivered ones")

    p = sub.add_parser("validate", help="check the roster (and its models against the proxy)")
    common(p)
    p.add_argument("--offline", action="store_true", help="check the roster file only; no proxy needed")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="show what apply would change")
    common(p)
    selection(p)
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    p.add_argument("--out", metavar="PLAN_JSON", help="also write the plan as JSON, for apply --plan")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when there are changes")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="make the proxy match the roster and deliver new keys")
    common(p)
    selection(p)
    p.add_argument("--plan", metavar="PLAN_JSON", help="apply only if the fresh plan is this reviewed one")
    p.add_argument("--checksum", metavar="HEX", help="apply only if the fresh plan has this checksum")
    p.add_argument("--force", action="store_true", help="apply even past the brakes")
    p.add_argument("--max-share", type=float, default=0.30, metavar="FRACTION",
                   help="brake: most deletes or rotations as a share of managed keys, above 10 keys (default 0.30)")
    p.add_argument("--max-count", type=int, metavar="N", help="brake: most deletes or rotations in one apply")
    p.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another apply to finish (default: fail at once)")
    p.add_argument("--audit-log", metavar="PATH", help="append the audit trail here (default: audit.jsonl beside "
                                                       "the roster)")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("force-unlock", help="remove a dead apply's lock")
    common(p)
    p.add_argument("lock_id", metavar="ID")
    p.set_defaults(func=cmd_force_unlock)

    p = sub.add_parser("import", help="write a starting roster from the keys already on a proxy")
    p.add_argument("--alias", default="claude-code-{name}", help="the alias template the keys follow")
    p.add_argument("--out", default="-", help="where to write it (default: stdout)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--proxy-url")
    p.add_argument("--ca-bundle")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("status", help="who has access to what, and what will change next")
    common(p)
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("sandbox", help="serve a LiteLLM-compatible key API in memory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4000)
    p.add_argument("--master-key", help="default: LITELLM_MASTER_KEY, else sk-sandbox-master-key")
    p.add_argument("--models", help="a LiteLLM config (model_list) to serve; default: a few Claude models")
    p.add_argument("--fault", action="append", metavar="SPEC",
                   help="inject faults, e.g. 'POST /key/generate=503@0.3', '*=reset-after@0.1', "
                        "'GET /key/list=delay:2@1', 'GET /key/list=429:1@0.5' (Retry-After 1)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=cmd_sandbox)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except ReconcileError as exc:
        print(f"error: {redact(str(exc), os.environ.get('LITELLM_MASTER_KEY', ''), *_REDACT)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
