"""The pure diff: exact boundaries with `now` passed in, and a property test that any plan, applied, converges."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

from helpers import recipient_of

from reconciler.core.catalog import ModelCatalog
from reconciler.core.changes import Conflict
from reconciler.core.kinds.keys import Adopt, Create, Rotate, Update, file_document_fields
from reconciler.core.live import LLM_ROUTES, LiveKey, managed_metadata, user_id_for
from reconciler.core.options import Options
from reconciler.core.plan import diff
from reconciler.core.proofs import Prover
from reconciler.core.records import KeyFile, Records
from reconciler.core.roster import RETIRING_SUFFIX, parse_roster
from reconciler.core.timeutil import iso

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
A = recipient_of("jane")
B = "age1n05qd4recufqxd68ug0sptxk8qe27qxjrxpnvusyml3rm7w0qvvs06vsl0"
ADMIN = "age1q3p0j8wz8s55vv2px960jm4cmrlvkatz6dg86t5qul4nmfwcxf2sfwcuxz"
URL = "http://proxy"
CATALOG = ModelCatalog({"m1": "p/m1", "m2": "p/m2", "m2-short": "p/m2", "m3": "p/m3"})


def roster(developers: str, keys: str = "") -> object:
    return parse_roster(f"version: 1\nkeys:\n  alias: cc-{{name}}\n  admin_recipients: [{ADMIN}]\n{keys}"
                        f"developers:\n{developers}")


def dev(name: str, models: str = "[m1]", extra: str = "", recipient: str | None = None) -> str:
    return f"  - name: {name}\n    recipient: {recipient or recipient_of(name)}\n    models: {models}\n{extra}"


def tok(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def key(name: str, *, token: str | None = None, models=("m1",), created=NOW - timedelta(days=1), managed=True,
        alias: str | None = None, **extra) -> LiveKey:
    meta = managed_metadata(name, **{k: extra.pop(k) for k in ("retire_at", "delivery") if k in extra}) \
        if managed else {}
    return LiveKey(token=token or tok(name), alias=alias if alias is not None else f"cc-{name}", models=tuple(models),
                   user_id=user_id_for(name) if managed else None, metadata=meta, created_at=created,
                   created_by="default_user_id", allowed_routes=LLM_ROUTES if managed else (), **extra)


def file_for(r, name: str, token: str | None = None, recipients=None, now=NOW) -> KeyFile:
    recipients = recipients or (recipient_of(name), ADMIN)
    fields = file_document_fields(_desired(r, name, now), URL)
    fields.update({"issued_at": iso(NOW), "token_sha256": token or tok(name)})
    return KeyFile(name, Path(f"keys/{name}.sops.yaml"), token or tok(name), frozenset(recipients), fields)


def _desired(r, name, now=NOW):
    from reconciler.core.kinds.keys import desired_state
    return desired_state(r, CATALOG, now)[name]


PROVER = Prover(b"unit-test-proof-key-0123456789abcdef")


def plan_of(r, live, files, now=NOW, adopted=None, prover=None, **options):
    return diff(r, live, Records(files, adopted or {}), now, catalog=CATALOG, proxy_url=URL,
                options=Options(**options), prover=prover)


def kinds(plan):
    return [(c.kind, c.name) for c in plan.changes]


# ---------------------------------------------------------------- cases


def test_new_developer_is_created():
    r = roster(dev("jane"))
    plan = plan_of(r, [], {})
    assert kinds(plan) == [("create", "jane")]
    assert plan.summary == "Plan: 1 to create, 0 to rotate, 0 to update, 0 to delete."
    assert plan.changes[0].desired.recipients == tuple(sorted((A, ADMIN)))


def test_in_sync_is_empty():
    r = roster(dev("jane"))
    plan = plan_of(r, [key("jane")], {"jane": file_for(r, "jane")})
    assert plan.empty and plan.summary == "No changes."


def test_model_change_is_an_update_with_before_and_after():
    r = roster(dev("jane", "[m1, m3]"))
    plan = plan_of(r, [key("jane")], {"jane": file_for(roster(dev("jane")), "jane")})
    (change,) = plan.changes
    assert isinstance(change, Update)
    assert change.fields == (("models", ["m1"], ["m1", "m3"]),)
    assert change.file_fields == ("models",)
    assert change.data["before"] == {"models": ["m1"]} and change.data["after"] == {"models": ["m1", "m3"]}


def test_limits_blocked_and_expiry_are_updates():
    r = roster(dev("jane", extra="    rpm_limit: 10\n    disabled: true\n    expires: 2027-01-31\n"))
    plan = plan_of(r, [key("jane")], {"jane": file_for(r, "jane")})
    (change,) = plan.changes
    assert [f for f, _, _ in change.fields] == ["rpm_limit", "expires", "blocked"]


def test_expiry_compared_with_tolerance():
    r = roster(dev("jane", extra="    expires: 2027-01-31\n"))
    end = datetime(2027, 1, 31, 23, 59, 59, tzinfo=timezone.utc)
    files = {"jane": file_for(r, "jane")}
    assert plan_of(r, [key("jane", expires=end + timedelta(minutes=5))], files).empty
    assert not plan_of(r, [key("jane", expires=end + timedelta(minutes=5, seconds=1))], files).empty


def test_expired_developer_is_deleted_at_the_exact_second():
    r = roster(dev("jane", extra="    expires: 2026-11-27T12:00:00Z\n"))
    live, files = [key("jane", expires=NOW)], {"jane": file_for(r, "jane", now=NOW - timedelta(seconds=1))}
    before = plan_of(r, live, files, now=NOW - timedelta(seconds=1))
    assert not any(c.kind == "delete" for c in before.changes)
    assert before.warnings == ("jane: key expires in 1s (2026-11-27T12:00:00Z)",)
    assert before.data["expiring_soon"] == [{"developer": "jane", "expires": "2026-11-27T12:00:00Z"}]
    after = plan_of(r, live, files, now=NOW)
    assert kinds(after) == [("delete", "jane")]
    assert after.changes[0].reason == "access expired 2026-11-27T12:00:00Z" and after.changes[0].remove_file


def test_removed_developer_key_and_file_deleted():
    r = roster(dev("jane"))
    plan = plan_of(r, [key("jane"), key("gone")], {"jane": file_for(r, "jane"), "gone": file_for(r, "jane")})
    assert kinds(plan) == [("delete", "gone")]
    assert plan.changes[0].reason == "no longer in the roster"


def test_rotate_after_boundary():
    r = roster(dev("jane"), keys="  rotate_after: 90d\n  grace: 7d\n")
    issued = NOW - timedelta(days=90)
    files = {"jane": file_for(r, "jane")}
    assert plan_of(r, [key("jane", created=issued + timedelta(seconds=1))], files).empty
    plan = plan_of(r, [key("jane", created=issued)], files)
    (change,) = plan.changes
    assert isinstance(change, Rotate)
    assert change.reason == "older than 90d: issued 2026-08-29T12:00:00Z"
    assert change.retire_at == NOW + timedelta(days=7)


def test_rotate_instant_and_defaults_rotate():
    r = roster(dev("jane", extra="    rotate: 2026-11-27T11:00:00Z\n"))
    files = {"jane": file_for(r, "jane")}
    assert kinds(plan_of(r, [key("jane", created=NOW - timedelta(hours=2))], files)) == [("rotate", "jane")]
    assert plan_of(r, [key("jane", created=NOW - timedelta(minutes=59))], files).empty
    everyone = parse_roster(f"version: 1\nkeys:\n  alias: cc-{{name}}\n  admin_recipients: [{ADMIN}]\n"
                            f"defaults:\n  rotate: 2026-11-27T11:00:00Z\ndevelopers:\n{dev('jane')}{dev('john')}")
    files = {n: file_for(everyone, n) for n in ("jane", "john")}
    two_hours_ago = NOW - timedelta(hours=2)
    plan = plan_of(everyone, [key("jane", created=two_hours_ago), key("john", created=two_hours_ago)], files)
    assert kinds(plan) == [("rotate", "jane"), ("rotate", "john")]
    assert plan.changes[0].reason == ("issued 2026-11-27T10:00:00Z, before the rotation requested for "
                                      "2026-11-27T11:00:00Z")


def test_missing_or_mismatched_file_or_new_recipient_rotates():
    r = roster(dev("jane"))
    missing = plan_of(r, [key("jane")], {}).changes[0]
    assert missing.reason == "key file keys/jane.sops.yaml is missing: its secret is lost"
    wrong = plan_of(r, [key("jane")], {"jane": file_for(r, "jane", token=tok("other"))})
    assert wrong.changes[0].reason == "key file keys/jane.sops.yaml does not hold the live key"
    moved = plan_of(r, [key("jane")], {"jane": file_for(r, "jane", recipients=(B, ADMIN))})
    assert moved.changes[0].reason == (f"recipient changed to {A}: the key file must be readable by exactly "
                                       "the roster's recipients")
    assert moved.changes[0].risk is None  # a fresh recipient (a new laptop): shown in full, not braked


def test_orphan_file_is_never_registered_but_replaced():
    """A key file with no live key may have been planted: its secret is never registered; a fresh key replaces
    it."""
    r = roster(dev("jane"))
    plan = plan_of(r, [], {"jane": file_for(r, "jane", token=tok("orphan"))})
    (change,) = plan.changes
    assert isinstance(change, Create) and "a fresh key replaces keys/jane.sops.yaml" in change.reason


def test_retiring_key_deleted_when_grace_ends():
    r = roster(dev("jane"), keys="  grace: 1d\n")
    retiring = key("jane", token=tok("old"), alias="cc-jane" + RETIRING_SUFFIX, retire_at=iso(NOW))
    files = {"jane": file_for(r, "jane")}
    assert plan_of(r, [key("jane"), retiring], files, now=NOW - timedelta(seconds=1)).empty
    plan = plan_of(r, [key("jane"), retiring], files)
    assert kinds(plan) == [("delete", "jane")] and plan.changes[0].key.token == tok("old")


def test_handmade_key_is_a_conflict_unless_adopted_or_replaced():
    r = roster(dev("jane"))
    hand = key("jane", managed=False, token=tok("hand"))
    plan = plan_of(r, [hand], {})
    assert kinds(plan) == [("conflict", "jane")] and plan.empty
    assert plan.summary == "Plan: 0 to create, 0 to rotate, 0 to update, 0 to delete. 1 conflict(s) need a decision."
    assert isinstance(plan_of(r, [hand], {}, adopt=frozenset({"jane"}), prover=PROVER).changes[0], Adopt)
    unproven = plan_of(r, [hand], {}, adopt=frozenset({"jane"})).changes[0]  # proofs off: nothing is adopted
    assert isinstance(unproven, Conflict) and "adopting it needs proofs (RECONCILE_PROOF_KEY)" in unproven.reason
    replaced = plan_of(r, [hand], {}, replace=frozenset({"jane"})).changes[0]
    assert isinstance(replaced, Rotate) and replaced.old.token == tok("hand")


def test_other_unmanaged_keys_only_counted():
    r = roster(dev("jane"))
    plan = plan_of(r, [key("bot", managed=False, alias="ci-bot")], {})
    assert kinds(plan) == [("create", "jane")] and plan.unmanaged_count == 1


def test_only_and_no_delete():
    r = roster(dev("jane") + dev("john"))
    plan = plan_of(r, [key("gone")], {}, only=frozenset({"john"}))
    assert kinds(plan) == [("create", "john")]
    assert kinds(plan_of(r, [key("gone")], {}, no_delete=True)) == [("create", "jane"), ("create", "john")]


def test_order_creates_rotations_then_updates_then_deletes():
    r = roster(dev("b", "[m3]") + dev("c") + dev("d"))
    live = [key("b"), key("c"), key("a")]
    files = {"b": file_for(roster(dev("b")), "b")}
    assert kinds(plan_of(r, live, files)) == [("rotate", "c"), ("create", "d"), ("update", "b"), ("delete", "a")]


def test_alias_pair_warning_and_grant():
    r = roster(dev("jane", "[m2]"))
    assert plan_of(r, [], {}).warnings == (
        "jane: m2 and m2-short are the same model on this proxy; clients asking for m2-short will be refused "
        "(grant it too, or set keys.grant_model_aliases: true)",)
    granted = roster(dev("jane", "[m2]"), keys="  grant_model_aliases: true\n")
    plan = plan_of(granted, [], {})
    assert plan.changes[0].desired.models == ("m2", "m2-short") and plan.warnings == ()


def test_checksum_ignores_time_but_not_content():
    r = roster(dev("jane"))
    assert plan_of(r, [], {}).checksum == plan_of(r, [], {}, now=NOW + timedelta(hours=1)).checksum
    assert plan_of(r, [], {}).checksum != plan_of(roster(dev("jane", "[m3]")), [], {}).checksum


def test_alias_pairs_from_litellms_recorded_model_info():
    """The pair in LiteLLM's own /model/info answer (recorded from a real proxy)."""
    import json

    recorded = json.loads((Path(__file__).parent / "data" / "litellm" / "responses" / "model_info_master.json")
                          .read_text())
    catalog = ModelCatalog.from_model_info(recorded["body"]["data"])
    assert catalog.aliases_of("claude-sonnet-4.5") == {"claude-sonnet-4.5", "claude-sonnet-4-5-20250929"}
    r = roster(dev("jane", "[claude-sonnet-4.5, claude-3-opus-20240229]"))
    plan = diff(r, [], Records(), NOW, catalog=catalog)
    assert plan.warnings == (
        "jane: claude-sonnet-4.5 and claude-sonnet-4-5-20250929 are the same model on this proxy; clients asking "
        "for claude-sonnet-4-5-20250929 will be refused (grant it too, or set keys.grant_model_aliases: true)",)
    granted = roster(dev("jane", "[claude-sonnet-4.5]"), keys="  grant_model_aliases: true\n")
    assert diff(granted, [], Records(), NOW, catalog=catalog).changes[0].desired.models == (
        "claude-sonnet-4-5-20250929", "claude-sonnet-4.5")
    assert catalog.unknown_message("anthropic/claude-sonnet-4-5-20250929") == (
        "anthropic/claude-sonnet-4-5-20250929 is not served by this proxy; did you mean claude-sonnet-4-5-20250929?")


