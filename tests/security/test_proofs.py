"""Proofs (docs/security.md, "Proofs"): what a pull request or another user of the proxy can forge (a key's
metadata, an adoption record, a key file) is not believed without a MAC made with RECONCILE_PROOF_KEY, and a lost
database gives back exactly the proven keys. Each runs against the sandbox and LiteLLM's own app on PostgreSQL."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta

import yaml
from helpers import PROOF_KEY

from reconciler.adapters.delivery import Sops, set_fields, write_atomic
from reconciler.core.timeutil import iso, utcnow

OPUS, SONNET = "claude-3-opus-20240229", "claude-sonnet-4-5-20250929"
SECRET_RE = re.compile(r"sk-[A-Za-z0-9_-]{20,}")


def token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def without_proofs(ws) -> dict[str, str]:
    return {k: v for k, v in ws.env().items() if k != "RECONCILE_PROOF_KEY"}


def forge_key_file(ws, name: str, secret: str, recipients: list[str], **fields) -> bytes:
    """A valid sops file for `name`, made as a pull request's author can: any secret, any readable fields."""
    document = {"developer": name, "key_alias": f"claude-code-{name}", **fields, "token_sha256": token(secret),
                "api_key": secret}
    return Sops().encrypt(document, recipients, f"{name}.sops.yaml")


def kinds(plan: str, name: str) -> set[str]:
    """The kinds of change the plan lists for this name."""
    return set(re.findall(rf"^  \S+ +{re.escape(name)} +([a-z-]+):", plan, re.M))


def test_a_relabelled_admin_key_with_a_planted_record_is_never_a_developers(ws, target):
    """Attack 3: a key the admin made by hand, relabelled as the next hire's adopted key, with an adoption record
    planted beside it. Proofs began with the first apply; the key was made after and carries none (or a copied
    one): it is a conflict, never updated into newhire's key, whatever the record says."""
    ws.write_roster([{"name": "jane"}])
    assert ws.run("apply").rc == 0
    assert ws.run("plan").stdout.count("proofs on since") == 1
    time.sleep(1.1)  # made strictly after the instant proofs began (which has second precision)
    jane_proof = next(r for r in target.rows().values() if r["key_alias"] == "claude-code-jane")["metadata"][
        "roster_proof"]
    marker = {"managed_by": "litellm-roster", "roster_name": "newhire", "delivery": "external"}
    bare = target.key(key_alias="claude-code-newhire", models=[SONNET], metadata=marker)
    copied = target.key(key_alias="claude-code-newhire-2", models=[SONNET],
                        metadata={**marker, "roster_proof": jane_proof})
    (ws.keys / "newhire.adopted.yaml").write_text(yaml.safe_dump(
        {"developer": "newhire", "token_sha256": token(bare), "adopted_at": "2026-01-01T00:00:00Z"}))
    ws.add_people(["newhire"])
    ws.write_roster([{"name": "jane"}, {"name": "newhire"}])
    plan = ws.run("plan")
    assert plan.rc == 0, plan.stderr
    assert "claims to be newhire's key but carries no proof, and was made" in plan.stdout, plan.stdout
    assert "claims to be newhire's key but carries a proof that does not verify" in plan.stdout, plan.stdout
    assert kinds(plan.stdout, "newhire") <= {"create-user", "conflict"}, plan.stdout
    applied = ws.run("apply")
    assert applied.rc == 1 and "conflict(s) left unresolved" in applied.stdout, applied.stdout
    for secret in (bare, copied):
        row = target.row(secret)
        assert row["models"] == [SONNET] and row["metadata"]["roster_name"] == "newhire"
        assert row["user_id"] is None or not str(row["user_id"]).startswith("roster:")
    assert not (ws.keys / "newhire.sops.yaml").exists()


def test_a_key_file_swapped_for_another_secret_is_detected(ws, target, people):
    """Attack 4: john's key file re-encrypted to john with john's hash and jane's secret (a secret the author can
    see the use of), the proof line copied, then stripped: each is found, and john gets a fresh key."""
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    jane = ws.decrypt("jane")
    john = ws.key_file("john")
    readable = {k: john[k] for k in ("proxy_url", "models", "expires", "issued_at")}
    swapped = forge_key_file(ws, "john", jane, [people["john"].recipient, people["admin"].recipient], **readable)
    swapped = set_fields(swapped, {"token_sha256": john["token_sha256"], "proof": john["proof"]}, "john.sops.yaml")
    write_atomic(ws.keys / "john.sops.yaml", swapped)
    plan = ws.run("plan")
    assert "key file keys/john.sops.yaml carries a proof that does not verify" in plan.stdout, plan.stdout
    assert "rotate" in kinds(plan.stdout, "john")
    stripped = re.sub(rb"\nproof: [^\n]+", b"", swapped)
    write_atomic(ws.keys / "john.sops.yaml", stripped)
    assert "key file keys/john.sops.yaml carries no proof" in ws.run("plan").stdout
    assert ws.run("apply").rc == 0
    fresh = ws.decrypt("john")
    assert fresh != jane and target.row(fresh) is not None and ws.run("plan", "--detailed-exitcode").rc == 0


