"""Day-2 habits: a simulated clock never acts by accident, input that used to pass or fail obscurely gets a clear
line, and the plan warns where an operator would otherwise be surprised."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta

from reconciler.core.recipients import recipient_problem
from reconciler.core.timeutil import iso, parse_instant, utcnow


def test_a_simulated_clock_is_named_and_never_applied_by_accident(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}])
    later = workspace.env(RECONCILE_NOW=iso(utcnow() + timedelta(days=3)))
    plan = workspace.run("plan", env=later)
    assert "SIMULATED CLOCK: as of " in plan.stdout.splitlines()[0]
    refused = workspace.run("apply", env=later)
    assert refused.rc == 1 and "RECONCILE_NOW=" in refused.stderr and "--simulated-clock" in refused.stderr
    assert not sandbox.store.rows
    assert workspace.run("apply", "--simulated-clock", env=later).rc == 0
    assert "SIMULATED" not in workspace.run("plan").stdout


def test_input_that_used_to_slip_through_gets_one_clear_line(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}, {"name": "john"}])
    bad = workspace.run("apply", "--checksum", "abc123")
    assert bad.rc == 1 and "'abc123' is not a plan checksum" in bad.stderr
    v1 = workspace.run("plan", env=workspace.env(LITELLM_PROXY_URL=sandbox.url + "/v1"))
    assert v1.rc == 1 and f"ends in /v1: name the proxy itself ({sandbox.url})" in v1.stderr
    newline = workspace.env()
    newline["LITELLM_MASTER_KEY"] += "\n"  # pasted with its newline
    assert workspace.run("apply", env=newline).rc == 0
    nobody = workspace.run("plan", "--only", "nobody")
    assert "--only nobody: no developer, key or key file of that name" in nobody.stdout
    replace = workspace.run("plan", "--replace", "jane")
    assert "jane: --replace applies to a key made by hand, and jane's key is the tool's" in replace.stdout


def test_only_accumulates_across_flags(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}, {"name": "john"}, {"name": "priya"}])
    plan = workspace.run("plan", "--only", "jane", "--only", "john")
    created = re.findall(r"^  \+ +(\S+) +create:", plan.stdout, re.M)
    assert created == ["jane", "john"], plan.stdout  # before, only the last --only counted


def test_rotate_to_the_same_recipient_warns(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0
    workspace.write_roster([{"name": "jane", "rotate": iso(utcnow() + timedelta(minutes=1))}])
    plan = workspace.run("plan")
    assert "jane: rotate: re-issues the key to the same recipient; if the identity behind it was lost" in plan.stdout


def test_a_truncated_ssh_recipient_and_fractional_seconds(tmp_path):
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = (tmp_path / "id.pub").read_text().split()
    assert recipient_problem(" ".join(public[:2])) is None
    assert "truncated" in recipient_problem(f"{public[0]} {public[1][:-8]}")
    assert parse_instant("2027-03-31T09:00:00.5Z", end_of_day=False).microsecond == 500000  # 3.10 as 3.11


def test_python_m_reconciler_is_the_command():
    done = subprocess.run([sys.executable, "-m", "reconciler", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("reconcile ")


def test_the_plan_says_when_apply_would_stop(workspace, sandbox):
    """A brake found at plan time, in every view: text, the markdown comment, and the JSON plan CI can fail on."""
    import json

    team = [{"name": n} for n in ("jane", "john", "priya")]
    workspace.write_roster(team)
    assert workspace.run("apply").rc == 0
    workspace.write_roster([{**d, "max_budget": 5} for d in team])  # every key updated: the "all of them" brake
    text = workspace.run("plan", "--out", "plan.json")
    assert "Apply would stop here: Too many updates: 3 of 3 managed keys (all of them)" in text.stdout, text.stdout
    assert "**Apply would stop here:** Too many updates" in workspace.run("plan", "--format", "markdown").stdout
    assert json.loads((workspace.root / "plan.json").read_text())["brakes"].startswith("Too many updates: 3 of 3")
    assert workspace.run("apply").rc == 4  # as the plan said


def _on_a_terminal(workspace, *args: str, answer: str | None, env: dict | None = None) -> tuple[int, str]:
    """Run reconcile with a pseudo-terminal for stdin and stdout, typing `answer` when asked."""
    import os
    import pty
    import select

    from helpers import RECONCILE

    master, slave = pty.openpty()
    process = subprocess.Popen([RECONCILE, *args], cwd=workspace.root, env=env or workspace.env(), stdin=slave,
                               stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if answer is not None and b"Only 'yes' is accepted" in seen:
            os.write(master, answer.encode() + b"\n")
            answer = None
    os.close(master)
    output = seen.decode("utf-8", "replace")
    workspace.outputs.append(output)
    return process.wait(timeout=60), output


def test_a_terminal_asks_before_applying(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}])
    rc, output = _on_a_terminal(workspace, "apply", answer="no")
    assert rc == 1 and "apply cancelled: nothing was changed" in output and not sandbox.store.rows
    assert f"Apply these changes to {sandbox.url}? Only 'yes' is accepted" in output  # the question names the proxy
    rc, output = _on_a_terminal(workspace, "apply", answer="yes")
    assert rc == 0 and "Apply complete" in output and sandbox.store.rows
    workspace.write_roster([{"name": "jane"}, {"name": "john"}])
    rc, output = _on_a_terminal(workspace, "apply", "--auto-approve", answer=None)
    assert rc == 0 and "Only 'yes'" not in output and "Apply complete" in output


def test_an_added_admin_recipient_re_encrypts_without_new_keys(workspace, sandbox, people):
    """With RECONCILE_REENCRYPT=1 and an admin identity, adding an admin recipient re-encrypts every key file to it
    with the same key (high-risk: it reads every key from now on); removing it again is a rotation, since it may have
    read the keys. Without the setting, the plan rotates, as it says."""
    import yaml

    ws = workspace
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    before = {n: ws.decrypt(n) for n in ("jane", "john")}

    def admins(*names: str) -> None:
        doc = yaml.safe_load(ws.roster.read_text())
        doc["keys"]["admin_recipients"] = [people[n].recipient for n in names]
        ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))

    admins("admin", "priya")
    assert "rotate: recipient changed" in ws.run("plan").stdout  # the default: a new key
    reencrypt = ws.env(RECONCILE_REENCRYPT="1", SOPS_AGE_KEY_FILE=str(people["admin"].identity_file))
    plan = ws.run("plan", env=reencrypt)
    assert plan.stdout.count("re-encrypt: recipients added") == 2, plan.stdout
    for name in ("jane", "john"):  # high-risk, each
        assert f"  ! {name}: adds admin recipient {people['priya'].recipient}" in plan.stdout
    assert "0 to rotate, 2 to update" in plan.stdout
    assert ws.run("apply", env=reencrypt).rc == 4  # braked as high-risk
    applied = ws.run("apply", "--force", env=reencrypt)
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert {n: ws.decrypt(n) for n in ("jane", "john")} == before  # the same keys
    assert ws.decrypt("jane", "priya") == before["jane"]  # readable by the new admin
    assert ws.run("plan", "--detailed-exitcode", env=reencrypt).rc == 0
    admins("admin")  # priya may have read them: removing a recipient rotates
    assert ws.run("plan", env=reencrypt).stdout.count("rotate: recipient changed to fewer recipients") == 2


def test_plan_and_status_json_follow_their_published_schemas(workspace, sandbox):
    """schema/plan.schema.json and schema/status.schema.json describe what CI reads; the outputs follow them."""
    import json
    from pathlib import Path

    import jsonschema
    import pytest

    schemas = Path(__file__).parents[1] / "schema"
    plan_schema = json.loads((schemas / "plan.schema.json").read_text())
    workspace.write_roster([{"name": "jane"}, {"name": "john", "disabled": True}])
    plan = json.loads(workspace.run("plan", "--format", "json").stdout)
    jsonschema.validate(plan, plan_schema)
    assert workspace.run("apply").rc == 0
    workspace.write_roster([{"name": "jane", "max_budget": 3}])
    for command in (["plan", "--format", "json"], ["status", "--format", "json"]):
        data = json.loads(workspace.run(*command).stdout)
        jsonschema.validate(data, json.loads((schemas / f"{command[0]}.schema.json").read_text()))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**plan, "checksum": "not-hex"}, plan_schema)


def test_a_renamed_developer_keeps_their_key(workspace, sandbox, people):
    """previously: moves the key (alias, user, metadata and proof), the key file and the LiteLLM user to the new
    name, with the same secret; naming a developer who is still there is a roster error."""
    import hashlib

    ws = workspace
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    secret = ws.decrypt("jane")
    ws.people["jane-smith"] = ws.people["jane"]
    ws.write_roster([{"name": "jane-smith", "previously": "jane"}, {"name": "john"}])
    plan = ws.run("plan")
    assert "move-file: renamed from jane: the key file moves with the key" in plan.stdout, plan.stdout
    assert "keys/jane.sops.yaml -> keys/jane-smith.sops.yaml" in plan.stdout
    assert "roster_name: jane -> jane-smith" in plan.stdout and "rotate" not in plan.stdout.split("Plan:")[0]
    assert "High-risk" not in plan.stdout
    applied = ws.run("apply")
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert not (ws.keys / "jane.sops.yaml").exists() and ws.decrypt("jane-smith", "jane") == secret
    row = sandbox.store.rows[hashlib.sha256(secret.encode()).hexdigest()]
    assert (row["key_alias"], row["user_id"], row["metadata"]["roster_name"]) == \
        ("claude-code-jane-smith", "roster:jane-smith", "jane-smith")
    assert "roster:jane" not in sandbox.store.users
    assert ws.run("plan", "--detailed-exitcode").rc == 0
    ws.write_roster([{"name": "jane-smith", "previously": "john"}, {"name": "john"}])
    refused = ws.run("validate", "--offline")
    assert refused.rc == 1 and "'john' is still a developer in this roster" in refused.stderr


def test_an_admin_re_keys_by_hand_with_the_sops_config_apply_writes(workspace, sandbox, people):
    """apply keeps keys/.sops.yaml following the roster; after adding an admin recipient, an admin's `sops
    updatekeys` with it gives each file exactly the roster's recipients and the same key, and the plan accepts the
    files as they are (no rotation)."""
    import yaml
    from helpers import SOPS

    ws = workspace
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    config = yaml.safe_load((ws.keys / ".sops.yaml").read_text())
    assert [r["age"] for r in config["creation_rules"]] == [
        ",".join(sorted([people[n].recipient, people["admin"].recipient])) for n in ("jane", "john")]
    before = {n: ws.decrypt(n) for n in ("jane", "john")}
    doc = yaml.safe_load(ws.roster.read_text())
    doc["keys"]["admin_recipients"].append(people["priya"].recipient)
    ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = ws.run("plan")
    assert "keys/.sops.yaml differs from the roster's recipients: apply rewrites it" in plan.stdout
    assert "2 to rotate" in plan.stdout  # the files lack the new admin: without updatekeys, new keys
    written = ws.run("sops-config")
    assert written.rc == 0 and people["priya"].recipient in written.stdout
    (ws.keys / ".sops.yaml").write_text(written.stdout)
    admin = {**ws.env(), "SOPS_AGE_KEY_FILE": str(people["admin"].identity_file)}
    for name in ("jane", "john"):
        done = subprocess.run([SOPS, "updatekeys", "-y", f"{name}.sops.yaml"], cwd=ws.keys, env=admin,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert ws.run("plan", "--detailed-exitcode").rc == 0  # accepted as they are: same key, the roster's recipients
    assert {n: ws.decrypt(n) for n in ("jane", "john")} == before and ws.decrypt("jane", "priya") == before["jane"]


def test_colour_and_progress_on_a_terminal_only(workspace, sandbox):
    names = [f"dev{i:02d}" for i in range(12)]
    workspace.add_people(names)
    workspace.write_roster([{"name": n} for n in names])
    rc, output = _on_a_terminal(workspace, "plan", answer=None)
    assert rc == 0 and "\033[32m+  \033[0m dev00" in output, output[:400]
    rc, output = _on_a_terminal(workspace, "plan", answer=None, env=workspace.env(NO_COLOR="1"))
    assert rc == 0 and "\033[" not in output
    assert "\033[" not in workspace.run("plan").stdout  # not a terminal: no colour
    rc, output = _on_a_terminal(workspace, "apply", "--auto-approve", answer=None)
    assert rc == 0 and "24/24 done, 0 failed" in output and "\033[32mok\033[0m" in output, output[-600:]
    assert "done, 0 failed" not in workspace.run("plan").stderr


def test_completion_scripts_complete_commands_flags_and_choices(tmp_path):
    from helpers import RECONCILE

    def complete(*words: str) -> list[str]:
        script = subprocess.run([RECONCILE, "completion", "bash"], capture_output=True, text=True, check=True).stdout
        probe = (f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
                 "_reconcile; printf '%s\\n' \"${COMPREPLY[@]}\"")
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("reconcile", "pl") == ["plan"]
    assert complete("reconcile", "apply", "--for") == ["--force"]
    assert complete("reconcile", "plan", "--format", "") == ["text", "markdown", "json"]
    (tmp_path / "roster.yaml").write_text("")
    assert complete("reconcile", "plan", "--roster", "ros") == ["roster.yaml"]
    zsh = subprocess.run([RECONCILE, "completion", "zsh"], capture_output=True, text=True, check=True).stdout
    assert zsh.startswith("autoload -U +X bashcompinit && bashcompinit\n")


def test_a_released_key_keeps_working_and_is_forgotten(workspace, sandbox):
    """released: lets go of a key without deleting it (high-risk: a pull request could keep a leaver's access this
    way, so apply needs --allow-release NAME or --force); the key and its user lose the tool's marks, the key file
    goes, and later plans leave them alone."""
    import yaml
    from helpers import sandbox_models

    ws = workspace
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    assert ws.run("apply").rc == 0
    secret = ws.decrypt("jane")
    both = yaml.safe_load(ws.roster.read_text())
    both["released"] = ["jane"]
    ws.roster.write_text(yaml.safe_dump(both, sort_keys=False))
    invalid = ws.run("validate", "--offline")
    assert invalid.rc == 1 and "released[0]: 'jane' is still a developer in this roster" in invalid.stderr
    both["developers"] = [d for d in both["developers"] if d["name"] != "jane"]
    ws.roster.write_text(yaml.safe_dump(both, sort_keys=False))
    plan = ws.run("plan")
    assert "~   jane                     release: listed in released" in plan.stdout, plan.stdout
    assert "! jane: lets go of a managed key" in plan.stdout and "0 to delete" in plan.stdout
    assert "1 key(s) to release from management (kept on the proxy)." in plan.stdout
    assert "delete-user" not in plan.stdout  # the user stays with the key (LiteLLM deletes a user's keys with it)
    braked = ws.run("apply")
    assert braked.rc == 4 and "--allow-release jane passes the releases alone" in braked.stderr
    applied = ws.run("apply", "--allow-release", "jane")
    assert applied.rc == 0, applied.stdout + applied.stderr
    (row,) = [r for r in sandbox.store.rows.values() if r["key_alias"] == "claude-code-jane"]
    assert "managed_by" not in row["metadata"] and "roster_proof" not in row["metadata"]
    assert sandbox_models(sandbox.url, secret) != 401  # still works
    assert not (ws.keys / "jane.sops.yaml").exists() and (ws.keys / "john.sops.yaml").exists()
    assert "managed_by" not in (sandbox.store.users["roster:jane"].get("metadata") or {})
    assert ws.run("plan", "--detailed-exitcode").rc == 0  # forgotten: nothing to do, nothing deleted


def test_the_question_names_the_kubernetes_context():
    from types import SimpleNamespace

    from reconciler.cli.main import _target

    def session(context, flag=None, api=True):
        return SimpleNamespace(roster=SimpleNamespace(kubernetes=SimpleNamespace(context=context)),
                               settings=SimpleNamespace(kube_context=flag), kube_api=object() if api else None,
                               proxy_url="http://litellm.ai.svc:4000")

    assert _target(session("prod")) == "http://litellm.ai.svc:4000 through Kubernetes context prod"
    assert _target(session("prod", flag="staging")).endswith("through Kubernetes context staging")
    assert _target(session(None)).endswith("through the current Kubernetes context")
    assert _target(session("prod", api=False)) == "http://litellm.ai.svc:4000"
