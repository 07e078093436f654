"""The `reconcile` command: parse (arguments.py), call the service layer (session.py), render, exit. The only
module that prints or exits, and everything it prints goes through the redaction layer.

stdout carries the plan, JSON or results; stderr carries logs and errors. The exit codes are in arguments.py.
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
from typing import Any, Iterator

from ..core.roster import load_roster
from ..errors import ConfigError, ReconcileError
from ..redact import REDACT
from .arguments import build_parser
from .terminal import Progress, paint, wants_colour

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


# The service layer (and httpx under it) is imported by the commands that talk to a proxy, not at start-up:
# validate --offline and schema never load it.
def _settings(args: argparse.Namespace) -> Any:
    from ..service.session import Settings

    return Settings.from_environment(proxy_url=getattr(args, "proxy_url", None),
                                     kube_target=getattr(args, "kube_target", None),
                                     kube_context=getattr(args, "kube_context", None),
                                     ca_bundle=getattr(args, "ca_bundle", None), timeout=getattr(args, "timeout", None))


def _environment(args: argparse.Namespace) -> str | None:
    return getattr(args, "environment", None) or os.environ.get("RECONCILE_ENVIRONMENT") or None


def _roster(args: argparse.Namespace) -> Any:
    return load_roster(args.roster, _environment(args))


def _label(session: Any) -> str:
    """The roster as a plan's header names it: with its environment, when it has them."""
    env = session.roster.environment
    return f"{session.roster.path} (environment {env})" if env else session.roster.path


def _session(args: argparse.Namespace, *, admin: bool = False, roster: Any = None) -> Any:
    from ..service.session import Session

    return Session.open(roster or _roster(args), _settings(args), admin=admin)


def _options(args: argparse.Namespace, roster: Any) -> Any:
    from ..core.options import options_for

    return options_for(roster, adopt=args.adopt, replace=args.replace, only=args.only, no_delete=args.no_delete,
                       restore=args.restore, reencrypt=os.environ.get("RECONCILE_REENCRYPT") == "1",
                       recover_from=args.recover_from)


# ---------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    if args.offline and _environment(args) is None:  # every environment the roster declares, or the roster
        from ..core.roster import environments_of, read_roster_text

        text = read_roster_text(args.roster)
        names = environments_of(text, args.roster)
        rosters = [load_roster(args.roster, name) for name in names] or [load_roster(args.roster)]
        which = f"; environments {', '.join(names)}" if names else ""
        out(f"{args.roster}: valid ({len({d.name for r in rosters for d in r.developers})} developers{which}; "
            "checked offline)\n")
        return 0
    roster = _roster(args)
    if not args.offline:
        from ..service.session import check_models

        with _session(args, roster=roster) as session:
            check_models(roster, session.catalog())
    where = "offline" if args.offline else "against the proxy's models"
    out(f"{args.roster}: valid ({len(roster.developers)} developers; checked {where})\n")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    with _session(args) as session:
        plan = session.plan(_options(args, session.roster))
        requests = session.client.stats.requests
    from .render import render

    others = os.environ.get("RECONCILE_COMMENT_DETAILS") == "1"
    brakes = "; ".join(session.settings.brakes(session.roster).problems(plan)) or None  # what apply would stop on
    if args.out:
        Path(args.out).write_text(REDACT(render(plan, "json", roster=_label(session), proxy_url=session.proxy_url,
                                                others=others, brakes=brakes)), "utf-8")
    out(render(plan, args.format, roster=_label(session), proxy_url=session.proxy_url, others=others,
               brakes=brakes, colour=wants_colour(sys.stdout)))
    log.info("%d requests to the proxy", requests)
    return 2 if args.detailed_exitcode and plan.changes else 0  # a conflict is something to do too


def cmd_apply(args: argparse.Namespace) -> int:
    from ..adapters.delivery import Sops
    from .render import apply_report, render

    if os.environ.get("RECONCILE_NOW") and not args.simulated_clock:
        raise ConfigError(f"RECONCILE_NOW={os.environ['RECONCILE_NOW']} is set: apply would act as of that time "
                          "(deleting keys whose grace ends then, expiring developers early); unset it, or pass "
                          "--simulated-clock if that is what you mean")
    sops = Sops()  # a missing or old sops is an error before anything is asked of the proxy
    stop = threading.Event()
    colour = wants_colour(sys.stdout)
    progress = Progress(0, out, err, enabled=False)

    def planned(plan: Any) -> None:
        nonlocal progress
        _confirm(args, plan, render(plan, "text", roster=_label(session), proxy_url=session.proxy_url, colour=colour),
                 _target(session))
        progress = Progress(len(plan.actions), out, err, enabled=sys.stderr.isatty())

    def finished(o: Any) -> None:
        word = "ok" if o.ok else "FAILED"
        progress.line(f"{' ' * (6 - len(word))}{paint(word, word, colour)}  "  # the padding outside the colour
                      f"{paint(f'{o.change.symbol:<3}', o.change.symbol, colour)} {o.change.name}: {o.change.kind}"
                      + (f": {o.message}" if o.message else "") + "\n", o.ok)

    with _session(args, admin=True) as session, _interruptible(stop) as caught, _on_github(args, session) as pull:
        if args.push_check:
            _check_push(args.push_check)
        brakes = session.settings.brakes(session.roster, max_share=args.max_share, max_count=args.max_count,
                                         allow_deletes=args.allow_deletes,
                                         allow_takeovers=frozenset(args.allow_takeover or ()),
                                         allow_scheduled_rotations=args.allow_scheduled_rotations,
                                         allow_releases=frozenset(args.allow_release or ()))
        result = session.apply(
            _options(args, session.roster), sops, lock_timeout=args.lock_timeout, reviewed_file=args.plan,
            checksum=pull.checksum if pull else args.checksum, brakes=brakes, force=args.force,
            audit_path=Path(args.audit_log) if args.audit_log else None, stop=stop,
            on_plan=planned, on_outcome=finished)
        progress.close()
        if pull:
            pull.report(apply_report(result, session.roster, _label(session), pull.sha))
    if result.outcomes or result.not_started:
        counts = f"{len(result.outcomes) - len(result.failed)} done, {len(result.failed)} failed"
        if caught:
            out(f"Apply interrupted: {counts}, {result.not_started} not started.\n")
            return 128 + caught[0]
        out(f"Apply {'finished with failures' if result.failed else 'complete'}: {counts}.\n")
    if result.conflicts:
        out(f"{len(result.conflicts)} conflict(s) left unresolved: {', '.join(result.conflicts)}\n")
    return 1 if result.failed or result.conflicts else 0


