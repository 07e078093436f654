"""The service layer: operator settings resolved once into a Session that plans, applies and reports. The CLI only
parses, calls this, renders and exits.

Trust is decided here (docs/security.md). The roster is data from pull requests, so it never decides where a
credential goes: the proxy is the one the operator named (flag, environment), a roster that names another is
refused, roster headers expand only the variables the operator allowed, and apply first proves that it holds the
proxy's master key. Read-only commands use a read-only key when one is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..adapters.litellm import LiteLLMClient, version_warning
from ..core.addresses import normalize_url
from ..core.catalog import ModelCatalog
from ..core.live import USER_PREFIX, LiveKey
from ..core.proofs import ENVIRONMENT as PROOF_KEY
from ..core.proofs import Prover
from ..core.roster import Roster
from ..core.timeutil import parse_instant, utcnow
from ..errors import ConfigError, CredentialError, ModelError, Problem, StalePlanError
from ..redact import REDACT

# The diff's modules (plan, teams, records: about 25 ms of imports) are imported where they are used, so a plan
# imports them while the proxy answers its questions rather than before asking.
if TYPE_CHECKING:
    from ..core.changes import Outcome
    from ..core.kinds.teams import LiveTeam
    from ..core.kinds.users import LiveUser
    from ..core.options import Options
    from ..core.plan import Plan
    from ..core.ports import Lock, Sealer
    from ..core.safety import Brakes


@dataclass(frozen=True)
class Settings:
    """What the operator said, outside the roster: flags and environment."""

    proxy_url: str | None = None  # --proxy-url, else LITELLM_PROXY_URL
    kube_target: str | None = None  # --kube-target, else LITELLM_PROXY_KUBE: "namespace[/service]" the roster may use
    kube_context: str | None = None
    master_key: str = ""  # LITELLM_MASTER_KEY
    viewer_key: str = ""  # LITELLM_VIEWER_KEY: a proxy_admin_viewer's key, enough for every read-only command
    header_vars: frozenset[str] = frozenset()  # RECONCILE_HEADER_VARS: variables roster headers may expand
    ca_bundle: str | None = None
    timeout: float | None = None
    actor: str = "litellm-roster"
    now: str | None = None  # RECONCILE_NOW: plan as of another time
    prover: Prover = Prover()  # RECONCILE_PROOF_KEY (proofs.py)
    max_share: float | None = None  # RECONCILE_MAX_SHARE and RECONCILE_MAX_COUNT: the brakes' thresholds
    max_count: int | None = None

    @classmethod
    def from_environment(cls, *, proxy_url: str | None = None, kube_target: str | None = None,
                         kube_context: str | None = None, ca_bundle: str | None = None,
                         timeout: float | None = None) -> Settings:
        env = os.environ
        REDACT.add(env.get("LITELLM_MASTER_KEY"), env.get("LITELLM_VIEWER_KEY"))
        return cls(proxy_url=proxy_url or env.get("LITELLM_PROXY_URL") or None,
                   kube_target=kube_target or env.get("LITELLM_PROXY_KUBE") or None, kube_context=kube_context,
                   # A key pasted with its newline is the same key (as a header value it would be refused).
                   master_key=env.get("LITELLM_MASTER_KEY", "").strip(),
                   viewer_key=env.get("LITELLM_VIEWER_KEY", "").strip(),
                   header_vars=frozenset(v for v in re.split(r"[\s,]+", env.get("RECONCILE_HEADER_VARS", "")) if v),
                   ca_bundle=ca_bundle, timeout=timeout, actor=actor(), now=env.get("RECONCILE_NOW") or None,
                   prover=Prover.from_secret(env.get(PROOF_KEY, "")),
                   max_share=_env_number("RECONCILE_MAX_SHARE", float),
                   max_count=_env_number("RECONCILE_MAX_COUNT", int))

    def brakes(self, roster: Roster, *, max_share: float | None = None, max_count: int | None = None,
               **allowed: Any) -> Brakes:
        """The flags' thresholds, else the environment's, tightened by the roster's, and the flags' narrow
        overrides (safety.Brakes.for_roster)."""
        from ..core.safety import Brakes

        return Brakes.for_roster(roster, max_share=self.max_share if max_share is None else max_share,
                                 max_count=self.max_count if max_count is None else max_count, **allowed)


def _env_number(name: str, kind: Callable[[str], float]) -> float | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a {'share like 0.3' if kind is float else 'whole number'}") \
            from None


def actor() -> str:
    """Who is applying, one string for the audit log, LiteLLM's changed-by header and the lock."""
    return (os.environ.get("RECONCILE_ACTOR") or os.environ.get("GITHUB_ACTOR") or os.environ.get("USER")
            or "litellm-roster")


