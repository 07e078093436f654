"""The tier's proxy keeps its keys in PostgreSQL: what the tool made is read back from the table LiteLLM uses,
not from LiteLLM's answers, so a stand-in or a cache in between would show."""

from __future__ import annotations

import hashlib
import json


def _rows(litellm) -> list[dict]:
    sql = """SELECT coalesce(json_agg(t ORDER BY t.key_alias), '[]') FROM (
               SELECT token, key_alias, user_id, created_by, blocked, models, metadata,
                      jsonb_typeof(metadata) AS metadata_type FROM "LiteLLM_VerificationToken") t"""
    return json.loads(litellm.database.psql(litellm.database.DATABASE, "-A", "-t", "-c", sql).stdout)


def test_applied_keys_are_rows_in_postgres(real_workspace, litellm):
    ws = real_workspace
    ws.write_roster([{"name": "jane"}, {"name": "john", "models": ["claude-sonnet-4-5-20250929"]}])
    assert ws.run("apply").rc == 0
    rows = _rows(litellm)
    assert [r["key_alias"] for r in rows] == ["claude-code-jane", "claude-code-john"]
    for row, name in zip(rows, ("jane", "john"), strict=True):
        assert row["token"] == hashlib.sha256(ws.decrypt(name).encode()).hexdigest()
        assert row["user_id"] == f"roster:{name}" and row["created_by"] == "default_user_id"
        # Json columns hold JSON objects, not strings that look like them (the engine bridge tags them).
        assert row["metadata_type"] == "object" and row["metadata"]["roster_name"] == name
    assert rows[1]["models"] == ["claude-sonnet-4-5-20250929"]

    ws.write_roster([{"name": "jane", "disabled": True}])
    assert ws.run("apply").rc == 0
    assert [(r["key_alias"], r["blocked"]) for r in _rows(litellm)] == [("claude-code-jane", True)]


def test_keys_sharing_a_creation_time_are_each_listed_once(litellm):
    """LiteLLM orders /key/list by the sort_by column alone: keys with one created_at (a bulk import) came back on
    two pages or none when paged by it. The client pages by hash (docs/litellm.md §3)."""
    from helpers import MASTER

    from reconciler.adapters.litellm import LiteLLMClient

    values = ",".join(f"('{hashlib.sha256(str(i).encode()).hexdigest()}', 'bulk-{i:04d}', ARRAY[]::text[], "
                      "'2026-01-01T00:00:00'::timestamp)" for i in range(1000))
    litellm.database.psql(litellm.database.DATABASE, "-f", "-", stdin=(
        f'INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, models, created_at) VALUES {values};'))
    with LiteLLMClient(litellm.url, MASTER) as client:
        keys = client.list_keys()
    assert len(keys) == 1000 and len({k["token"] for k in keys}) == 1000