def _target(session: Any) -> str:
    """Where the changes go, as the question names it: the proxy, and the Kubernetes context that reaches it."""
    kube = session.roster.kubernetes
    context = session.settings.kube_context or (kube.context if kube is not None else None)
    return session.proxy_url + (f" through Kubernetes context {context}" if session.kube_api is not None and context
                                else " through the current Kubernetes context" if session.kube_api is not None
                                else "")


def _confirm(args: argparse.Namespace, plan: Any, text: str, target: str) -> None:
    """Show the plan; on a terminal, apply only after a typed yes (as terraform apply asks), unless --auto-approve."""
    out(text)
    if plan.empty or args.auto_approve or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return
    out(f"\nApply these changes to {target}? Only 'yes' is accepted ({plan.summary}): ")
    try:
        answer = sys.stdin.readline().strip()
    except KeyboardInterrupt:
        answer = ""
    if answer != "yes":
        raise ConfigError("apply cancelled: nothing was changed")


def _check_push(branch: str) -> None:
    from ..adapters.github import GitHub

    github = GitHub.from_environment()
    try:
        problem = github.push_problem(branch)
    finally:
        github.close()
    if problem:
        raise ConfigError(problem)


@contextmanager
def _on_github(args: argparse.Namespace, session: Any) -> Iterator[Any]:
    """apply --github: the merged pull request's reviewed plan is the one applied, and the results go back to it.
    Yields None where there is no merged pull request (a schedule, a manual run)."""
    if not args.github:
        yield None
        return
    from ..adapters.github import ReviewedPull

    if args.checksum or args.plan:
        raise ConfigError("--github takes the reviewed checksum from the merged pull request; drop --checksum and "
                          "--plan (a manual run passes --checksum without --github)")
    pull = ReviewedPull.find(os.environ.get("GITHUB_SHA", ""), session.roster.environment, _label(session))
    try:
        yield pull
    except ReconcileError as exc:
        if pull is not None:
            pull.refused(exc)
        raise
    finally:
        if pull is not None:
            pull.close()


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
    from ..service.session import force_unlock

    released = force_unlock(_roster(args), _settings(args), args.lock_id)
    out(f"removed lock {released.id} held by {released.holder}\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..core.roster import schema_text
    from ..service.bootstrap import SCHEMA_FILE
    from ..service.session import import_roster_text

    text, count, unserved = import_roster_text(_settings(args), args.alias)
    for line in unserved:
        err(f"warning: {line} (fix it in the roster before the first plan)\n")
    if args.out == "-":
        out(text)
        err(f"its $schema line names {SCHEMA_FILE}: reconcile schema > {SCHEMA_FILE} beside it\n")
    else:
        target = Path(args.out)
        if target.exists() and not args.overwrite:
            raise ConfigError(f"{target} exists; pass --overwrite, or --out another path")
        target.write_text(REDACT(text), "utf-8")
        if not (target.parent / SCHEMA_FILE).exists():  # the $schema reference must work wherever the roster lives
            (target.parent / SCHEMA_FILE).write_text(schema_text(), "utf-8")
    err(f"imported {count} developer(s) from keys whose alias matches {args.alias}\n")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import render_status

    with _session(args) as session:
        rows, teams = session.status_rows()
    out(render_status(rows, args.format, teams, wide=args.wide))
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    from ..service.developer import fetch_key, report

    fetched = fetch_key(_roster(args), args.name, Path(args.env_file), base_url=args.base_url,
                        host_header=args.host_header, verify=not args.no_verify, ca_bundle=args.ca_bundle,
                        timeout=args.timeout)
    out(report(fetched))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from ..service.repository import init

    written = init(Path(args.directory), args.tool_repo, args.ref, overwrite=args.overwrite)
    out(f"wrote {len(written)} files in {args.directory}: {', '.join(written)}\n"
        f"next: read {Path(args.directory) / 'README.md'} (secrets, variables, Environments, branch protection)\n")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ..core.roster import schema_text

    out(schema_text())
    return 0


def cmd_sops_config(args: argparse.Namespace) -> int:
    from ..core.kinds.keys import desired_state, sops_config
    from ..core.timeutil import utcnow

    out(sops_config(desired_state(_roster(args), None, utcnow())))
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from .completion import script

    out(script(_parser(), args.shell))
    return 0


# ---------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    return build_parser({"validate": cmd_validate, "plan": cmd_plan, "apply": cmd_apply, "status": cmd_status,
                         "import": cmd_import, "schema": cmd_schema, "force-unlock": cmd_force_unlock,
                         "key": cmd_key, "init": cmd_init, "sops-config": cmd_sops_config,
                         "completion": cmd_completion})


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
