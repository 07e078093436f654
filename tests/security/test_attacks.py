"""The seven ways a pull-request author (a developer who receives a key) with an ordinary LiteLLM account could take
over the proxy through this tool, each run against the sandbox and LiteLLM's own app. Each must now fail safely:
no credential leaves, no key or file that is not the tool's is changed, and the message says why."""

from __future__ import annotations

import hashlib
import re
import socket
from datetime import timedelta

import yaml
from helpers import raw_server

from reconciler.adapters.delivery import Sops, write_atomic
from reconciler.core.records import adoption_document
from reconciler.core.timeutil import iso, utcnow

OPUS, SONNET = "claude-3-opus-20240229", "claude-sonnet-4-5-20250929"


def capture_server() -> tuple[socket.socket, str, list[bytes]]:
    """The attacker's server: records whatever reaches it (it must be nothing)."""
    seen: list[bytes] = []
    listener, url = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", seen)
    return listener, url, seen


def edit_roster(ws, change) -> None:
    doc = yaml.safe_load(ws.roster.read_text())
    change(doc)
    ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))


# ---------------------------------------------------------------- 2. forged ownership


def test_forged_managed_key_is_never_upgraded(ws, target):
    """A self-service user makes a key with the next hire's alias and our metadata. When the hire joins the roster,
    the key is not taken for theirs: it is a conflict, never changed, and the plan says who made it."""
    target.user("dev1", "internal_user")
    own = target.key(user_id="dev1")
    forged = target.key(by=own, key_alias="claude-code-newhire", models=[SONNET],
                        metadata={"managed_by": "litellm-roster", "roster_name": "newhire", "delivery": "external"})
    before = target.row(forged)
    ws.people["newhire"] = ws.people["priya"]
    ws.write_roster([{"name": "jane"}, {"name": "newhire"}])
    plan = ws.run("plan")
    assert plan.rc == 0, plan.stderr
    assert "!   newhire" in plan.stdout and "was created by 'dev1', not the proxy admin" in plan.stdout
    assert "newhire" not in [line.split()[1] for line in plan.stdout.splitlines() if line.startswith("  ~ ")]
    applied = ws.run("apply")
    assert applied.rc == 1 and "1 conflict(s) left unresolved: newhire" in applied.stdout
    # newhire's LiteLLM user is made (it grants nothing); nothing is done with the forged key or for a key of theirs
    assert "jane: create" in applied.stdout and \
        not re.search(r"^ +(ok|FAILED) .* newhire: (?!create-user)", applied.stdout, re.M)
    after = target.row(forged)
    assert after["models"] == before["models"] == [SONNET] and after["metadata"] == before["metadata"]
    assert after["max_budget"] == before["max_budget"] and not (ws.keys / "newhire.sops.yaml").exists()


def test_an_adopted_key_from_before_proofs_needs_its_record(ws, target):
    """An adopted key from before proofs began carries no proof: until the next apply gives it one, an adoption
    record must hold its hash (whoever may edit a key's metadata can relabel it; created_by alone proves nothing).
    Adoptions since carry their own proof (tests/security/test_proofs.py)."""
    made = target.key(key_alias="claude-code-jane", models=[SONNET], metadata={
        "managed_by": "litellm-roster", "roster_name": "jane", "delivery": "external"})
    ws.keys.mkdir()
    record = ws.keys / "jane.adopted.yaml"
    record.write_bytes(adoption_document("jane", hashlib.sha256(made.encode()).hexdigest(), "2026-01-01T00:00:00Z"))
    ws.write_roster([{"name": "jane"}])
    plan = ws.run("plan")
    assert "proofs begin with this apply" in plan.stdout and "proof: missing -> set" in plan.stdout, plan.stdout
    assert "conflict" not in plan.stdout and "create:" not in plan.stdout
    record.unlink()  # the record is gone (or was never written by this tool)
    plan = ws.run("plan")
    assert "claims to be jane's adopted key but no adoption record in the repository holds its hash" in plan.stdout
    assert "!   jane" in plan.stdout and target.row(made)["models"] == [SONNET]


# ---------------------------------------------------------------- 3. developer names are not LiteLLM users


