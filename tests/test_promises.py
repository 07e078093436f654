"""The plan tells the whole truth and the lifecycle keeps its promises: one test per way a new admin, following the
README, found it did not (revocation, reviewed plans, brakes, honest plans, exit codes, one lock per proxy, audit,
interrupts, located model errors, key-file diffs, the sandbox, help)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta

import httpx
import yaml
from helpers import MASTER, RECONCILE, check_invariant, managed_keys, sandbox_models

from reconciler.core.timeutil import iso, utcnow

OPUS, SONNET = "claude-3-opus-20240229", "claude-sonnet-4-5-20250929"
DAY = 86400
TEAM5 = [{"name": n} for n in ("jane", "john", "priya", "ada", "omar")]


def advance(ws, sandbox, seconds: float) -> dict[str, str]:
    sandbox.store.offset += timedelta(seconds=seconds)
    return ws.env(RECONCILE_NOW=iso(utcnow() + sandbox.store.offset))


# ---------------------------------------------------------------- 1. revocation


def test_a_lost_laptop_is_cut_off_on_merge(workspace, sandbox):
    """rotate: (a lost laptop, a leak) revokes the old key at once, whatever keys.grace says; scheduled rotation
    keeps the grace."""
    workspace.write_roster([{"name": "jane"}], grace="7d")
    assert workspace.run("apply").rc == 0
    old = workspace.decrypt("jane")
    workspace.write_roster([{"name": "jane", "rotate": iso(utcnow() + timedelta(minutes=1))}], grace="7d")
    plan = workspace.run("plan")
    assert "revoked at once (rotate: is a revocation)" in plan.stdout
    assert workspace.run("apply").rc == 0
    assert sandbox_models(sandbox.url, old) == 401
    assert sandbox_models(sandbox.url, workspace.decrypt("jane")) == [OPUS, SONNET]


def test_disabled_blocks_every_key_and_grace_zero_ends_overlap(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}], grace="7d", rotate_after="30d")
    assert workspace.run("apply").rc == 0
    old = workspace.decrypt("jane")
    env = advance(workspace, sandbox, 30 * DAY + 60)
    assert workspace.run("apply", "--simulated-clock", env=env).rc == 0  # scheduled: the old key keeps its grace
    new = workspace.decrypt("jane")
    assert sandbox_models(sandbox.url, old) == [OPUS, SONNET]
    workspace.write_roster([{"name": "jane", "disabled": True}], grace="7d", rotate_after="30d")
    plan = workspace.run("plan", env=env)
    assert "claude-code-jane--retiring" in plan.stdout and "blocked: false -> true" in plan.stdout
    assert workspace.run("apply", "--simulated-clock", env=env).rc == 0
    assert sandbox_models(sandbox.url, old) == sandbox_models(sandbox.url, new) == 401
    workspace.write_roster([{"name": "jane"}], grace="0", rotate_after="30d")
    assert workspace.run("apply", "--simulated-clock", env=env).rc == 0
    assert [r["key_alias"] for r in managed_keys(sandbox)] == ["claude-code-jane"]  # grace 0: overlap ends now
    assert sandbox_models(sandbox.url, new) == [OPUS, SONNET]


# ---------------------------------------------------------------- 2. reviewed plans


def test_a_reviewed_plan_of_every_kind_applies_after_a_delay(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}, {"name": "john"}, {"name": "priya"}], grace="1d")
    assert workspace.run("apply").rc == 0
    hand = httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"key_alias": "claude-code-ada"}).json()
    workspace.known_secrets.append(hand["key"])
    # A rotation, an update, a delete, a create and an adoption in one reviewed plan. (rotate: after the key was
    # issued, and not in the future, so the new key is not asked to rotate again.)
    time.sleep(1.1)
    workspace.write_roster([{"name": "jane", "rotate": iso(utcnow())},
                            {"name": "john", "max_budget": 7}, {"name": "ada"}, {"name": "omar"}], grace="1d")
    assert workspace.run("plan", "--adopt", "ada", "--out", "reviewed.json").rc == 0
    checksum = json.loads((workspace.root / "reviewed.json").read_text())["checksum"]
    time.sleep(1.5)
    applied = workspace.run("apply", "--adopt", "ada", "--force", "--plan", "reviewed.json")
    assert applied.rc == 0, applied.stdout + applied.stderr
    kinds = sorted(re.findall(r"^ +ok +\S+ +\S+: ([a-z-]+)", applied.stdout, re.M))
    assert kinds == ["adopt", "create", "create-user", "create-user", "delete", "delete-user", "rotate", "update"], \
        applied.stdout
    after = workspace.run("plan", "--detailed-exitcode")
    assert after.rc == 0, after.stdout
    assert checksum  # and --checksum of a rotation works the same way:
    time.sleep(1.1)
    workspace.write_roster([{"name": "jane", "rotate": iso(utcnow())},
                            {"name": "john", "max_budget": 7}, {"name": "ada"}, {"name": "omar"}], grace="1d")
    again = json.loads(workspace.run("plan", "--format", "json").stdout)["checksum"]
    time.sleep(1.5)
    assert workspace.run("apply", "--checksum", again).rc == 0


# ---------------------------------------------------------------- 3. brakes for every team


def test_small_teams_have_brakes(workspace, sandbox):
    workspace.write_roster(TEAM5)
    assert workspace.run("apply").rc == 0
    workspace.write_roster([])
    gone = workspace.run("apply")
    assert gone.rc == 4 and "Too many deletes: 5 of 5 managed keys (all of them)" in gone.stderr
    workspace.write_roster(TEAM5)
    text = workspace.roster.read_text().replace("  models:\n  - claude-code\n",
                                                "  models:\n  - claude-code\n  max_budget: 0\n")
    workspace.roster.write_text(text)
    updated = workspace.run("apply")
    assert updated.rc == 4 and "Too many updates: 5 of 5 managed keys (all of them)" in updated.stderr
    # Thresholds in the roster are reviewed like the rest of it.
    doc = yaml.safe_load(workspace.roster.read_text())
    doc["keys"]["brakes"] = {"max_count": 5}
    workspace.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert workspace.run("apply").rc == 4  # "all of them" still needs --force
    assert workspace.run("apply", "--force").rc == 0
    doc["keys"]["brakes"] = {"max_count": 1, "max_share": 0.5}
    doc["defaults"]["max_budget"] = 3
    doc["developers"] = doc["developers"][:4]
    workspace.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    braked = workspace.run("apply")
    assert braked.rc == 4 and "Too many updates: 4 is over the limit of 1" in braked.stderr


def test_a_roster_can_tighten_the_brakes_but_never_loosen_them(workspace, sandbox):
    """The roster is what a pull request edits: keys.brakes may only lower the operator's thresholds."""
    team = [{"name": f"dev{i:02d}"} for i in range(12)]
    workspace.add_people([d["name"] for d in team])
    workspace.write_roster(team)
    assert workspace.run("apply").rc == 0
    doc = yaml.safe_load(workspace.roster.read_text())
    doc["keys"]["brakes"] = {"max_share": 1.0, "max_count": 1000}  # the pull request's attempt
    doc["developers"] = doc["developers"][:8]  # 4 of 12 leave: 33 %, over the default 30 %
    workspace.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    braked = workspace.run("apply")
    assert braked.rc == 4 and "Too many deletes: 4 of 12 managed keys (33%) is over 30%" in braked.stderr
    loosened = workspace.run("apply", env=workspace.env(RECONCILE_MAX_SHARE="0.5"))  # the operator's to loosen
    assert loosened.rc == 0, loosened.stdout + loosened.stderr


