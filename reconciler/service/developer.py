"""The developer's side: from a merged pull request to a working environment in one command (reconcile key NAME).

The developer's own identity decrypts their key file (sops reads SOPS_AGE_KEY_FILE, SOPS_AGE_KEY or
SOPS_AGE_SSH_PRIVATE_KEY_FILE); no admin credential is involved. The key is proven against the URL that will be
written before anything is written, and it goes only into an env file git will not commit, mode 0600.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..adapters.keyfiles import delivery_dir, read_key_file
from ..core.addresses import normalize_url
from ..core.records import token_of
from ..core.roster import Roster
from ..errors import DeliveryError, KeyFetchError, closest
from ..redact import REDACT

TOKEN_VAR, URL_VAR = "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"  # what Claude Code reads


@dataclass(frozen=True)
class Fetched:
    name: str
    base_url: str
    models: tuple[str, ...] | None  # None: not verified (--no-verify)
    expires: str | None
    env_file: Path
    changed: bool
    spend: str | None = None  # "1.20 of 10 USD", when the key may read its own info


def fetch_key(roster: Roster, name: str, env_file: Path, *, base_url: str | None = None,
              host_header: str | None = None, verify: bool = True, ca_bundle: str | None = None,
              timeout: float = 15.0) -> Fetched:
    if roster.developer(name) is None:
        close = closest(name, [d.name for d in roster.developers])
        hint = f"did you mean {close[0]}?" if close else "check the name under developers"
        raise KeyFetchError(f"{name} is not a developer in {roster.path}; {hint}")
    path = delivery_dir(roster) / f"{name}.sops.yaml"
    shown = f"{roster.keys.delivery_dir}/{name}.sops.yaml"  # as the repository names it
    if path.is_symlink() or not path.is_file():
        raise KeyFetchError(f"{shown} is missing: the key is delivered by the apply job after your pull request is "
                            "merged; git pull, and ask an admin if it still is not there")
    file = read_key_file(name, path)
    if file.problem or not file.token_sha256:
        raise KeyFetchError(f"{shown} is {file.problem or 'missing token_sha256'}: ask an admin to re-issue your key")
    proxy = file.fields.get("proxy_url")
    if roster.proxy_url and proxy and normalize_url(str(proxy)) != normalize_url(roster.proxy_url):
        raise KeyFetchError(f"{shown} is for the proxy {proxy}, not {roster.proxy_url} (the roster's): pass the roster "
                            "and --environment it belongs to")
    url = (base_url or str(proxy or "")).rstrip("/")
    if not url:
        raise KeyFetchError(f"{shown} names no proxy: pass --base-url URL")
    _check_not_committed(env_file)
    secret = _decrypt(path, shown)
    if token_of(secret) != file.token_sha256:
        raise KeyFetchError(f"{shown}: the key inside does not match the hash the file states; do not use it, and tell "
                            "an admin (the file may have been swapped)")
    models, spend = _prove(url, secret, host_header, ca_bundle, timeout) if verify else (None, None)
    changed = write_env(env_file, {TOKEN_VAR: secret, URL_VAR: url})
    return Fetched(name, url, models, file.fields.get("expires"), env_file, changed, spend)


def _decrypt(path: Path, shown: str) -> str:
    from ..adapters.delivery import Sops

    if not any(os.environ.get(v) for v in ("SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY", "SOPS_AGE_SSH_PRIVATE_KEY_FILE")) \
            and not (Path.home() / ".config" / "sops" / "age" / "keys.txt").exists():
        raise KeyFetchError("no identity to decrypt with: set SOPS_AGE_KEY_FILE to your age identity (age-keygen -o), "
                            "or SOPS_AGE_SSH_PRIVATE_KEY_FILE to your ssh-ed25519 key")
    try:
        return Sops().decrypt(path)
    except DeliveryError:
        raise KeyFetchError(f"cannot decrypt {shown} with your identity: is it the one whose public key is your "
                            "recipient in the roster? (a new laptop needs a new recipient in the roster, and a merged "
                            "pull request)") from None


def _prove(url: str, secret: str, host: str | None, ca_bundle: str | None,
           timeout: float) -> tuple[tuple[str, ...], str | None]:
    """GET /v1/models with the key, through the route that will be written: the models it may use; and its spend
    against its budget when the key may read its own /key/info (the tool's keys are LLM-only: usually not)."""
    headers = {"Authorization": f"Bearer {secret}", **({"Host": host} if host else {})}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout, verify=ca_bundle or True) as client:
            answer = client.get("/v1/models")
            info = client.get("/key/info") if answer.status_code == 200 else None
    except httpx.HTTPError as exc:
        raise KeyFetchError(f"cannot reach {url}/v1/models ({type(exc).__name__}); check --base-url (and "
                            "--host-header for a route that needs one), or pass --no-verify to write the key "
                            "offline") from None
    if answer.status_code == 200:
        try:
            return tuple(sorted(m["id"] for m in answer.json()["data"])), _spend(info)
        except (ValueError, KeyError, TypeError):
            raise KeyFetchError(f"{url}/v1/models answered 200 but not a model list: is --base-url the proxy?") \
                from None
    text = REDACT.shorten(answer.text, 200)
    lowered = text.lower()
    if "blocked" in lowered:
        why = "the key is blocked: the roster disables you, or an admin blocked it"
    elif "expired" in lowered:
        why = "the key has expired: ask for a new expires: in the roster"
    elif answer.status_code in (401, 403):
        why = f"the proxy refused the key (HTTP {answer.status_code}): it was rotated or deleted; git pull for the " \
              "current key file"
    else:
        why = f"{url}/v1/models answered HTTP {answer.status_code}: check --base-url and --host-header"
    raise KeyFetchError(f"{why}; nothing was written")