def test_developer_named_after_an_admin_user_gets_no_admin_rights(ws, target):
    target.user("ops-admin", "proxy_admin")
    admins_own = target.key(user_id="ops-admin")
    assert target.call("POST", "/user/new", key=admins_own, json={"user_id": "x1"}).status_code == 200  # the prize
    ws.people["ops-admin"] = ws.people["omar"]
    ws.write_roster([{"name": "ops-admin"}])
    assert ws.run("apply").rc == 0, ws.outputs[-1]
    secret = ws.decrypt("ops-admin")
    target.secrets.append(secret)
    assert target.row(secret)["user_id"] == "roster:ops-admin"
    attempt = target.call("POST", "/user/new", key=secret, json={"user_id": "x2"})
    assert attempt.status_code in (401, 403), attempt.text


# ---------------------------------------------------------------- 4. the roster cannot steer credentials


def test_roster_url_cannot_redirect_the_master_key(ws, target):
    listener, evil, seen = capture_server()
    with listener:
        ws.write_roster([{"name": "jane"}])
        edit_roster(ws, lambda d: d["proxy"].update(url=evil))
        redirected = ws.run("plan")  # the operator named the real proxy (LITELLM_PROXY_URL)
        assert redirected.rc == 1 and f"proxy.url is {evil}, but the operator named {target.url}" in redirected.stderr
        alone = ws.run("apply", env={k: v for k, v in ws.env().items() if k != "LITELLM_PROXY_URL"})
        assert alone.rc == 1 and f"pass --proxy-url {evil} or set LITELLM_PROXY_URL" in alone.stderr
    assert seen == []


def test_roster_headers_cannot_carry_or_redirect_credentials(ws, target):
    listener, evil, seen = capture_server()
    with listener:
        ws.write_roster([{"name": "jane"}])
        edit_roster(ws, lambda d: d["proxy"].update(headers={"X-Leak": "${LITELLM_MASTER_KEY}"}))
        leak = ws.run("plan")
        assert leak.rc == 1 and "uses ${LITELLM_MASTER_KEY}, which the operator has not allowed" in leak.stderr
        for name in ("Host", "authorization", "x-litellm-api-key"):
            edit_roster(ws, lambda d, name=name: d["proxy"].update(headers={name: "evil.example"}))
            refused = ws.run("validate", "--offline")
            assert refused.rc == 1 and f"proxy.headers.{name}: the roster may not set {name}" in refused.stderr
    assert seen == [] and target.rows() == {}


def test_roster_kubernetes_needs_the_operators_confirmation(ws, target):
    ws.write_roster([{"name": "jane"}], proxy_url=False)
    edit_roster(ws, lambda d: d.update(proxy={"kubernetes": {"namespace": "ai", "service": "evil",
                                                            "master_key_secret": {"name": "other", "key": "k"}}}))
    env = {k: v for k, v in ws.env().items() if k not in ("LITELLM_PROXY_URL", "LITELLM_MASTER_KEY")}
    unconfirmed = ws.run("plan", env=env)
    assert unconfirmed.rc == 1 and "set LITELLM_PROXY_KUBE=ai/evil (or --kube-target) to confirm" in unconfirmed.stderr
    other = ws.run("plan", env={**env, "LITELLM_PROXY_KUBE": "ai/litellm"})
    assert other.rc == 1 and "but the operator named ai/litellm" in other.stderr


# ---------------------------------------------------------------- 5. adoption as a takeover


def test_takeover_of_an_unmanaged_key_is_braked_and_shown(ws, target):
    target.user("ops-admin", "proxy_admin")
    theirs = target.key(key_alias="ops-admin", user_id="ops-admin", models=[OPUS])
    ws.people["ops-admin"] = ws.people["omar"]
    ws.write_roster([{"name": "ops-admin", "rotate": "2099-01-01T00:00:00Z"}], alias="{name}", adopt_unmanaged=True)
    plan = ws.run("plan")
    assert "other key(s) on the proxy, of which this plan takes over 1 (high-risk, below)" in plan.stdout
    assert "High-risk changes (apply needs --force" in plan.stdout
    assert "replaces a key made by hand (ops-admin): its holder loses it" in plan.stdout
    braked = ws.run("apply")
    assert braked.rc == 4 and "high-risk change(s) need --force" in braked.stderr
    row = target.row(theirs)
    assert row is not None and row["key_alias"] == "ops-admin" and not (row.get("metadata") or {})


# ---------------------------------------------------------------- 6. planted key files


