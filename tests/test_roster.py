"""The roster loader: each broken input gives its exact, located message; valid input builds the right dataclasses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from helpers import MASTER, RECONCILE, recipient_of

from reconciler.core.roster import load_roster, parse_roster
from reconciler.errors import RosterError

BAD = Path(__file__).parent / "data" / "bad-rosters"
EXPECTED = yaml.safe_load((BAD / "expected.yaml").read_text())
ROOT = Path(__file__).parent.parent
A = "age1m9pfl7efvru89xwn6rdl5xpkus6q6g2vrhwstqgyqlz4laj6cfwqepjg7h"


def problems(path: Path) -> list[str]:
    with pytest.raises(RosterError) as caught:
        load_roster(path)
    return [str(p).replace(str(path), path.name) for p in caught.value.problems]


def test_corpus_is_large_and_fully_described():
    files = sorted(p.name for p in BAD.glob("*.yaml") if p.name != "expected.yaml")
    assert len(files) >= 40
    assert sorted(EXPECTED) == files


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_roster_exact_messages(name):
    assert problems(BAD / name) == EXPECTED[name]


def test_every_problem_is_located_and_says_how_to_fix():
    for name, messages in EXPECTED.items():
        for message in messages:
            file, line, column, rest = message.split(":", 3)
            assert file == name and int(line) >= 1 and int(column) >= 1, message
            assert len(rest.strip()) > 20, message


def test_all_errors_in_one_pass():
    assert len(EXPECTED["45-many-errors-one-pass.yaml"]) == 4


def test_cli_rejects_every_bad_roster_without_a_request(tmp_path, sandbox):
    """Exit 1, the file named, nothing sent to the proxy: for the whole corpus, through the installed command."""
    import subprocess

    env = {"LITELLM_MASTER_KEY": MASTER, "LITELLM_PROXY_URL": sandbox.url, "PATH": str(Path(RECONCILE).parent)}
    for name in sorted(EXPECTED):
        done = subprocess.run([RECONCILE, "apply", "--roster", str(BAD / name)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60)
        assert done.returncode == 1, (name, done.stderr)
        assert f"{BAD / name}:" in done.stderr, (name, done.stderr)
        assert done.stdout == "", name
    assert sum(sandbox.counts.values()) == 0
    assert list(tmp_path.iterdir()) == []


def test_example_roster_is_valid_and_uses_groups_and_defaults():
    roster = load_roster(ROOT / "roster.yaml")
    by_name = {d.name: d for d in roster.developers}
    assert roster.models_for(by_name["jane-smith"]) == ("claude-3-opus-20240229", "claude-sonnet-4-5-20250929")
    assert by_name["john-doe"].limits.max_budget == 20 and by_name["john-doe"].limits.budget_duration == "30d"
    assert by_name["jane-smith"].expires == datetime(2027, 3, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert roster.keys.rotate_after == timedelta(days=90) and roster.keys.grace == timedelta(days=7)
    assert roster.keys.alias_for("x") == "claude-code-x"


def test_example_roster_starts_with_the_schema_comment():
    assert (ROOT / "roster.yaml").read_text().startswith("# yaml-language-server: $schema=schema/roster.schema.json")


def test_top_level_schema_is_the_packaged_one():
    import json

    from reconciler.core.roster import schema

    assert json.loads((ROOT / "schema" / "roster.schema.json").read_text()) == schema()


def text(developers: str, extra: str = "") -> str:
    return f"version: 1\nkeys:\n  alias: cc-{{name}}\n{extra}defaults:\n  models: [m1]\n  max_budget: 10\n" \
           f"  rotate: 2026-01-01\ndevelopers:\n{developers}"


def test_developer_fields_override_defaults_and_null_clears():
    roster = parse_roster(text(f"  - name: a\n    recipient: {A}\n    max_budget: null\n    rotate: 2026-06-01\n"
                               f"  - name: b\n    recipient: {recipient_of('b')}\n    models: [m2]\n"))
    a, b = roster.developers
    assert a.limits.max_budget is None and b.limits.max_budget == 10
    assert a.rotate == datetime(2026, 6, 1, tzinfo=timezone.utc)  # the later of own and defaults.rotate
    assert b.rotate == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert a.models == ("m1",) and b.models == ("m2",)


def test_ssh_recipient_accepted():
    ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAd0W7boRBJLKmLzMlIhB31CspFh9v3RPRHdk5l8E9UW jane@laptop"
    roster = parse_roster(text(f"  - name: a\n    recipient: {ssh}\n"))
    assert roster.developers[0].recipient == ssh


def test_expiry_date_is_end_of_day_and_time_is_exact():
    roster = parse_roster(text(f"  - name: a\n    recipient: {A}\n    expires: 2027-03-31\n"
                               f"  - name: b\n    recipient: {recipient_of('b')}\n"
                               "    expires: 2027-03-31T09:30:00+02:00\n"))
    assert roster.developers[0].expires == datetime(2027, 3, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert roster.developers[1].expires == datetime(2027, 3, 31, 7, 30, tzinfo=timezone.utc)


def test_merge_keys_work():
    roster = parse_roster(text(f"  - &base {{name: a, recipient: {A}, rpm_limit: 5}}\n  - <<: *base\n    name: b\n"
                               f"    recipient: {recipient_of('b')}\n"))
    assert [d.limits.rpm_limit for d in roster.developers] == [5, 5]


def test_huge_file_is_refused_before_parsing(tmp_path):
    from reconciler.core.roster import MAX_BYTES

    path = tmp_path / "roster.yaml"
    path.write_bytes(b"version: 1\n# " + b"x" * MAX_BYTES + b"\n")
    assert problems(path) == [f"roster.yaml:1:1: file is {MAX_BYTES + 14} bytes, over the {MAX_BYTES}-byte limit; "
                              "a roster this large is almost certainly not one"]


def test_a_large_plain_roster_loads(tmp_path):
    developers = "".join(f"  - name: dev-{i:05d}\n    recipient: {recipient_of(f'dev-{i:05d}')}\n"
                         for i in range(20_000))
    path = tmp_path / "roster.yaml"
    path.write_text(f"version: 1\nkeys:\n  alias: cc-{{name}}\ndefaults:\n  models: [m1]\ndevelopers:\n{developers}")
    assert len(load_roster(path).developers) == 20_000


def test_repository_schema_is_the_packaged_one():
    """schema/roster.schema.json is a plain copy (symlinks break on some checkouts) of the schema the tool loads."""
    root = Path(__file__).parent.parent
    assert (root / "schema" / "roster.schema.json").read_bytes() == \
        (root / "reconciler" / "schema" / "roster.schema.json").read_bytes()


def test_validate_offline_loads_no_http_client(tmp_path):
    """Start-up is most of a small command's time: validate --offline never imports httpx or the service layer."""
    import subprocess
    import sys

    roster = tmp_path / "roster.yaml"
    roster.write_text(f"version: 1\nkeys: {{alias: 'c-{{name}}'}}\ndevelopers:\n  - name: jane\n    recipient: {A}\n"
                      "    models: [m1]\n")
    code = ("import sys; from reconciler import cli; rc = cli.main(['validate', '--offline', '--roster', sys.argv[1]]);"
            " print(sorted(m for m in ('httpx', 'reconciler.service.session', 'reconciler.adapters.litellm')"
            " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(roster)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith("[]"), done.stdout + done.stderr
