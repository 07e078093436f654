"""The `reconcile` command: the only module that prints or exits.

stdout carries the plan, JSON or results; stderr carries logs and errors. Exit codes: 0 success (plan: no changes),
1 error, 2 changes present (plan --detailed-exitcode), 3 stale reviewed plan, 4 stopped by a brake.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .errors import ConfigError, ReconcileError
from .redact import REDACT
from .roster import load_roster
from .session import Session, Settings, check_reviewed, options_for

log = logging.getLogger("reconciler")
_print_lock = threading.Lock()


def out(text: str) -> None:
    """stdout, through the redaction layer: the only way this program writes to it."""
    with _print_lock:
        sys.stdout.write(REDACT(text))
        sys.stdout.flush()


def err(text: str) -> None:
    with _print_lock:
        sys.stderr.write(REDACT(text))
        sys.stderr.flush()


class _RedactingFilter(logging.Filter):
    """Whatever a log call was handed, it reaches stderr through the redaction layer."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = REDACT(record.getMessage())
        record.args = None
        if record.exc_info:
            record.msg += "\n" + REDACT("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger("reconciler")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_environment(proxy_url=getattr(args, "proxy_url", None),
                                     kube_target=getattr(args, "kube_target", None),
                                     kube_context=getattr(args, "kube_context", None),
                                     ca_bundle=getattr(args, "ca_bundle", None), timeout=getattr(args, "timeout", None))


def _session(args: argparse.Namespace, *, admin: bool = False, roster: Any = None) -> Session:
    return Session.open(roster or load_roster(args.roster), _settings(args), admin=admin)


def _options(args: argparse.Namespace, roster: Any) -> Any:
    return options_for(roster, adopt=args.adopt, replace=args.replace, only=args.only, no_delete=args.no_delete)


# ---------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    from .session import check_models

    roster = load_roster(args.roster)
    if not args.offline:
        with _session(args, roster=roster) as session:
            check_models(roster, session.catalog())
    where = "offline" if args.offline else "against the proxy's models"
    out(f"{args.roster}: valid ({len(roster.developers)} developers; checked {where})\n")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .render import render

    with _session(args) as session:
        plan = session.plan(_options(args, session.roster))
        requests = session.client.stats.requests
    if args.out:
        Path(args.out).write_text(REDACT(render(plan, "json", roster=args.roster, proxy_url=session.proxy_url)),
                                  "utf-8")
    out(render(plan, args.format, roster=args.roster, proxy_url=session.proxy_url))
    log.info("%d requests to the proxy", requests)
    return 2 if args.detailed_exitcode and not plan.empty else 0


def cmd_apply(args: argparse.Namespace) -> int:
    from .apply import Applier
    from .audit import AuditLog
    from .delivery import Sops
    from .render import render
    from .safety import Brakes

    sops = Sops()  # a missing or old sops is an error before anything is asked of the proxy
    with _session(args, admin=True) as session:
        session.require_admin()
        lock = session.lock()
        lock.acquire(args.lock_timeout)
        try:
            plan = session.plan(_options(args, session.roster))
            check_reviewed(plan, args.roster, reviewed_file=args.plan, checksum=args.checksum)
            out(render(plan, "text", roster=args.roster, proxy_url=session.proxy_url))
            if plan.empty:
                return 0
            Brakes(args.max_share, args.max_count).check(plan, force=args.force)
            audit = AuditLog(Path(args.audit_log) if args.audit_log else
                             Path(session.roster.path).parent / "audit.jsonl", checksum=plan.checksum,
                             proxy_url=session.proxy_url, actor=session.settings.actor)

            def finished(outcome: Any) -> None:  # audited and printed as each change finishes
                audit(outcome)
                state = "ok" if outcome.ok else "FAILED"
                out(f"{state:>6}  {outcome.change.symbol:<3} {outcome.change.name}: {outcome.change.kind}"
                    + (f": {outcome.message}" if outcome.message else "") + "\n")

            outcomes = Applier(session.roster, session.client, sops, proxy_url=session.proxy_url,
                               clock=session.clock, hooks=_crash_hook(), on_outcome=finished).run(plan)
        finally:
            lock.release()
    failed = [o for o in outcomes if not o.ok]
    out(f"Apply {'finished with failures' if failed else 'complete'}: {len(outcomes) - len(failed)} done, "
        f"{len(failed)} failed.\n")
    return 1 if failed else 0


def cmd_force_unlock(args: argparse.Namespace) -> int:
    roster = load_roster(args.roster)
    if roster.kubernetes is not None:
        with _session(args, roster=roster) as session:
            released = session.lock().force_unlock(args.lock_id)
    else:
        from .lock import FileLock, lock_path
        from .session import normalize_url

        url = _settings(args).proxy_url
        if url is None:
            raise ConfigError("no proxy URL: pass --proxy-url or set LITELLM_PROXY_URL")
        released = FileLock(lock_path(normalize_url(url))).force_unlock(args.lock_id)
    out(f"removed lock {released.id} held by {released.holder}\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .bootstrap import import_roster
    from .live import LiveKey
    from .session import normalize_url

    settings = _settings(args)
    if not settings.proxy_url:
        raise ConfigError("no proxy URL: set LITELLM_PROXY_URL or pass --proxy-url")
    credential = settings.viewer_key or settings.master_key
    if not credential:
        raise ConfigError("LITELLM_MASTER_KEY (or a read-only LITELLM_VIEWER_KEY) is not set")
    from .litellm import LiteLLMClient

    with LiteLLMClient(settings.proxy_url, credential, actor=settings.actor,
                       verify=settings.ca_bundle or True) as client:
        live = [LiveKey.from_api(obj) for obj in client.list_keys()]
    text, count = import_roster(live, args.alias, normalize_url(settings.proxy_url))
    if args.out == "-":
        out(text)
    else:
        target = Path(args.out)
        if target.exists() and not args.overwrite:
            raise ConfigError(f"{target} exists; pass --overwrite, or --out another path")
        target.write_text(REDACT(text), "utf-8")
    err(f"imported {count} developer(s) from keys whose alias matches {args.alias}\n")
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
    from .records import read_records
    from .status import render_status, status_rows

    with _session(args) as session:
        live = session.live_keys()
        rows = status_rows(session.roster, live, read_records(session.roster.delivery_path), session.clock())
    out(render_status(rows, args.format))
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox.server import Fault, load_models, start_sandbox

    models = load_models(args.models)
    master = args.master_key or os.environ.get("LITELLM_MASTER_KEY") or "sk-sandbox-master-key"
    faults = [Fault.parse(spec) for spec in args.fault or []]
    sandbox = start_sandbox(args.port, master, models, host=args.host, faults=faults)
    out(f"sandbox listening on {sandbox.url} ({len(models)} models); Ctrl-C stops it\n")
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
            p.add_argument("--kube-target", metavar="NAMESPACE[/SERVICE]",
                           help="confirm the roster's proxy.kubernetes (beats LITELLM_PROXY_KUBE)")

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
        err(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        err("interrupted\n")
        return 130
    except Exception as exc:  # the last resort: one redacted line, the traceback only with -vv
        if args.verbose > 1:
            err(traceback.format_exc())
        err(f"error: unexpected {type(exc).__name__}: {REDACT.shorten(str(exc), 300)} (a bug: please report it; "
            "-vv shows where)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