def test_planted_key_file_is_never_registered(ws, target, people):
    """The author encrypts a secret of their choosing to the developer and the admins, with its hash, and commits it
    as the new developer's key file. Even an apply that could decrypt it issues a fresh key instead."""
    chosen = "sk-chosen-by-the-pull-request-author-0001"
    ws.write_roster([{"name": "jane"}])
    want = sorted([people["jane"].recipient, people["admin"].recipient])
    document = {"developer": "jane", "key_alias": "claude-code-jane", "proxy_url": target.url,
                "models": [OPUS, SONNET], "expires": None, "issued_at": "2026-11-27T00:00:00Z",
                "token_sha256": hashlib.sha256(chosen.encode()).hexdigest(), "api_key": chosen}
    write_atomic(ws.keys / "jane.sops.yaml", Sops().encrypt(document, want, "jane.sops.yaml"))
    applied = ws.run("apply", env=ws.env(SOPS_AGE_KEY_FILE=str(people["admin"].identity_file)))
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert target.row(chosen) is None
    assert ws.key_file("jane")["token_sha256"] != document["token_sha256"]
    assert target.call("GET", "/v1/models", key=chosen).status_code == 401


# ---------------------------------------------------------------- 7. reach outside the repository


def test_delivery_through_a_symlink_is_refused(ws, target, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "precious.sops.yaml").write_text("not the tool's\n")
    ws.write_roster([{"name": "jane"}])
    ws.keys.symlink_to(outside, target_is_directory=True)
    result = ws.run("apply")
    assert result.rc == 1 and f"keys.delivery_dir: {ws.keys} is a symlink" in result.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["precious.sops.yaml"] and target.rows() == {}


def test_foreign_files_are_never_removed_and_removals_are_braked(ws, target):
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    (ws.keys / "notes.sops.yaml").write_text("a note someone keeps here\n")
    ws.write_roster([{"name": "jane"}])
    target.call("POST", "/key/delete", json={"keys": [ws.key_file("john")["token_sha256"]]})  # gone by hand
    plan = ws.run("plan")
    assert "notes.sops.yaml: not a sops file; left alone" in plan.stdout
    assert "removes" in plan.stdout and "john.sops.yaml from the repository" in plan.stdout
    assert ws.run("apply").rc == 4 and (ws.keys / "john.sops.yaml").exists()
    assert ws.run("apply", "--force").rc == 0
    assert not (ws.keys / "john.sops.yaml").exists() and (ws.keys / "notes.sops.yaml").exists()


def test_names_are_matched_whole_and_wildcards_need_an_opt_in(ws, target):
    ws.write_roster([{"name": "jane"}])
    edit_roster(ws, lambda d: d["developers"][0].update(name="jane\n"))
    newline = ws.run("validate", "--offline")
    assert newline.rc == 1 and "developers[0]" in newline.stderr and ".name:" in newline.stderr
    for model in ("*", "all-proxy-models", "anthropic/*"):
        ws.write_roster([{"name": "jane", "models": [model]}])
        refused = ws.run("validate", "--offline")
        assert refused.rc == 1 and f"'{model}' grants every model the proxy serves under it" in refused.stderr
    ws.write_roster([{"name": "jane", "models": ["*"]}], allow_wildcard_models=True)
    assert ws.run("validate", "--offline").rc == 0
    assert ws.run("apply").rc == 4 and target.rows() == {}


# ---------------------------------------------------------------- credentials


def test_apply_refuses_a_viewer_or_developer_key_before_any_write(ws, target):
    target.user("viewer1", "proxy_admin_viewer")
    target.user("dev1", "internal_user")
    viewer = target.key(user_id="viewer1")
    developer = target.key(user_id="dev1")
    ws.write_roster([{"name": "jane"}])
    keys_before = set(target.rows())
    as_viewer = ws.run("apply", env=ws.env(LITELLM_MASTER_KEY=viewer))
    assert as_viewer.rc == 1
    assert ("apply needs the proxy's master key, but LITELLM_MASTER_KEY holds a virtual key of user 'viewer1' "
            "(role proxy_admin_viewer)" in as_viewer.stderr)
    as_developer = ws.run("apply", env=ws.env(LITELLM_MASTER_KEY=developer))
    assert as_developer.rc == 1 and "a virtual key of user 'dev1' (role internal_user)" in as_developer.stderr
    assert set(target.rows()) == keys_before and not ws.keys.exists()
    plan = ws.run("plan", env={**ws.env(LITELLM_VIEWER_KEY=viewer), "LITELLM_MASTER_KEY": ""})
    assert plan.rc == 0 and "Plan: 1 to create" in plan.stdout