def test_restore_after_the_database_is_lost_gives_back_the_same_keys(ws, target, people):
    """Attack 9, recovered: after the proxy's tables are emptied, apply --restore registers again exactly the
    secrets of key files whose proof verifies, each with the roster's models; a planted file (valid sops, a chosen
    secret, no proof) is not registered, and the plan says why."""
    ws.add_people(["newhire"])
    ws.write_roster([{"name": "jane"}, {"name": "john", "models": [OPUS]}])
    assert ws.run("apply").rc == 0
    secrets = {name: ws.decrypt(name) for name in ("jane", "john")}
    planted = "sk-planted-" + "x" * 40
    target.secrets.append(planted)
    write_atomic(ws.keys / "newhire.sops.yaml", forge_key_file(
        ws, "newhire", planted, [people["newhire"].recipient, people["admin"].recipient]))
    ws.write_roster([{"name": "jane"}, {"name": "john", "models": [OPUS]}, {"name": "newhire"}])
    target.wipe()

    plan = ws.run("plan", "--restore")
    assert plan.rc == 0, plan.stderr
    assert {"create-user", "restore"} == kinds(plan.stdout, "jane") == kinds(plan.stdout, "john"), plan.stdout
    assert "keys/newhire.sops.yaml is not restored (carries no proof): a fresh key replaces it" in plan.stdout
    assert "Plan: 1 to create, 2 to restore" in plan.stdout, plan.stdout
    refused = ws.run("apply", "--restore")
    assert refused.rc == 1 and "SOPS_AGE_KEY_FILE" in refused.stderr and target.row(secrets["jane"]) is None
    off = ws.run("plan", "--restore", env=without_proofs(ws))
    assert off.rc == 1 and "RECONCILE_PROOF_KEY is not set" in off.stderr

    admin = ws.env(SOPS_AGE_KEY_FILE=str(people["admin"].identity_file))
    applied = ws.run("apply", "--restore", env=admin)
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert sorted(target.row(secrets["jane"])["models"]) == sorted([OPUS, SONNET])
    assert target.row(secrets["john"])["models"] == [OPUS]
    assert target.row(planted) is None and ws.decrypt("newhire") != planted
    assert ws.decrypt("jane") == secrets["jane"] and ws.decrypt("john") == secrets["john"]
    assert ws.run("plan", "--detailed-exitcode").rc == 0
    assert not any(SECRET_RE.search(o) for o in ws.outputs)


def test_turning_proofs_on_gives_existing_keys_their_proofs_without_new_secrets(ws, target):
    """Trust on first use: keys, key files and rotated-out keys made while proofs were off get their proofs at the
    next apply with the proof key, keeping their secrets; from then on a file without one is not trusted."""
    off = without_proofs(ws)
    team = [{"name": "jane"}, {"name": "john"}, {"name": "priya"}]
    ws.write_roster(team, grace="1d")
    assert ws.run("apply", env=off).rc == 0
    first = ws.decrypt("jane")
    ws.write_roster(team, grace="1d", rotate_after="90d")  # a rotation leaves rotated-out keys
    later = {**off, "RECONCILE_NOW": iso(utcnow() + timedelta(days=91))}
    assert ws.run("apply", "--force", "--simulated-clock", env=later).rc == 0  # every key rotates: past the brakes
    assert "proofs are off (RECONCILE_PROOF_KEY is not set): nothing is adopted or restored" in \
        ws.run("plan", env=off).stdout
    before = ws.decrypt("jane")
    plan = ws.run("plan")
    assert "proofs begin with this apply" in plan.stdout and "proof: missing -> set" in plan.stdout, plan.stdout
    assert "key file: refresh proof" in plan.stdout and "the rotated-out key gets its proof" in plan.stdout
    assert "Plan: 0 to create, 0 to rotate, 6 to update, 0 to delete." in plan.stdout
    assert ws.run("apply").rc == 0  # no brake: proofs change nobody's access
    assert ws.decrypt("jane") == before and ws.key_file("jane")["proof"].startswith("v1:")
    for secret in (before, first):
        row = target.row(secret)
        assert row["metadata"]["roster_proof"].startswith("v1:") and row["metadata"]["managed_by"] == "litellm-roster"
    assert target.row(first)["metadata"]["retire_at"]  # still rotated out, still deleted when its grace ends
    assert ws.run("plan", "--detailed-exitcode").rc == 0
    assert PROOF_KEY not in ws.key_file("jane")["proof"]


def test_adoption_needs_proofs_and_an_adopted_key_keeps_its_own(ws, target):
    """Without a proof key nothing is adopted. With one, the adopted key carries its proof: its record in the
    repository is no longer what proves it, and relabelling it as another developer's makes it nobody's."""
    made = target.key(key_alias="claude-code-jane", models=[SONNET])
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    refused = ws.run("plan", "--adopt", "jane", env=without_proofs(ws))
    assert "adopting it needs proofs (RECONCILE_PROOF_KEY)" in refused.stdout, refused.stdout
    assert ws.run("apply", "--adopt", "jane", "--force").rc == 0
    assert target.row(made)["metadata"]["roster_proof"].startswith("v1:")
    (ws.keys / "jane.adopted.yaml").unlink()
    assert ws.run("plan", "--detailed-exitcode").rc == 0  # the proof, not the record, proves it
    target.call("POST", "/key/update", json={"key": token(made), "metadata": {
        **target.row(made)["metadata"], "roster_name": "john"}})
    plan = ws.run("plan")
    assert "claims to be john's" in plan.stdout and "+   jane " in plan.stdout, plan.stdout
