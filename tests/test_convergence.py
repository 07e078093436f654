"""A stateful property test: random roster edits, applied under random injected faults and SIGKILLs at random
steps; after every step nothing is broken, and once the faults stop one apply converges."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import httpx
import pyrage
from helpers import MASTER, Person, Workspace, check_invariant, scan_for_secrets
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from litellm_roster_sandbox import Fault, start_sandbox
from reconciler.adapters.keyfiles import read_key_files
from reconciler.core.timeutil import iso, utcnow

NAMES = ("ann", "bob", "cy")
MODEL_SETS = (["claude-code"], ["claude-sonnet-4-5-20250929"], ["claude-3-opus-20240229", "claude-sonnet-4.5"])
FAULTS = {
    "none": [],
    "503s": [Fault("*", "status", 503, rate=0.3)],
    "429s": [Fault("*", "status", 429, rate=0.3, retry_after=0.02)],
    "resets-before": [Fault("*", "reset-before", rate=0.2)],
    "lost-answers": [Fault("POST /key/generate", "reset-after", rate=0.5),
                     Fault("POST /key/update", "reset-after", rate=0.5),
                     Fault("POST /key/delete", "reset-after", rate=0.5)],
    "500s-on-writes": [Fault("POST /key/generate", "status", 500, rate=0.4),
                       Fault("POST /key/update", "status", 500, rate=0.4)],
}
CRASHES = (None, "after-file", "after-retire", "after-register")
STATS = {"sequences": 0, "steps": 0, "faulted_applies": 0, "killed_applies": 0}


class RosterMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="convergence-"))
        self.people = {}
        for name in (*NAMES, "admin", *(f"{n}-alt" for n in NAMES)):  # a recipient is one developer's (roster rule)
            identity = pyrage.x25519.Identity.generate()
            (self.tmp / f"{name}.txt").write_text(f"{identity}\n")
            self.people[name] = Person(name, str(identity.to_public()), self.tmp / f"{name}.txt")
        self.sandbox = start_sandbox(master_key=MASTER)
        (self.tmp / "work").mkdir()
        self.ws = Workspace(self.tmp / "work", self.sandbox.url, self.people)
        self.roster: dict[str, dict] = {name: {} for name in NAMES}
        self.recipient_of: dict[str, str] = {name: name for name in NAMES}
        self.write()
        bystander = httpx.post(f"{self.sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                               json={"key_alias": "ci-bot", "models": ["claude-3-opus-20240229"]}).json()
        self.bystander = dict(self.sandbox.store.rows[bystander["token"]])
        self.ws.known_secrets.append(bystander["key"])
        STATS["sequences"] += 1

    def write(self):
        developers = [{"name": n, **spec, "recipient": self.people[self.recipient_of[n]].recipient}
                      for n, spec in sorted(self.roster.items())]
        self.ws.write_roster(developers, grace="1h")

    @rule(name=st.sampled_from(NAMES), models=st.sampled_from(MODEL_SETS))
    def add_or_change_models(self, name, models):
        self.roster.setdefault(name, {})["models"] = models
        self.recipient_of.setdefault(name, name)
        self.write()

    @precondition(lambda self: self.roster)
    @rule(data=st.data())
    def remove(self, data):
        del self.roster[data.draw(st.sampled_from(sorted(self.roster)))]
        self.write()

    @precondition(lambda self: self.roster)
    @rule(data=st.data(), days=st.integers(1, 60))
    def set_expiry(self, data, days):
        name = data.draw(st.sampled_from(sorted(self.roster)))
        self.roster[name]["expires"] = (utcnow() + timedelta(days=days)).date().isoformat()
        self.write()

    @precondition(lambda self: self.roster)
    @rule(data=st.data(), disabled=st.booleans())
    def disable(self, data, disabled):
        self.roster[data.draw(st.sampled_from(sorted(self.roster)))]["disabled"] = disabled
        self.write()

    @precondition(lambda self: self.roster)
    @rule(data=st.data())
    def force_rotation(self, data):
        self.roster[data.draw(st.sampled_from(sorted(self.roster)))]["rotate"] = iso(utcnow())
        self.write()

    @precondition(lambda self: self.roster)
    @rule(data=st.data())
    def change_recipient(self, data):
        name = data.draw(st.sampled_from(sorted(self.roster)))
        self.recipient_of[name] = f"{name}-alt" if self.recipient_of[name] == name else name
        self.write()

    @precondition(lambda self: self.ws.roster.exists())
    @rule(faults=st.sampled_from(sorted(FAULTS)), crash=st.sampled_from(CRASHES), who=st.sampled_from(NAMES))
    def apply_under_faults(self, faults, crash, who):
        self.sandbox.set_faults(*[Fault(**vars(f)) for f in FAULTS[faults]])
        env = self.ws.env(**({"RECONCILE_CRASH_AT": f"{crash}:{who}"} if crash else {}))
        result = self.ws.run("apply", "--force", env=env)
        self.sandbox.set_faults()
        STATS["steps"] += 1
        STATS["faulted_applies"] += faults != "none"
        STATS["killed_applies"] += result.rc == -9
        assert result.rc in (0, 1, -9), (result.rc, result.stdout, result.stderr)

    @precondition(lambda self: self.ws.roster.exists())
    @rule()
    def converge(self):
        self.sandbox.set_faults()
        result = self.ws.run("apply", "--force")
        assert result.rc == 0, result.stdout + result.stderr
        check_invariant(self.ws, self.sandbox)

    @invariant()
    def nothing_broken(self):
        if not hasattr(self, "sandbox"):
            return
        # The key the tool does not manage is exactly as it was.
        assert self.sandbox.store.rows[self.bystander["token"]] == self.bystander
        # Every key file's secret is the one its readable hash names (nothing half-written, nothing mixed up).
        for name, file in read_key_files(self.ws.keys).items():
            secret = self.ws.decrypt(name, "admin")
            assert hashlib.sha256(secret.encode()).hexdigest() == file.token_sha256, name
        # LiteLLM would refuse a duplicate alias; the tool must never even try to need one.
        aliases = [r["key_alias"] for r in self.sandbox.store.rows.values() if r["key_alias"]]
        assert len(aliases) == len(set(aliases))
        # Every registered key's plaintext is in a key file or was rotated out: never more keys than files + grace.
        managed = [r for r in self.sandbox.store.rows.values() if (r["metadata"] or {}).get("managed_by")]
        assert len(managed) <= 2 * len(NAMES)

    def teardown(self):
        if not hasattr(self, "sandbox"):
            return
        try:
            if self.ws.roster.exists():
                self.converge()
            leaks = scan_for_secrets(self.ws.outputs, self.ws.root,
                                     [MASTER, *self.sandbox.store.plaintexts, *self.ws.known_secrets])
            assert not leaks, leaks
        finally:
            self.sandbox.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
            print(f"convergence so far: {STATS}")  # the figures for the report (pytest -s shows them)


RosterMachine.TestCase.settings = settings(max_examples=10, stateful_step_count=15, deadline=None,
                                           suppress_health_check=list(HealthCheck))
test_convergence_under_faults = RosterMachine.TestCase