def test_a_long_plan_comment_keeps_what_a_reviewer_must_see():
    """1,000 updates and a high-risk rename: the comment stays under GitHub's limit, with the summary, checksum,
    brakes and high-risk section whole (they come first); only the table is shortened, and its markdown stays valid."""
    from reconciler.cli.render import COMMENT_LIMIT, markdown
    from reconciler.core.safety import Brakes

    names = [f"dev{i:04d}" for i in range(1000)]
    r = roster("".join(dev(n, "[m1, m2]") for n in names))
    live = [key(n, alias="old-dev0000" if n == "dev0000" else None) for n in names]
    plan = plan_of(r, live, {n: file_for(r, n) for n in names})
    assert plan.count("update") == 1000
    brakes = "; ".join(Brakes(0.3).problems(plan))
    text = markdown(plan, roster="roster.yaml", proxy_url=URL, brakes=brakes)
    assert len(text) <= COMMENT_LIMIT < len(markdown(plan, roster="roster.yaml", proxy_url=URL, limit=10**7))
    assert f"Checksum: `{plan.checksum}`" in text and plan.summary in text
    assert "**High-risk changes**" in text and "- dev0000: renames a managed key \\(old-dev0000" in text
    assert "**Apply would stop here:** 1 high-risk change" in text
    assert "Too many updates: 1000 of 1000 managed keys \\(all of them\\)" in text
    assert text.count("<details>") == text.count("</details>") == 1
    shown = text.count("| `~` |")
    assert 100 < shown < 1000 and f"…{1000 - shown} more change(s): the whole plan is in the JSON artifact" in text