def _spend(info: httpx.Response | None) -> str | None:
    if info is None or info.status_code != 200:
        return None
    try:
        data = info.json().get("info") or {}
    except ValueError:
        return None
    if (data.get("metadata") or {}).get("retire_at"):
        raise KeyFetchError("this key is rotated out and stops working soon: git pull for the current key file; "
                            "nothing was written")
    spend, budget = data.get("spend"), data.get("max_budget")
    if not isinstance(spend, (int, float)):
        return None
    return f"{spend:.2f} of {budget:g} USD" if isinstance(budget, (int, float)) else f"{spend:.2f} USD, no budget"


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30)


def _check_not_committed(env_file: Path) -> None:
    """The env file will hold the key: never one git would commit."""
    if env_file.is_symlink():
        raise KeyFetchError(f"{env_file} is a symlink; write the key to a regular file (--env-file PATH)")
    directory = env_file.parent.resolve()
    if not directory.is_dir():
        raise KeyFetchError(f"{directory} does not exist; create it or pass another --env-file")
    try:
        inside = _git(directory, "rev-parse", "--is-inside-work-tree")
    except (OSError, subprocess.TimeoutExpired):
        return  # no git: nothing would commit it
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return
    if _git(directory, "ls-files", "--error-unmatch", env_file.name).returncode == 0:
        raise KeyFetchError(f"{env_file} is tracked by git, so the key would be committed: git rm --cached "
                            f"{env_file.name}, add it to .gitignore, and run this again")
    if _git(directory, "check-ignore", "-q", env_file.name).returncode != 0:
        raise KeyFetchError(f"{env_file} is not ignored by git, so the key could be committed: add "
                            f"'{env_file.name}' to {directory / '.gitignore'} and run this again")


_ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=")


def write_env(env_file: Path, values: dict[str, str]) -> bool:
    """Set the variables in the env file, in place, keeping every other line; mode 0600, written atomically.
    Returns whether anything changed (running it again with the same key changes nothing)."""
    try:
        old = env_file.read_text("utf-8")
    except FileNotFoundError:
        old = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFetchError(f"cannot read {env_file} ({type(exc).__name__}); pass another --env-file") from None
    lines, seen = [], set()
    for line in old.splitlines():
        m = _ASSIGNMENT.match(line)
        if m and m.group(1) in values:
            if m.group(1) in seen:
                continue  # a duplicate would shadow the new value in some loaders
            seen.add(m.group(1))
            line = f"{m.group(1)}={_quoted(values[m.group(1)])}"
        lines.append(line)
    lines += [f"{name}={_quoted(value)}" for name, value in values.items() if name not in seen]
    new = "\n".join(lines) + "\n"
    if new == old and (env_file.stat().st_mode & 0o777) == 0o600:
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{env_file.name}.", dir=env_file.parent)  # 0600 from the start
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new)
        os.replace(tmp, env_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _quoted(value: str) -> str:
    return value if re.fullmatch(r"[A-Za-z0-9_./:@+=-]*", value) else "'" + value.replace("'", "'\\''") + "'"


def report(fetched: Fetched) -> str:
    """What the developer reads: never the key."""
    what = f"models {', '.join(fetched.models)}" if fetched.models is not None else "not verified (--no-verify)"
    done = f"wrote {TOKEN_VAR} and {URL_VAR} to {fetched.env_file} (mode 0600)" if fetched.changed else \
        f"{fetched.env_file} already holds this key"
    spend = f"; spent {fetched.spend}" if fetched.spend else ""
    return f"{fetched.name}: key for {fetched.base_url}: {what}; expires {fetched.expires or 'never'}{spend}\n{done}\n"

