"""Every output is safe: redaction whatever a secret's shape, markdown that a roster or proxy string cannot hijack,
private keys named but never echoed, unreadable input as one located line, and the last-resort handler."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from helpers import MASTER, Workspace

from reconciler import cli
from reconciler.redact import Redactor


def test_redaction_knows_every_shape_and_cuts_after_masking():
    redact = Redactor()
    redact.add("MasterSecret-correct-horse", "x")  # too short to be a secret: ignored, not mangling every x
    text = "Authorization: Bearer MasterSecret-correct-horse; sk-abcdefghij, xylophone, AGE-SECRET-KEY-1QPZRY9X8"
    masked = redact(text)
    assert "MasterSecret" not in masked and "abcdefghij" not in masked and "QPZRY9X8" not in masked
    assert "Authorization: Bearer ***" in masked and "xylophone" in masked
    # Truncation never leaves the start of a secret behind: "Bearer MasterSecre" is masked before the cut.
    assert redact.shorten("error: Bearer MasterSecret-correct-horse and more words", 20) == "error: Bearer *** a…"
    assert redact.shorten("token NotRegistered-but Bearer MasterSecre", 200) == "token NotRegistered-but Bearer ***"


def test_private_keys_pasted_as_recipients_are_named_not_echoed(workspace):
    age_secret = "AGE-SECRET-KEY-1QQPZRY9X8GF2TVDW0S3JN54KHCE6MUA7LQPZRY9X8GF2TVDW0S3JN54KHC"
    ssh_secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    for secret, kind in ((age_secret, "age"), (ssh_secret, "SSH")):
        workspace.write_roster([{"name": "jane"}])
        doc = workspace.roster.read_text().replace(workspace.people["jane"].recipient, json.dumps(secret))
        workspace.roster.write_text(doc)
        result = workspace.run("validate", "--offline")
        assert result.rc == 1
        assert f"developers[0] (jane).recipient: this is an {kind} PRIVATE key" in result.stderr
        assert "Treat the private key as leaked" in result.stderr
        assert secret[5:20] not in result.stderr and "b3BlbnNzaC1" not in result.stderr


def test_deeply_nested_yaml_is_one_located_line(workspace):
    workspace.roster.write_text("{a: " * 5000 + "1" + "}" * 5000)
    deep = workspace.run("validate", "--offline")
    assert deep.rc == 1 and "Traceback" not in deep.stderr
    assert re.fullmatch(r"error: 1 problem in the roster; nothing was changed:\n  roster.yaml:\d+:\d+: the document "
                        r"nests deeper than 32 levels; a roster is a few levels deep: check the brackets\n",
                        deep.stderr), deep.stderr


def test_markdown_plan_cannot_be_hijacked(workspace, sandbox):
    """Strings from the proxy (who created a key, its alias) and the roster land in a pull-request comment."""
    hostile = "x<!-- @org/admins | [click](https://evil.example) -->"
    sandbox.store.user_new("master", {"user_id": hostile, "user_role": "internal_user"})
    own = httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                     json={"user_id": hostile}).json()["key"]
    httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {own}"},
               json={"key_alias": "claude-code-jane", "metadata": {"managed_by": "litellm-roster",
                                                                   "roster_name": "jane"}})
    workspace.write_roster([{"name": "jane"}, {"name": "john"}])
    # By default a comment names no detail of a key the tool does not manage (it may be a fork's public PR).
    hidden = workspace.run("plan", "--format", "markdown")
    assert hidden.rc == 0 and "evil" not in hidden.stdout and "org/admins" not in hidden.stdout, hidden.stdout
    assert "| `!` | jane | conflict | a key or user the tool does not manage (details in the job's log) | |" \
        in hidden.stdout
    plan = workspace.run("plan", "--format", "markdown", env=workspace.env(RECONCILE_COMMENT_DETAILS="1"))
    assert plan.rc == 0, plan.stderr
    row = next(line for line in plan.stdout.splitlines() if line.startswith("| `!`"))
    assert "<!--" not in plan.stdout and "](" not in plan.stdout and "@org" not in plan.stdout
    assert "https://" not in plan.stdout  # GitHub would link a bare URL
    assert "&lt;\\!-- @\u200borg/admins \\| \\[click\\]\\(https:\u200b//evil.example\\) --&gt;" in row
    assert len(re.findall(r"(?<!\\)\|", row)) == 6  # five cells: nothing broke out of the table
    status = workspace.run("status", "--format", "markdown")
    assert "<!--" not in status.stdout and "@org" not in status.stdout


def test_the_json_plan_hides_others_details(workspace, sandbox):
    """The JSON plan is uploaded as an artifact, as public as the comment: a key the tool does not manage appears as
    its kind and developer only, and apply --plan still accepts it (the checksum covers the whole plan)."""
    sandbox.store.user_new("master", {"user_id": "dev1", "user_role": "internal_user"})
    own = httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                     json={"user_id": "dev1"}).json()["key"]
    httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {own}"},
               json={"key_alias": "claude-code-jane-secret-project", "models": ["claude-3-opus-20240229"],
                     "metadata": {"managed_by": "litellm-roster", "roster_name": "jane"}})
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("plan", "--out", "plan.json").rc == 0
    hidden = (workspace.root / "plan.json").read_text()
    conflicts = [c for c in json.loads(hidden)["changes"] if c["kind"] == "conflict"]
    why = "hidden: a key or user the tool does not manage (RECONCILE_COMMENT_DETAILS=1 shows them)"
    assert conflicts == [{"kind": "conflict", "developer": "jane", "details": why}]
    assert "secret-project" not in hidden and "dev1" not in hidden
    shown = workspace.run("plan", "--format", "json", env=workspace.env(RECONCILE_COMMENT_DETAILS="1"))
    assert "claude-code-jane-secret-project" in shown.stdout and "'dev1'" in shown.stdout
    applied = workspace.run("apply", "--plan", "plan.json")
    assert "plan is stale" not in applied.stderr and "jane: create" in applied.stdout, applied.stdout + applied.stderr


@pytest.fixture
def keep_logging():
    """cli.main installs its own stderr handler; put the test's logging back afterwards."""
    logger = logging.getLogger("reconciler")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def test_last_resort_handler_is_one_redacted_line(monkeypatch, capsys, sandbox, people, tmp_path, keep_logging):
    ws = Workspace(tmp_path, sandbox.url, people)
    ws.write_roster([{"name": "jane"}])
    monkeypatch.chdir(tmp_path)
    for name, value in ws.env().items():
        monkeypatch.setenv(name, value)

    def broken(*args, **kwargs):
        raise ValueError(f"cannot parse {{'auth': 'Bearer {MASTER}'}}")

    monkeypatch.setattr("reconciler.service.session.Session.plan", broken)
    assert cli.main(["plan"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err and MASTER not in captured.err
    assert captured.err == ("error: unexpected ValueError: cannot parse {'auth': 'Bearer ***'} (a bug: please "
                            "report it; -vv shows where)\n")
    assert cli.main(["plan", "-vv"]) == 1
    verbose = capsys.readouterr().err
    assert "Traceback" in verbose and "in broken" in verbose and MASTER not in verbose


def test_an_unexpected_error_in_one_change_is_that_changes_outcome(sandbox, people, tmp_path, sops):
    """Any exception inside a change becomes its failed outcome (printed and audited); the others finish."""
    from reconciler.adapters.audit import AuditLog
    from reconciler.adapters.litellm import LiteLLMClient
    from reconciler.core.plan import diff
    from reconciler.core.records import Records
    from reconciler.core.roster import load_roster
    from reconciler.service.apply import Applier

    ws = Workspace(tmp_path, sandbox.url, people)
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    roster = load_roster(ws.roster)
    now = datetime.now(timezone.utc)

    def bug(step: str, name: str) -> None:
        if (step, name) == ("after-file", "john"):
            raise KeyError(f"Bearer {MASTER}")

    audit = AuditLog(tmp_path / "audit.jsonl", checksum="c", proxy_url=sandbox.url, actor="t")
    with LiteLLMClient(sandbox.url, MASTER) as client:
        plan = diff(roster, [], Records(), now)
        outcomes = Applier(roster, client, sops, proxy_url=sandbox.url, clock=lambda: now, hooks=bug,
                           on_outcome=audit).run(plan)
    by_name = {o.change.name: o for o in outcomes}
    assert by_name["jane"].ok and not by_name["john"].ok
    assert by_name["john"].message == "unexpected KeyError: 'Bearer ***' (a bug: please report it)"
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert sorted((line["developer"], line["result"]) for line in lines) == [("jane", "ok"), ("john", "failed")]
    assert not (ws.keys / "john.sops.yaml").exists()  # its file was restored (removed): no key without its file


@pytest.mark.parametrize("where", ["audit-dir"])
def test_an_unwritable_audit_log_stops_apply_before_any_change(workspace, sandbox, where):
    workspace.write_roster([{"name": "jane"}])
    (workspace.root / "audit-dir").mkdir()
    result = workspace.run("apply", "--audit-log", "audit-dir")
    assert result.rc == 1 and "error: cannot write the audit log audit-dir" in result.stderr
    assert not sandbox.store.rows and not Path(workspace.keys).exists()