def clock(settings: Settings) -> Callable[[], datetime]:
    """RECONCILE_NOW pretends the time is another: for what-if plans and for tests that move a sandbox's clock."""
    if not settings.now:
        return utcnow
    try:
        start = parse_instant(settings.now, end_of_day=False)
    except ValueError:
        raise ConfigError(f"RECONCILE_NOW={settings.now!r} is not a time; use 2027-01-31T09:00:00Z") from None
    offset = start - utcnow()
    return lambda: utcnow() + offset


def expand_headers(roster: Roster, allowed: frozenset[str]) -> dict[str, str]:
    """Roster headers with ${VAR} expanded, for allowed variables only: a pull request must not be able to send
    LITELLM_MASTER_KEY (or anything else in CI's environment) to the proxy in a header of its choosing."""
    out = {}
    for name, value in roster.proxy_headers.items():
        def lookup(m: re.Match[str], name: str = name) -> str:
            var = m.group(1)
            if var not in allowed:
                raise ConfigError(f"{roster.path}: proxy.headers.{name} uses ${{{var}}}, which the operator has not "
                                  f"allowed; list it in RECONCILE_HEADER_VARS (outside the roster) if the header "
                                  "needs it")
            if var not in os.environ:
                raise ConfigError(f"proxy.headers.{name} uses ${{{var}}}, which is not set in the environment")
            return os.environ[var]
        out[name] = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lookup, value)
    return out


def _confirmed_kube(roster: Roster, settings: Settings, *, service: bool) -> None:
    kube = roster.kubernetes
    assert kube is not None
    wanted = f"{kube.namespace}/{kube.service}" if service else kube.namespace
    what = f"the Service {wanted}" if service else f"a Secret in namespace {kube.namespace}"
    given = (settings.kube_target or "").strip("/")
    if not given:
        raise ConfigError(f"{roster.path}: proxy.kubernetes names {what}, but the master key goes only to a proxy "
                          f"the operator named: set LITELLM_PROXY_KUBE={wanted} (or --kube-target) to confirm it, "
                          "or pass --proxy-url")
    if given != wanted and not (not service and given.split("/")[0] == wanted):
        raise ConfigError(f"{roster.path}: proxy.kubernetes names {what}, but the operator named {given} "
                          "(LITELLM_PROXY_KUBE); the roster may not send the master key elsewhere")


def _confirmed_url(roster: Roster, settings: Settings) -> str | None:
    if settings.proxy_url and settings.proxy_url.rstrip("/").endswith("/v1"):
        raise ConfigError(f"the proxy URL {settings.proxy_url} ends in /v1: name the proxy itself "
                          f"({settings.proxy_url.rstrip('/')[:-3]}); the tool adds each route's path")
    if settings.proxy_url:
        if roster.proxy_url and normalize_url(roster.proxy_url) != normalize_url(settings.proxy_url):
            raise ConfigError(f"{roster.path}: proxy.url is {roster.proxy_url}, but the operator named "
                              f"{settings.proxy_url} (--proxy-url or LITELLM_PROXY_URL); the roster may not send the "
                              "master key elsewhere. Fix proxy.url or remove it")
        return settings.proxy_url.rstrip("/")
    if roster.kubernetes is not None and roster.kubernetes.service:
        _confirmed_kube(roster, settings, service=True)
        return None
    if roster.proxy_url:
        raise ConfigError(f"{roster.path}: proxy.url names {roster.proxy_url}, but the master key goes only to a "
                          f"proxy the operator named: pass --proxy-url {roster.proxy_url} or set LITELLM_PROXY_URL")
    raise ConfigError("no proxy URL: pass --proxy-url or set LITELLM_PROXY_URL (or name a Kubernetes Service in "
                      "proxy.kubernetes and confirm it with LITELLM_PROXY_KUBE)")