# ---------------------------------------------------------------- 4. honest plans


def test_adopting_shows_every_field_it_changes(workspace, sandbox):
    made = httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"key_alias": "claude-code-jane", "models": [SONNET], "duration": "30d"}).json()
    workspace.known_secrets.append(made["key"])
    workspace.write_roster([{"name": "jane", "budget_duration": "30d"}])
    plan = workspace.run("plan", "--adopt", "jane").stdout
    assert f"models: [{SONNET}] -> [{OPUS}, {SONNET}]" in plan
    assert re.search(r"expires: 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ -> never", plan), plan
    assert "budget_duration: none -> 30d" in plan and "user_id: none -> roster:jane" in plan


def test_nothing_is_hidden(workspace, sandbox):
    httpx.post(f"{sandbox.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
               json={"key_alias": "claude-code-omar"})
    sandbox.store.plaintexts  # noqa: B018 - the key above is scanned through the store
    team = [{"name": n, "models": ["claude-sonnet-4.5"]} for n in ("jane", "john", "priya")]
    workspace.write_roster([*team, {"name": "ada", "expires": "2020-01-31"}, {"name": "omar", "disabled": True}])
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.rc == 2, plan.stdout  # a conflict alone is something to do
    assert "ada: access expired 2020-01-31T23:59:59Z: no key is issued" in plan.stdout
    assert plan.stdout.count("are the same model on this proxy") == 2  # one line per pair, not per developer
    assert "jane, john, priya: claude-sonnet-4.5 and claude-sonnet-4-5-20250929 are the same model" in plan.stdout
    assert "ada, omar: claude-sonnet-4-5-20250929 and claude-sonnet-4.5 are the same model" in plan.stdout
    applied = workspace.run("apply")
    assert applied.rc == 1 and "1 conflict(s) left unresolved: omar" in applied.stdout
    assert "True" not in plan.stdout and "False" not in plan.stdout


