"""The `reconcile` command: the only module that prints or exits.

stdout carries the plan, JSON or results; stderr carries logs and errors. Exit codes: 0 success (plan: no changes),
1 error, 2 changes present (plan --detailed-exitcode), 3 stale reviewed plan, 4 stopped by a brake.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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
    return 2 if args.detailed_exitcode and plan.changes else 0  # a conflict is something to do too


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
                return _unresolved(plan)
            Brakes.for_roster(session.roster, max_share=args.max_share, max_count=args.max_count).check(
                plan, force=args.force)
            audit = AuditLog(Path(args.audit_log) if args.audit_log else
                             Path(session.roster.path).parent / "audit.jsonl", checksum=plan.checksum,
                             proxy_url=session.proxy_url, actor=session.settings.actor)

            def finished(outcome: Any) -> None:  # audited and printed as each change finishes
                audit(outcome)
                state = "ok" if outcome.ok else "FAILED"
                out(f"{state:>6}  {outcome.change.symbol:<3} {outcome.change.name}: {outcome.change.kind}"
                    + (f": {outcome.message}" if outcome.message else "") + "\n")

            applier = Applier(session.roster, session.client, sops, proxy_url=session.proxy_url,
                              clock=session.clock, hooks=_crash_hook(), on_outcome=finished)
            with _interruptible(applier.stop) as caught:
                outcomes = applier.run(plan)
        finally:
            lock.release()
    failed = [o for o in outcomes if not o.ok]
    counts = f"{len(outcomes) - len(failed)} done, {len(failed)} failed"
    if caught:
        out(f"Apply interrupted: {counts}, {applier.not_started} not started.\n")
        return 128 + caught[0]
    out(f"Apply {'finished with failures' if failed else 'complete'}: {counts}.\n")
    return max(1 if failed else 0, _unresolved(plan))


def _unresolved(plan: Any) -> int:
    conflicts = [c.name for c in plan.changes if c.kind == "conflict"]
    if not conflicts:
        return 0
    out(f"{len(conflicts)} conflict(s) left unresolved: {', '.join(conflicts)}\n")
    return 1


@contextmanager
def _interruptible(stop: threading.Event) -> Iterator[list[int]]:
    """SIGINT and SIGTERM during apply: the changes in flight finish (no half-made key), the rest are not started,
    and the caller reports what was done. Yields the signal numbers caught."""
    caught: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)
        stop.set()
        err(f"{signal.Signals(signum).name}: finishing the changes in flight, starting no more\n")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def cmd_force_unlock(args: argparse.Namespace) -> int:
    roster = load_roster(args.roster)
    if roster.kubernetes is not None:
        with _session(args, roster=roster) as session:
            released = session.lock().force_unlock(args.lock_id)
    else:
        from .addresses import normalize_url
        from .lock import FileLock, lock_path

        url = _settings(args).proxy_url
        if url is None:
            raise ConfigError("no proxy URL: pass --proxy-url or set LITELLM_PROXY_URL")
        released = FileLock(lock_path(normalize_url(url))).force_unlock(args.lock_id)
    out(f"removed lock {released.id} held by {released.holder}\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .addresses import normalize_url
    from .bootstrap import SCHEMA_FILE, import_roster
    from .live import LiveKey
    from .roster import schema_text

    settings = _settings(args)
    if not settings.proxy_url:
        raise ConfigError("no proxy URL: set LITELLM_PROXY_URL or pass --proxy-url")
    credential = settings.viewer_key or settings.master_key
    if not credential:
        raise ConfigError("LITELLM_MASTER_KEY (or a read-only LITELLM_VIEWER_KEY) is not set")
    from .litellm import LiteLLMClient

    with LiteLLMClient(settings.proxy_url, credential, actor=settings.actor, verify=settings.ca_bundle or True,
                       timeout=settings.timeout) as client:
        live = [LiveKey.from_api(obj) for obj in client.list_keys()]
    text, count = import_roster(live, args.alias, normalize_url(settings.proxy_url))
    if args.out == "-":
        out(text)
        err(f"its $schema line names {SCHEMA_FILE}: reconcile schema > {SCHEMA_FILE} beside it\n")
    else:
        target = Path(args.out)
        if target.exists() and not args.overwrite:
            raise ConfigError(f"{target} exists; pass --overwrite, or --out another path")
        target.write_text(REDACT(text), "utf-8")
        schema_file = target.parent / SCHEMA_FILE
        if not schema_file.exists():  # the $schema reference must work wherever the roster lives
            schema_file.write_text(schema_text(), "utf-8")
    err(f"imported {count} developer(s) from keys whose alias matches {args.alias}\n")
    return 0


def _crash_hook() -> Callable[[str, str], None] | None:
    """RECONCILE_CRASH_AT=step:name kills this process with SIGKILL at that step: for the crash-safety tests."""
    spec = os.environ.get("RECONCILE_CRASH_AT")
    if not spec:
        return None
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


def cmd_schema(args: argparse.Namespace) -> int:
    from .roster import schema_text

    out(schema_text())
    return 0


# ---------------------------------------------------------------- parser


EXIT_CODES = """exit codes:
  0  success (plan: no changes)
  1  error: bad roster or command line, unknown model, proxy refused or unreachable, lock held, a change failed,
     conflicts left unresolved
  2  plan --detailed-exitcode: there are changes or conflicts
  3  apply --plan/--checksum: the reviewed plan is stale
  4  apply: stopped by a brake or a high-risk change; nothing was changed
  130/143  apply interrupted (SIGINT/SIGTERM): finished changes are reported, the rest not started"""


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which plan --detailed-exitcode means as "there are changes": 1 instead."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reconcile", description="Make a LiteLLM proxy's virtual keys match roster.yaml, "
                                                   "delivering each key with SOPS.", epilog=EXIT_CODES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("-v", "--verbose", action="count", default=0, help="log progress to stderr (-vv: debug)")
        return p

    def proxy(p: argparse.ArgumentParser, *, roster: bool = True) -> None:
        if roster:
            p.add_argument("--roster", default="roster.yaml", help="the roster file (default: roster.yaml)")
        p.add_argument("--proxy-url", help="the proxy (beats LITELLM_PROXY_URL; the roster's proxy.url must match)")
        p.add_argument("--ca-bundle", metavar="FILE", help="a CA bundle to verify the proxy's TLS certificate with")
        p.add_argument("--timeout", type=float, metavar="SECONDS", help="per-request timeout (default 15)")
        if roster:
            p.add_argument("--kube-context", help="kubeconfig context (beats proxy.kubernetes.context)")
            p.add_argument("--kube-target", metavar="NAMESPACE[/SERVICE]",
                           help="confirm the roster's proxy.kubernetes (beats LITELLM_PROXY_KUBE)")

    def selection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--only", nargs="+", metavar="NAME", help="limit to these developers")
        p.add_argument("--no-delete", action="store_true", help="never delete keys or key files")
        p.add_argument("--adopt", nargs="+", metavar="NAME", help="take over these hand-made keys in place")
        p.add_argument("--replace", nargs="+", metavar="NAME", help="rotate these hand-made keys into delivered ones")

    def output(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                       help="text for a terminal, markdown for a pull-request comment, json for machines")

    p = command("validate", "check the roster (and its models against the proxy)")
    proxy(p)
    p.add_argument("--offline", action="store_true", help="check the roster file only; no proxy needed")
    p.set_defaults(func=cmd_validate)

    p = command("plan", "show what apply would change")
    proxy(p)
    selection(p)
    output(p)
    p.add_argument("--out", metavar="PLAN_JSON", help="also write the plan as JSON, for apply --plan")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when there are changes or conflicts")
    p.set_defaults(func=cmd_plan)

    p = command("apply", "make the proxy match the roster and deliver new keys")
    proxy(p)
    selection(p)
    p.add_argument("--plan", metavar="PLAN_JSON", help="apply only if the fresh plan is this reviewed one")
    p.add_argument("--checksum", metavar="HEX", help="apply only if the fresh plan has this checksum")
    p.add_argument("--force", action="store_true", help="apply past the brakes and the high-risk checks")
    p.add_argument("--max-share", type=float, metavar="FRACTION",
                   help="brake: most deletes, rotations or updates as a share of managed keys, above 10 keys "
                        "(default: keys.brakes.max_share, else 0.30)")
    p.add_argument("--max-count", type=int, metavar="N",
                   help="brake: most deletes, rotations or updates in one apply (default: keys.brakes.max_count)")
    p.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another apply to finish (default: fail at once)")
    p.add_argument("--audit-log", metavar="PATH", help="append the audit trail here (default: audit.jsonl beside "
                                                       "the roster)")
    p.set_defaults(func=cmd_apply)

    p = command("status", "who has access to what, and what will change next")
    proxy(p)
    output(p)
    p.set_defaults(func=cmd_status)

    p = command("import", "write a starting roster from the keys already on a proxy")
    proxy(p, roster=False)
    p.add_argument("--alias", default="claude-code-{name}", help="the alias template the keys follow")
    p.add_argument("--out", default="-", help="where to write the roster (default: stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_import)

    p = command("schema", "print the roster's JSON Schema (for editors and CI checks)")
    p.set_defaults(func=cmd_schema)

    p = command("force-unlock", "remove a dead apply's lock")
    proxy(p)
    p.add_argument("lock_id", metavar="ID", help="the lock's id, as the refused apply printed it")
    p.set_defaults(func=cmd_force_unlock)

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