def check_models(roster: Roster, catalog: ModelCatalog) -> None:
    """Every model name is served, reported once where it is written (a group member at the group, not per
    developer who uses the group)."""
    problems = [Problem(roster.path, ref.line, ref.column, ref.field, catalog.unknown_message(ref.name))
                for ref in roster.model_refs if not catalog.serves(ref.name)]
    if problems:
        raise ModelError("the roster grants models this proxy does not serve; nothing was changed:\n"
                         + "\n".join(f"  {p}" for p in sorted(problems, key=lambda p: (p.line, p.column))))


def check_reviewed(plan: Plan, roster_path: str, *, reviewed_file: str | None, checksum: str | None) -> None:
    if reviewed_file:
        try:
            reviewed = json.loads(Path(reviewed_file).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--plan {reviewed_file}: cannot read it ({type(exc).__name__})") from None
        if reviewed.get("environment") != plan.environment:
            raise StalePlanError(f"{reviewed_file} is a plan for environment {reviewed.get('environment') or 'none'}, "
                                 f"not {plan.environment or 'none'}; plan this environment")
        if reviewed.get("roster_sha256") != plan.roster_sha256:
            raise StalePlanError(f"plan is stale: {roster_path} changed since {reviewed_file} was made; plan again")
        if reviewed.get("checksum") != plan.checksum:
            what = "the live keys or teams changed" if reviewed.get("live_fingerprint") != plan.live_fingerprint \
                else "the changes differ"
            raise StalePlanError(f"plan is stale: {what} since {reviewed_file} was made "
                                 f"({reviewed.get('summary')} then; {plan.summary} now); plan again")
    if checksum and checksum != plan.checksum:
        raise StalePlanError(f"plan checksum is {plan.checksum}, not the reviewed {checksum}: the roster or "
                             "the proxy changed since review; plan again")


@dataclass
class Session:
    """A roster connected to its proxy: one client, the stable proxy name, and whatever must be closed."""

    roster: Roster
    settings: Settings
    client: LiteLLMClient
    proxy_url: str  # the proxy's stable address: for key files, reports and the lock
    clock: Callable[[], datetime]
    kube_api: Any = None
    _stack: ExitStack = field(default_factory=ExitStack)

    @classmethod
    def open(cls, roster: Roster, settings: Settings, *, admin: bool) -> Session:
        """admin: the command writes (apply), so it needs the master key; else a viewer key is preferred."""
        stack = ExitStack()
        try:
            return cls._open(roster, settings, admin, stack)
        except BaseException:
            stack.close()
            raise

    @classmethod
    def _open(cls, roster: Roster, settings: Settings, admin: bool, stack: ExitStack) -> Session:
        kube = roster.kubernetes
        url = public_url = _confirmed_url(roster, settings)
        api = None
        credential = settings.master_key if admin else (settings.viewer_key or settings.master_key)
        needs_secret = not credential and kube is not None and kube.secret_name
        if (url is None or needs_secret) and kube is not None:
            from ..adapters.kube import api_client

            if needs_secret:
                _confirmed_kube(roster, settings, service=False)
            api = api_client(settings.kube_context or kube.context)
        if url is None:
            from ..adapters.kube import proxy_url

            assert kube is not None
            url, public_url, forward = proxy_url(api, kube)
            if forward is not None:
                stack.callback(forward.close)
        if needs_secret:
            from ..adapters.kube import read_secret

            assert kube is not None
            credential = read_secret(api, kube.namespace, kube.secret_name or "", kube.secret_key or "")
        if not credential:
            raise ConfigError("LITELLM_MASTER_KEY is not set: export the proxy's master key (from your secret store)"
                              + ("" if admin else ", or a read-only key in LITELLM_VIEWER_KEY"))
        headers = expand_headers(roster, settings.header_vars)
        client = LiteLLMClient(url, credential, headers=headers, actor=settings.actor,
                               verify=settings.ca_bundle or True, timeout=settings.timeout)
        stack.callback(client.close)
        assert public_url is not None
        return cls(roster, settings, client, normalize_url(public_url), clock(settings), api, stack)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ reads

    def catalog(self) -> ModelCatalog:
        return ModelCatalog.from_model_info(self.client.model_info())

    def live_keys(self) -> list[LiveKey]:
        return [LiveKey.from_api(obj) for obj in self.client.list_keys()]

    def live_teams(self) -> list[LiveTeam]:
        """Every team, and for each that claims to be the tool's the members' budgets and spend (one /team/info
        each). Which claims hold is the diff's to decide (kinds/teams.classify_teams, with the proofs), once."""
        from ..core.kinds.teams import LiveTeam

        teams = [LiveTeam.from_api(obj) for obj in self.client.list_teams()]
        ours = [t.team_id for t in teams if t.claims]
        if not ours:
            return teams
        with ThreadPoolExecutor(min(8, len(ours))) as pool:
            infos = dict(zip(ours, pool.map(self.client.team_info, ours), strict=True))
        return [t.with_memberships((infos[t.team_id] or {}).get("team_memberships")) if t.team_id in infos else t
                for t in teams]

    def live_users(self) -> list[LiveUser]:
        """The proxy's users in the roster's namespace: the only ones a plan reads."""
        from ..core.kinds.users import LiveUser

        return [LiveUser.from_api(obj) for obj in self.client.list_users()
                if str(obj.get("user_id", "")).startswith(USER_PREFIX)]

    def plan(self, options: Options | None = None) -> Plan:
        if options is not None and options.restore and not self.settings.prover.enabled:
            raise ConfigError(f"--restore registers only key files whose proof verifies, and {PROOF_KEY} is not set: "
                              "set it to the key the files were written with")
        # The proxy's answers are independent: one round trip for all, while the key files are read.
        with ThreadPoolExecutor(5) as pool:
            asked = (pool.submit(self.catalog), pool.submit(self.live_keys), pool.submit(self.live_teams),
                     pool.submit(self.live_users), pool.submit(self.client.version))
            from ..adapters.keyfiles import delivery_dir, read_key_files, read_records
            from ..core.plan import diff

            records = read_records(delivery_dir(self.roster))
            # Before the roster declared environments its key files lay one level up: they move in (plan.MoveFile).
            legacy = read_key_files(delivery_dir(self.roster).parent) if self.roster.environment else {}
            recovered = None
            if options is not None and options.recover_from:  # laid out as the repository: <dir>/keys[/<env>]
                where = Path(options.recover_from) / self.roster.keys.delivery_dir
                recovered = (str(where), read_key_files(where))
            catalog, live, teams, users, version = (future.result() for future in asked)
        check_models(self.roster, catalog)
        plan = diff(self.roster, live, records, self.clock(), catalog=catalog, proxy_url=self.proxy_url,
                    options=options, teams=teams, users=users, prover=self.settings.prover, legacy=legacy,
                    recovered=recovered)
        warning = version_warning(version)
        plan = replace(plan, simulated=bool(self.settings.now))
        return replace(plan, warnings=(warning, *plan.warnings)) if warning else plan

    # ------------------------------------------------------------ writes

    def require_admin(self) -> None:
        """Before any write: the credential must be the proxy's master key. A viewer key, or a developer's key
        pasted by mistake, stops here with what it is, and nothing is changed."""
        who = self.client.whoami()
        if who.master:
            return
        what = f"a virtual key of user {who.user_id!r}" if who.user_id else "a virtual key with no user"
        if who.role:
            what += f" (role {who.role})"
        hint = " It is read-only: use it for plan (LITELLM_VIEWER_KEY), and the master key for apply." \
            if who.role == "proxy_admin_viewer" else ""
        raise CredentialError(f"apply needs the proxy's master key, but LITELLM_MASTER_KEY holds {what}; nothing "
                              f"was changed.{hint}")

    def lock(self, *, on_proxy: bool = True) -> Lock:
        """One apply per proxy: the lock kept on the proxy (adapters/proxylock.py), which every apply anywhere
        takes, and this machine's: a Lease where the roster uses Kubernetes, else a local lock file."""
        from ..adapters.lock import FileLock, default_holder, lock_path

        kube = self.roster.kubernetes
        holder = default_holder(self.settings.actor)
        local: Lock
        if self.kube_api is None or kube is None:
            local = FileLock(lock_path(self.proxy_url), holder)
        else:
            from ..adapters.kube import LeaseLock

            # Named for the Service (or URL), not the local port-forward address, which changes every run.
            target = hashlib.sha256(f"{kube.namespace}/{kube.service or self.proxy_url}".encode()).hexdigest()[:12]
            local = LeaseLock(self.kube_api, kube.namespace, f"litellm-roster-{target}", holder)
        if not on_proxy:
            return local
        from ..adapters.proxylock import BothLocks, ProxyLock

        return BothLocks(local, ProxyLock(self.client, holder))

    def status_rows(self) -> tuple[list[Any], list[Any]]:
        """Key rows and team rows."""
        from ..adapters.keyfiles import delivery_dir, read_records
        from ..core.status import status_rows

        with ThreadPoolExecutor(2) as pool:
            keys, teams = pool.submit(self.live_keys), pool.submit(self.live_teams)
            records = read_records(delivery_dir(self.roster))
            return status_rows(self.roster, keys.result(), records, self.clock(), teams.result(),
                               self.settings.prover)

    def apply(self, options: Options, sealer: Sealer, *, lock_timeout: float = 0.0, reviewed_file: str | None = None,
              checksum: str | None = None, brakes: Brakes | None = None, force: bool = False,
              audit_path: Path | None = None, on_plan: Callable[[Plan], None] = lambda plan: None,
              on_outcome: Callable[[Outcome], None] = lambda outcome: None,
              stop: threading.Event | None = None) -> ApplyResult:
        """The whole apply: the credential proven, the lock held, a fresh plan checked against the reviewed one and
        the brakes, then carried out with each finished change audited (and passed to on_outcome)."""
        from ..adapters.audit import AuditLog
        from .apply import Applier

        if options.restore and not (os.environ.get("SOPS_AGE_KEY_FILE") or os.environ.get("SOPS_AGE_KEY")):
            raise ConfigError("--restore decrypts key files: give sops an admin identity in SOPS_AGE_KEY_FILE (or "
                              "SOPS_AGE_KEY), one of keys.admin_recipients")
        self.require_admin()
        # Bad input is refused before anything is written, the proxy's lock included: the plan checks the models
        # again under the lock, this is the one read more that keeps an unknown model from touching the proxy.
        check_models(self.roster, self.catalog())
        lock = self.lock()
        lock.acquire(lock_timeout)
        try:
            plan = self.plan(options)
            check_reviewed(plan, self.roster.path, reviewed_file=reviewed_file, checksum=checksum)
            on_plan(plan)
            if plan.empty:
                self._write_sops_config(plan)
                return ApplyResult(plan, [], 0)
            (brakes or self.settings.brakes(self.roster)).check(plan, force=force)
            default = f"audit-{self.roster.environment}.jsonl" if self.roster.environment else "audit.jsonl"
            audit = AuditLog(audit_path or Path(self.roster.path).parent / default, checksum=plan.checksum,
                             proxy_url=self.proxy_url, actor=self.settings.actor)

            def finished(outcome: Outcome) -> None:
                audit(outcome)
                on_outcome(outcome)

            applier = Applier(self.roster, self.client, sealer, proxy_url=self.proxy_url, clock=self.clock,
                              hooks=crash_seam(), on_outcome=finished, prover=self.settings.prover)
            if stop is not None:
                applier.stop = stop
            outcomes = applier.run(plan)
            if not applier.not_started:
                self._write_sops_config(plan)
            return ApplyResult(plan, outcomes, applier.not_started)
        finally:
            lock.release()


    def _write_sops_config(self, plan: Plan) -> None:
        from ..adapters.delivery import write_atomic
        from ..adapters.keyfiles import delivery_dir
        from ..core.records import SOPS_CONFIG

        if plan.sops_config is not None:
            write_atomic(delivery_dir(self.roster) / SOPS_CONFIG, plan.sops_config.encode())


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    outcomes: list[Outcome]
    not_started: int

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def conflicts(self) -> list[str]:
        return [c.name for c in self.plan.changes if c.kind == "conflict"]


def crash_seam() -> Callable[[str, str], None] | None:
    """The crash-safety tests' seam: RECONCILE_CRASH_AT=step[:name] kills this process with SIGKILL at that step
    boundary of a create or rotation (docs/design.md). Unset, it is no hook at all."""
    spec = os.environ.get("RECONCILE_CRASH_AT")
    if not spec:
        return None

    def hook(step: str, name: str) -> None:
        if spec in (step, f"{step}:{name}"):
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def force_unlock(roster: Roster, settings: Settings, lock_id: str) -> Any:
    """Clear a dead apply's lock by its id: the proxy's (with the master key), the Lease where the roster uses
    Kubernetes, else the local file."""
    if settings.master_key or roster.kubernetes is not None:
        with Session.open(roster, settings, admin=bool(settings.master_key)) as session:
            return session.lock(on_proxy=bool(settings.master_key)).force_unlock(lock_id)
    from ..adapters.lock import FileLock, lock_path

    if not settings.proxy_url:
        raise ConfigError("no proxy URL: pass --proxy-url or set LITELLM_PROXY_URL")
    return FileLock(lock_path(normalize_url(settings.proxy_url))).force_unlock(lock_id)


def import_roster_text(settings: Settings, alias: str) -> tuple[str, int, list[str]]:
    """A starting roster from the keys on the operator's proxy (reconcile import), how many developers, and the
    model names it copied that the proxy does not serve (each with a did-you-mean)."""
    from ..core.kinds.teams import LiveTeam
    from .bootstrap import import_roster

    if not settings.proxy_url:
        raise ConfigError("no proxy URL: set LITELLM_PROXY_URL or pass --proxy-url")
    credential = settings.viewer_key or settings.master_key
    if not credential:
        raise ConfigError("LITELLM_MASTER_KEY (or a read-only LITELLM_VIEWER_KEY) is not set")
    with LiteLLMClient(settings.proxy_url, credential, actor=settings.actor, verify=settings.ca_bundle or True,
                       timeout=settings.timeout) as client:
        live = [LiveKey.from_api(obj) for obj in client.list_keys()]
        teams = [LiveTeam.from_api(obj) for obj in client.list_teams()]
        catalog = ModelCatalog.from_model_info(client.model_info())
    text, count = import_roster(live, alias, normalize_url(settings.proxy_url), teams)
    import yaml

    doc = yaml.safe_load(text)
    unserved = [f"{holder.get('name')}: {catalog.unknown_message(model)}"
                for holder in [*doc.get("developers", []), *doc.get("teams", [])]
                for model in holder.get("models", []) if not catalog.serves(model)]
    return text, count, unserved
