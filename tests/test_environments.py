"""Environments: one roster, a staging and a production proxy (two sandboxes on 127.0.0.1), each its own key files,
audit trail and secrets; and an existing roster moving to environments without new secrets."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from helpers import MASTER, Workspace, scan_for_secrets

from litellm_roster_sandbox import start_sandbox

SONNET = "claude-sonnet-4-5-20250929"


@pytest.fixture
def production():
    with start_sandbox(master_key=MASTER) as sb:
        yield sb


@pytest.fixture
def ws(tmp_path, sandbox, production, people):
    workspace = Workspace(tmp_path, sandbox.url, people)
    yield workspace
    secrets = [MASTER, *sandbox.store.plaintexts, *production.store.plaintexts, *workspace.known_secrets]
    leaks = scan_for_secrets(workspace.outputs, tmp_path, secrets)
    assert not leaks, leaks


def environments_roster(ws, staging_url: str, production_url: str) -> None:
    ws.write_roster([{"name": "jane"}, {"name": "john", "environments": ["staging"]}], proxy_url=False)
    doc = yaml.safe_load(ws.roster.read_text())
    doc["environments"] = {"staging": {"proxy": {"url": staging_url}, "defaults": {"max_budget": 5}},
                           "production": {"proxy": {"url": production_url},
                                          "model_groups": {"claude-code": [SONNET]}}}
    ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))


def token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def test_each_environment_gets_its_own_keys_files_and_audit(ws, sandbox, production):
    environments_roster(ws, sandbox.url, production.url)
    staging = ws.env(LITELLM_PROXY_URL=sandbox.url)
    prod = ws.env(LITELLM_PROXY_URL=production.url, RECONCILE_ENVIRONMENT="production")

    unnamed = ws.run("plan", env=staging)
    assert unnamed.rc == 1 and "declares environments staging, production; the run names none" in unnamed.stderr
    wrong = ws.run("plan", "--environment", "staging", env=ws.env(LITELLM_PROXY_URL=production.url))
    assert wrong.rc == 1 and "proxy.url is " + sandbox.url in wrong.stderr  # the environment's URL is checked
    valid = ws.run("validate", "--offline")
    assert valid.rc == 0 and "environments staging, production" in valid.stdout, valid.stderr

    plan = ws.run("plan", "--environment", "staging", env=staging)
    assert plan.stdout.startswith("Plan for roster.yaml (environment staging) against"), plan.stdout
    assert ws.run("apply", "--environment", "staging", env=staging).rc == 0
    applied = ws.run("apply", env=prod)
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert sorted(p.name for p in (ws.keys / "staging").glob("[!.]*.sops.yaml")) == \
        ["jane.sops.yaml", "john.sops.yaml"]
    assert sorted(p.name for p in (ws.keys / "production").glob("[!.]*.sops.yaml")) == ["jane.sops.yaml"]
    assert not list(ws.keys.glob("*.sops.yaml"))
    assert (ws.root / "audit-staging.jsonl").exists() and (ws.root / "audit-production.jsonl").exists()

    jane_staging = ws.decrypt("staging/jane", "jane")
    jane_production = ws.decrypt("production/jane", "jane")
    assert jane_staging != jane_production  # each environment's keys are separate secrets
    assert sandbox.store.rows[token(jane_staging)]["max_budget"] == 5
    assert production.store.rows[token(jane_production)]["models"] == [SONNET]
    assert token(jane_production) not in sandbox.store.rows and token(jane_staging) not in production.store.rows
    assert yaml.safe_load((ws.keys / "production" / "jane.sops.yaml").read_text())["environment"] == "production"
    assert ws.run("plan", "--detailed-exitcode", env=prod).rc == 0
    assert ws.run("plan", "--environment", "staging", "--detailed-exitcode", env=staging).rc == 0

    # A reviewed plan of one environment is not applied to another.
    assert ws.run("plan", "--out", "plan.json", env=prod).rc == 0
    assert json.loads((ws.root / "plan.json").read_text())["environment"] == "production"
    stale = ws.run("apply", "--environment", "staging", "--plan", "plan.json", env=staging)
    assert stale.rc == 3 and "is a plan for environment production, not staging" in stale.stderr

    # A staging key file copied into production's directory proves nothing there: jane gets a fresh key.
    (ws.keys / "production" / "jane.sops.yaml").write_bytes((ws.keys / "staging" / "jane.sops.yaml").read_bytes())
    plan = ws.run("plan", env=prod)
    assert "key file keys/production/jane.sops.yaml does not hold the live key" in plan.stdout, plan.stdout
    production.store.clear()  # and after production's database is lost, it is not restored there either
    restore = ws.run("plan", "--restore", env=prod)
    assert "is not restored (it is for environment staging, not production)" in restore.stdout, restore.stdout


def test_a_roster_moving_to_environments_keeps_its_secrets(ws, sandbox, production):
    """Before: one proxy (production), keys/jane.sops.yaml. After declaring environments, production's first apply
    moves the file into keys/production/ (the plan shows the move) and jane keeps her key; staging makes its own."""
    ws.url = production.url
    ws.write_roster([{"name": "jane"}])
    prod = ws.env(LITELLM_PROXY_URL=production.url)
    assert ws.run("apply", env=prod).rc == 0
    before = ws.decrypt("jane")
    environments_roster(ws, sandbox.url, production.url)
    doc = yaml.safe_load(ws.roster.read_text())
    doc["environments"]["production"].pop("model_groups")  # the same models as before
    ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    prod["RECONCILE_ENVIRONMENT"] = "production"
    plan = ws.run("plan", env=prod)
    assert "move-file: its key is live on environment production's proxy" in plan.stdout, plan.stdout
    assert "keys/jane.sops.yaml -> keys/production/jane.sops.yaml" in plan.stdout
    assert "rotate" not in plan.stdout.split("Plan:")[-1].replace("0 to rotate", "")
    assert ws.run("apply", env=prod).rc == 0
    assert not (ws.keys / "jane.sops.yaml").exists()
    assert ws.decrypt("production/jane", "jane") == before
    assert yaml.safe_load((ws.keys / "production" / "jane.sops.yaml").read_text())["environment"] == "production"
    assert ws.run("plan", "--detailed-exitcode", env=prod).rc == 0
    staging = ws.env(LITELLM_PROXY_URL=sandbox.url, RECONCILE_ENVIRONMENT="staging")
    assert ws.run("apply", env=staging).rc == 0
    assert ws.decrypt("staging/jane", "jane") != before
