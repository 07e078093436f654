"""The service layer and the Applier, called as a program would, without the CLI: a Session on the sandbox over
HTTP, real sops, and the Applier's per-change promises (one failure is that change's outcome only; the stages run
in the order table's order; proofs are written)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import httpx
import pytest
from helpers import MASTER, PROOF_KEY

from reconciler.adapters.delivery import Sops
from reconciler.core.changes import STAGE
from reconciler.core.options import Options
from reconciler.core.proofs import Prover
from reconciler.core.roster import load_roster
from reconciler.errors import CredentialError
from reconciler.service.apply import Applier
from reconciler.service.session import Session, Settings


@pytest.fixture
def session(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}, {"name": "john"}])
    settings = Settings(proxy_url=sandbox.url, master_key=MASTER, prover=Prover(PROOF_KEY.encode()))
    with Session.open(load_roster(workspace.roster), settings, admin=True) as opened:
        yield opened


def test_a_session_plans_and_applies_without_the_cli(session, sandbox, workspace):
    plan = session.plan(Options())
    assert [(c.kind, c.name) for c in plan.actions] == [("create-user", "jane"), ("create-user", "john"),
                                                         ("create", "jane"), ("create", "john")]
    seen: list[str] = []
    result = session.apply(Options(), Sops(), on_plan=lambda p: seen.append(p.checksum),
                           audit_path=workspace.root / "audit.jsonl")
    assert seen == [plan.checksum] and not result.failed and len(result.outcomes) == 4
    assert session.plan(Options()).empty
    for name in ("jane", "john"):
        secret = workspace.decrypt(name)
        row = sandbox.store.rows[hashlib.sha256(secret.encode()).hexdigest()]
        assert Prover(PROOF_KEY.encode()).since(row["metadata"]["roster_proof"], "key", name, row["token"])
    assert (workspace.root / "audit.jsonl").read_text().count("\n") == 4


def test_a_session_with_a_developer_key_refuses_to_write(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}])
    secret = httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                        json={"key_alias": "not-the-master"}).json()["key"]
    workspace.known_secrets.append(secret)
    settings = Settings(proxy_url=sandbox.url, master_key=secret)
    with Session.open(load_roster(workspace.roster), settings, admin=True) as opened, \
            pytest.raises(CredentialError, match="apply needs the proxy's master key"):
        opened.require_admin()


def test_the_applier_keeps_going_past_a_failed_change_in_stage_order(session, sandbox, workspace):
    """One change that fails (its key file cannot be written) is that change's outcome; the others run, in the
    stages of changes.STAGES."""
    plan = session.plan(Options())
    blocked = workspace.keys / "john.sops.yaml"
    blocked.mkdir(parents=True)  # a directory where john's key file goes: writing it fails
    order: list[str] = []
    applier = Applier(session.roster, session.client, Sops(), proxy_url=session.proxy_url, clock=session.clock,
                      on_outcome=lambda o: order.append(o.change.kind), prover=Prover(PROOF_KEY.encode()))
    outcomes = applier.run(plan)
    by_name = {(o.change.kind, o.change.name): o for o in outcomes}
    assert by_name[("create", "jane")].ok and not by_name[("create", "john")].ok
    assert "IsADirectoryError" in by_name[("create", "john")].message
    assert [STAGE[k] for k in order] == sorted(STAGE[k] for k in order)  # users, then keys
    assert not [row for row in sandbox.store.rows.values() if row.get("key_alias") == "claude-code-john"]
    assert applier.not_started == 0


def test_the_renderers_show_the_same_plan_three_ways(session):
    from reconciler.cli.render import render

    plan = session.plan(Options())
    text = render(plan, "text", roster="roster.yaml", proxy_url="http://proxy")
    markdown = render(plan, "markdown", roster="roster.yaml", proxy_url="http://proxy")
    data = json.loads(render(plan, "json", roster="roster.yaml", proxy_url="http://proxy"))
    assert plan.summary in text and f"**{plan.summary}**" in markdown and data["summary"] == plan.summary
    assert plan.checksum in text and plan.checksum in markdown and data["checksum"] == plan.checksum
    assert [c["kind"] for c in data["changes"]] == [c.kind for c in plan.changes]
    empty = replace(plan, changes=())
    assert "No changes." in render(empty, "text", roster="r", proxy_url="u") and "Checksum" not in \
        render(empty, "markdown", roster="r", proxy_url="u")
