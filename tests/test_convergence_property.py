"""The convergence property, on the code that runs: for any roster, live keys and key files, the real Applier
carries out the plan against the sandbox (over HTTP on 127.0.0.1) with an in-process sealer, and the next plan is
empty. Keys the tool does not manage are never removed, and aliases stay unique."""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from helpers import recipient_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_plan import ADMIN, CATALOG, NOW, A, dev, key, tok

from litellm_roster_sandbox import start_sandbox
from reconciler.adapters.keyfiles import delivery_dir, read_records
from reconciler.adapters.litellm import LiteLLMClient
from reconciler.core.live import LiveKey
from reconciler.core.plan import diff
from reconciler.core.records import KeyFile
from reconciler.core.roster import RETIRING_SUFFIX, Limits, parse_roster
from reconciler.core.timeutil import iso, utcnow
from reconciler.service.apply import Applier

MASTER = "sk-property-master-key-0001"
SERVED = [{"model_name": name, "litellm_params": {"model": model}} for name, model in CATALOG.underlying.items()]


class FakeSealer:
    """The Sealer port without sops: the readable fields as sops lays them out, api_key replaced, recipients listed."""

    def encrypt(self, document: dict[str, Any], recipients: list[str], filename: str) -> bytes:
        readable = {k: v for k, v in document.items() if k != "api_key"}
        age = "".join(f"        - recipient: {r}\n" for r in sorted(recipients))
        return (yaml.safe_dump(readable, sort_keys=False) + "api_key: ENC[fake]\nsops:\n    age:\n" + age).encode()


def _row(k: LiveKey) -> dict[str, Any]:
    return {"token": k.token, "key_alias": k.alias, "models": list(k.models), "user_id": k.user_id,
            "metadata": dict(k.metadata), "blocked": k.blocked, "expires": iso(k.expires),
            "created_at": iso(k.created_at), "created_by": k.created_by, **k.limits.as_dict()}


def converge(roster_text: str, live: list[LiveKey], files: dict[str, KeyFile]) -> None:
    root = Path(tempfile.mkdtemp(prefix="property-"))
    try:
        (root / "roster.yaml").write_text(roster_text)
        roster = parse_roster(roster_text, str(root / "roster.yaml"))
        for name, file in files.items():
            document = {"developer": name, "token_sha256": file.token_sha256}
            (root / "keys").mkdir(exist_ok=True)
            (root / "keys" / f"{name}.sops.yaml").write_bytes(FakeSealer().encrypt(document, list(file.recipients),
                                                                                   name))
        with start_sandbox(master_key=MASTER, models=SERVED) as sandbox, LiteLLMClient(sandbox.url, MASTER) as client:
            sandbox.store.offset = NOW - utcnow()  # the proxy's clock reads NOW too
            sandbox.store.seed([_row(k) for k in live])

            def plan():
                keys = [LiveKey.from_api(obj) for obj in client.list_keys()]
                return diff(roster, keys, read_records(delivery_dir(roster)), NOW, catalog=CATALOG,
                            proxy_url="http://proxy"), keys

            first, _ = plan()
            outcomes = Applier(roster, client, FakeSealer(), proxy_url="http://proxy", clock=lambda: NOW).run(first)
            assert all(o.ok for o in outcomes), [(o.change.data, o.message) for o in outcomes if not o.ok]
            again, after = plan()
            assert again.empty, [c.data for c in again.actions]
            untouched = {k.token for k in live if not k.managed and not (k.alias or "").startswith("cc-")}
            assert untouched <= {k.token for k in after}  # keys the tool does not manage are never removed
            aliases = [k.alias for k in after if k.alias]
            assert len(aliases) == len(set(aliases))  # aliases stay unique
    finally:
        shutil.rmtree(root, ignore_errors=True)


NAMES = ["ann", "bob", "cy", "dee"]
MODELS = ["m1", "m2", "m3"]


@st.composite
def scenarios(draw):
    devs = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    text = ""
    for name in devs:
        models = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True))
        extra = ""
        if draw(st.booleans()):
            extra += f"    rpm_limit: {draw(st.integers(1, 3))}\n"
        if draw(st.booleans()):
            extra += f"    expires: {iso(NOW + timedelta(days=draw(st.integers(-3, 3))))}\n"
        if draw(st.booleans()):
            extra += "    disabled: true\n"
        if draw(st.booleans()):
            extra += f"    rotate: {iso(NOW - timedelta(days=draw(st.integers(0, 5))))}\n"
        text += dev(name, "[" + ", ".join(models) + "]", extra,
                    recipient=recipient_of(draw(st.sampled_from([name, f"{name}-alt"]))))
    keys = f"  rotate_after: {draw(st.sampled_from(['0', '3d']))}\n  grace: {draw(st.sampled_from(['0', '1d']))}\n"
    if draw(st.booleans()):
        keys += "  adopt_unmanaged: true\n"
    r = (f"version: 1\nkeys:\n  alias: cc-{{name}}\n  admin_recipients: [{ADMIN}]\n{keys}"
         f"developers:\n{text}" if text else
         f"version: 1\nkeys:\n  alias: cc-{{name}}\n  admin_recipients: [{ADMIN}]\n{keys}developers: []\n")
    live, files = [], {}
    for i, name in enumerate(draw(st.lists(st.sampled_from(NAMES + ["old"]), max_size=6))):
        kind = draw(st.sampled_from(["managed", "retiring", "handmade", "other"]))
        created = NOW - timedelta(days=draw(st.integers(0, 6)))
        models = tuple(draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True)))
        token = tok(f"{name}-{i}")
        taken = {k.alias for k in live}  # LiteLLM keeps aliases unique
        if kind == "managed" and f"cc-{name}" not in taken:
            live.append(key(name, token=token, models=models, created=created,
                            limits=Limits(rpm_limit=draw(st.sampled_from([None, 1, 2])))))
        elif kind == "retiring" and f"cc-{name}{RETIRING_SUFFIX}" not in taken:
            live.append(key(name, token=token, alias=f"cc-{name}{RETIRING_SUFFIX}",
                            retire_at=iso(NOW + timedelta(hours=draw(st.integers(-30, 30)))), created=created))
        elif kind == "handmade" and f"cc-{name}" not in taken:
            live.append(key(name, token=token, managed=False, created=created))
        elif kind == "other":
            live.append(key(name, token=token, managed=False, alias=f"bot-{i}"))
        if draw(st.booleans()):
            files[name] = KeyFile(name, Path(f"keys/{name}"), draw(st.sampled_from([token, tok("stray")])),
                                  frozenset((recipient_of(draw(st.sampled_from([name, f"{name}-alt"]))), ADMIN)),
                                  {"developer": name})
    return r, live, files


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_any_plan_applied_by_the_real_applier_converges(scenario):
    converge(*scenario)


def test_two_key_files_sharing_a_hash_converge():
    """Found by the property (before key files stopped being registered): jane's and john's files both name jane's
    live key; john has none. John gets a fresh key over his file, jane keeps hers, and the plan empties."""
    roster_text = (f"version: 1\nkeys:\n  alias: cc-{{name}}\n  admin_recipients: [{ADMIN}]\n"
                   f"developers:\n{dev('jane')}{dev('john')}")
    files = {n: KeyFile(n, Path(f"keys/{n}"), tok("jane"), frozenset((A, ADMIN)), {}) for n in ("jane", "john")}
    converge(roster_text, [key("jane")], files)