# ---------------------------------------------------------------- the retiring alias


def test_a_squatted_retiring_alias_does_not_stop_rotations(ws, target):
    """A self-service user names a key after the alias john's rotated-out key would take: the rotation still runs,
    renaming the old key to an alias made unique by its hash, and the plan says why. A developer cannot be named so
    that their alias is another's retiring alias."""
    target.user("dev1", "internal_user")
    own = target.key(user_id="dev1")
    squat = target.key(by=own, key_alias="claude-code-john--retiring")
    ws.write_roster([{"name": "john"}], grace="1d")
    assert ws.run("apply").rc == 0
    old = hashlib.sha256(ws.decrypt("john").encode()).hexdigest()
    ws.write_roster([{"name": "john"}], grace="1d", rotate_after="90d")
    later = ws.env(RECONCILE_NOW=iso(utcnow() + timedelta(days=91)))  # the key is due: a rotation with grace
    plan = ws.run("plan", env=later)
    assert f"holds claude-code-john--retiring, the alias a rotated-out key takes; this one is renamed " \
           f"claude-code-john--retiring-{old[:8]} instead" in plan.stdout, plan.stdout
    applied = ws.run("apply", "--simulated-clock", env=later)
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert target.row(squat)["key_alias"] == "claude-code-john--retiring"  # the squatter's key is not touched
    assert [r["key_alias"] for r in target.rows().values() if r["token"] == old] == \
        [f"claude-code-john--retiring-{old[:8]}"]
    ws.people["john--retiring"] = ws.people["omar"]
    ws.write_roster([{"name": "john"}, {"name": "john--retiring"}])
    refused = ws.run("validate", "--offline")
    assert refused.rc == 1 and "developer names may not end in '--retiring'" in refused.stderr, refused.stderr


# ---------------------------------------------------------------- recipients


def test_a_pull_request_cannot_quietly_redirect_a_key_to_another_recipient(ws, target, people):
    """The author of a pull request is a developer: they may not take another developer's key by pointing it at a
    recipient they can read (their own, an admin's, or one left in another key file)."""
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    jane_before = ws.decrypt("jane")

    def roster_with(jane: str, john: str, admins: list[str] | None = None) -> None:
        ws.write_roster([{"name": "jane", "recipient": jane}, {"name": "john", "recipient": john}])
        doc = yaml.safe_load(ws.roster.read_text())
        doc["keys"]["admin_recipients"] = admins or [people["admin"].recipient]
        ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))

    roster_with(people["john"].recipient, people["john"].recipient)  # jane's key to john
    shared = ws.run("validate", "--offline")
    assert shared.rc == 1 and "developers[1] (john).recipient: this recipient is already developer jane's" \
        in shared.stderr, shared.stderr  # named where it is written the second time
    roster_with(people["jane"].recipient, people["admin"].recipient)  # john becomes the admin
    assert "this recipient is already one of keys.admin_recipients" in ws.run("validate", "--offline").stderr

    # john moves to a new laptop in the same pull request, and jane's key goes to john's old recipient, which
    # still reads john's current key file: high-risk, braked.
    roster_with(people["john"].recipient, people["omar"].recipient)
    plan = ws.run("plan")
    assert f"gives jane's key to {people['john'].recipient}, which already reads another developer's key file" \
        in plan.stdout, plan.stdout
    assert f"recipient changed to {people['omar'].recipient}:" in plan.stdout  # john's: shown in full
    assert ws.run("apply").rc == 4 and ws.decrypt("jane") == jane_before

    # Adding an admin recipient re-issues every key readable by it: high-risk for each.
    roster_with(people["jane"].recipient, people["john"].recipient,
                admins=[people["admin"].recipient, people["priya"].recipient])
    plan = ws.run("plan")
    flagged = [line for line in plan.stdout.splitlines()  # the high-risk section: one line per key
               if line.startswith("  ! ") and f"adds admin recipient {people['priya'].recipient}" in line]
    assert len(flagged) == 2, plan.stdout
    assert ws.run("apply").rc == 4 and ws.decrypt("jane") == jane_before