def test_recipient_change_names_the_recipient(workspace, sandbox, people):
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0
    doc = yaml.safe_load(workspace.roster.read_text())
    doc["developers"][0]["recipient"] = people["john"].recipient
    workspace.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = workspace.run("plan").stdout
    assert f"recipient changed to {people['john'].recipient}:" in plan  # in full


# ---------------------------------------------------------------- 5. exit codes


def test_usage_errors_exit_1_not_2(workspace):
    for args in (["plan", "--no-such-flag"], ["no-such-command"], ["apply", "--max-share", "lots"]):
        result = workspace.run(*args)
        assert result.rc == 1 and "usage: reconcile" in result.stderr, args


# ---------------------------------------------------------------- 6. one lock per proxy


def test_one_proxy_whatever_its_spelling(workspace, sandbox):
    port = sandbox.url.rsplit(":", 1)[1]
    workspace.write_roster([{"name": "jane"}], proxy_url=False)
    assert workspace.run("apply").rc == 0
    before = workspace.key_file("jane")["proxy_url"]
    other = workspace.env(LITELLM_PROXY_URL=f"http://LOCALHOST:{port}/")
    assert workspace.run("plan", "--detailed-exitcode", env=other).rc == 0  # no update for the other spelling
    from reconciler.adapters.lock import lock_path
    from reconciler.service.session import normalize_url

    assert lock_path(normalize_url(f"http://localhost:{port}")) == lock_path(normalize_url(sandbox.url))
    assert workspace.key_file("jane")["proxy_url"] == before


# ---------------------------------------------------------------- 7. audit


