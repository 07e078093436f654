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