def test_audit_records_the_new_keys(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply", env=workspace.env(RECONCILE_ACTOR="ci-bot")).rc == 0
    created = workspace.key_file("jane")["token_sha256"]
    workspace.write_roster([{"name": "jane", "rotate": iso(utcnow() + timedelta(minutes=1))}])
    assert workspace.run("apply", env=workspace.env(RECONCILE_ACTOR="ci-bot")).rc == 0
    rotated = workspace.key_file("jane")["token_sha256"]
    lines = [json.loads(line) for line in (workspace.root / "audit.jsonl").read_text().splitlines()]
    assert [(x["change"], x["token_prefix"], x.get("retired_token_prefix")) for x in lines] == [
        ("create-user", None, None), ("create", created[:12], None), ("rotate", rotated[:12], created[:12])]
    assert {x["actor"] for x in lines} == {"ci-bot"}


# ---------------------------------------------------------------- 8. interrupts


def test_an_interrupted_apply_reports_what_it_did(workspace, sandbox):
    from litellm_roster_sandbox import Fault

    team = [{"name": f"dev{i:02d}"} for i in range(30)]
    workspace.add_people([d["name"] for d in team])
    workspace.write_roster(team)
    sandbox.set_faults(Fault.parse("POST /key/generate=delay:0.3@1"), Fault.parse("POST /user/new=delay:0.3@1"))
    process = subprocess.Popen([RECONCILE, "apply"], cwd=workspace.root, env=workspace.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("    ok"):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    lines.append(out)
    text = "".join(lines)
    workspace.outputs += [text, err]
    assert process.returncode == 130, (text, err)
    done = text.count("    ok  ")  # each developer's user, then their key: 60 changes
    assert 1 <= done < 60 and "FAILED" not in text
    assert f"Apply interrupted: {done} done, 0 failed, {60 - done} not started." in text
    assert len(managed_keys(sandbox)) == len(re.findall(r"^    ok .*: create:", text, re.M))  # each key reported
    sandbox.set_faults()
    assert workspace.run("apply").rc == 0
    check_invariant(workspace, sandbox)


# ---------------------------------------------------------------- 9. located model errors


def test_model_errors_point_at_the_entry(workspace, sandbox):
    workspace.write_roster([{"name": "jane", "models": ["claude-sonet-4.5"]}, {"name": "john", "models": ["bad-x"]},
                            {"name": "priya"}])
    doc = yaml.safe_load(workspace.roster.read_text())
    doc["model_groups"]["claude-code"].append("claude-opus-9")
    workspace.roster.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = workspace.run("plan")
    assert result.rc == 1
    lines = workspace.roster.read_text().splitlines()
    where = {m: (i + 1, line.index(m) + 1) for i, line in enumerate(lines) for m in ("claude-sonet-4.5",
                                                                                    "claude-opus-9")
             if m in line}
    line, col = where["claude-sonet-4.5"]
    assert (f"roster.yaml:{line}:{col}: developers[0] (jane).models[0]: claude-sonet-4.5 is not served by this proxy"
            in result.stderr)
    line, col = where["claude-opus-9"]
    assert f"roster.yaml:{line}:{col}: model_groups.claude-code[2]: claude-opus-9 is not served" in result.stderr
    assert result.stderr.count("claude-opus-9 is not served") == 1


# ---------------------------------------------------------------- 10. key-file diffs


def test_refreshing_a_key_file_changes_only_its_changed_lines(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0
    before = (workspace.keys / "jane.sops.yaml").read_text().splitlines()
    workspace.write_roster([{"name": "jane", "models": [OPUS]}])
    assert workspace.run("apply").rc == 0
    after = (workspace.keys / "jane.sops.yaml").read_text().splitlines()
    removed = [line for line in before if line not in after]
    added = [line for line in after if line not in before]
    assert removed == [f"    - {SONNET}"] and added == [], (removed, added)


# ---------------------------------------------------------------- 11. the sandbox


def test_sandbox_errors_are_one_line_and_spend_can_be_simulated(tmp_path, workspace, sandbox):
    import sys
    from pathlib import Path

    port = sandbox.url.rsplit(":", 1)[1]
    env = {**os.environ, "LITELLM_MASTER_KEY": MASTER, "PYTHONPATH": str(Path(__file__).parent.parent / "sandbox")}
    serve = [sys.executable, "-m", "litellm_roster_sandbox"]
    taken = subprocess.run([*serve, "--port", port], capture_output=True, text=True, env=env, timeout=30)
    assert taken.returncode == 1 and taken.stderr == f"error: cannot listen on 127.0.0.1:{port}: address in use\n"
    missing = subprocess.run([*serve, "--port", "0", "--models", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True, env=env, timeout=30)
    assert missing.returncode == 1 and missing.stderr.startswith("error: --models ")
    assert "Traceback" not in missing.stderr
    workspace.write_roster([{"name": "jane", "max_budget": 1}])
    assert workspace.run("apply").rc == 0
    secret = workspace.decrypt("jane")
    for _ in range(3):
        r = httpx.post(f"{sandbox.url}/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                       json={"model": SONNET, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
    rows = json.loads(workspace.run("status", "--format", "json").stdout)["keys"]
    assert rows[0]["spend"] > 0


# ---------------------------------------------------------------- 12. help


def test_the_tool_ships_no_sandbox():
    """`import reconciler.cli.main` (and the CLI's every command) loads nothing of the sandbox, the package holds none
    of it, and the image's build copies only reconciler/."""
    from pathlib import Path

    root = Path(__file__).parent.parent
    code = "import sys, reconciler.cli; print(sorted(m for m in sys.modules if m.startswith('litellm_roster_sandbox')))"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": ""})
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    assert not (root / "reconciler" / "sandbox").exists()
    copies = [line for line in (root / "deploy" / "Dockerfile").read_text().splitlines() if line.startswith("COPY")]
    assert copies == ["COPY requirements/image.txt ./requirements/image.txt",
                      "COPY pyproject.toml README.md LICENSE ./", "COPY reconciler ./reconciler"]
    # and the build context itself holds nothing else: .dockerignore admits only those
    allowed = [line for line in (root / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert allowed == ["!pyproject.toml", "!README.md", "!LICENSE", "!requirements/image.txt", "!reconciler"]


def test_every_flag_and_subcommand_has_help():
    from reconciler.cli.main import _parser

    parser = _parser()
    assert "exit codes" in parser.format_help()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        assert any(c.dest == name and c.help for c in subparsers._choices_actions), name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_readme_synopsis_matches_the_parser():
    from pathlib import Path

    from reconciler.cli.main import _parser

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    synopsis = readme.split("## The CLI", 1)[1].split("```", 2)[1]
    parser = _parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    named = set(re.findall(r"^reconcile ([a-z-]+)", synopsis, re.M))
    assert named == set(subparsers.choices)
    flags = set(re.findall(r"--[a-z-]+", synopsis)) | set(re.findall(r"--[a-z-]+", readme.split("## The CLI")[1]
                                                                     .split("| exit code")[0]))
    known = {f for sub in subparsers.choices.values() for a in sub._actions for f in a.option_strings}
    assert flags <= known, flags - known
    assert {f for f in known if f.startswith("--") and f not in ("--help",)} <= flags, \
        {f for f in known if f.startswith("--")} - flags - {"--help"}


# ---------------------------------------------------------------- 14. no litter


def test_runs_leave_nothing_in_the_temp_directory(workspace, sandbox):
    import tempfile
    from pathlib import Path

    def ours() -> set[str]:
        return {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("litellm-roster")}

    before = ours()
    workspace.write_roster([{"name": "jane"}])
    assert workspace.run("apply").rc == 0 and workspace.run("plan").rc == 0
    assert ours() == before
    assert sorted(p.name for p in (workspace.root / ".locks").iterdir()) != []  # the lock went where it was told
