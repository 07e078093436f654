"""The sandbox answers as LiteLLM 1.108.7 does (docs/litellm.md), checked against LiteLLM's own OpenAPI schemas and
recorded responses."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import jsonschema
import pytest

from litellm_roster_sandbox import start_sandbox
from litellm_roster_sandbox.server import load_models
from litellm_roster_sandbox.store import hash_token

DATA = Path(__file__).parent / "data" / "litellm"
OPENAPI = json.loads((DATA / "openapi-keys.json").read_text())
RECORDED_MASTER = "sk-master-test-1234"


def recorded(name: str) -> dict:
    return json.loads((DATA / "responses" / f"{name}.json").read_text())


def validate(body: object, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": OPENAPI["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


@pytest.fixture
def proxy():
    with start_sandbox(master_key=RECORDED_MASTER, models=load_models(DATA / "proxy-config.yaml")) as sb:
        client = httpx.Client(base_url=sb.url, headers={"Authorization": f"Bearer {RECORDED_MASTER}"})
        client.sandbox = sb
        yield client
        client.close()


def generate(proxy, **body) -> dict:
    validate(body, "GenerateKeyRequest")
    r = proxy.post("/key/generate", json=body)
    assert r.status_code == 200, r.text
    validate(r.json(), "GenerateKeyResponse")
    return r.json()


def test_generate_with_supplied_key(proxy):
    out = generate(proxy, key="sk-supplied-0123456789", key_alias="a", models=["m"], duration="1h",
                   metadata={"x": 1}, user_id="jane", max_budget=5)
    assert out["key"] == "sk-supplied-0123456789"
    assert out["token"] == out["token_id"] == hash_token("sk-supplied-0123456789")
    assert out["key_name"] == "sk-...6789" and out["duration"] is None and out["expires"].endswith("Z")
    assert out["created_by"] == "default_user_id" and out["key_type"] == "default"


def test_reposting_a_key_answers_200_and_changes_nothing(proxy):
    generate(proxy, key="sk-repost-0123456789", key_alias="bob")
    again = proxy.post("/key/generate", json={"key": "sk-repost-0123456789", "key_alias": "bob2"})
    assert again.status_code == 200 and again.json()["key_alias"] == "bob2"  # echoes the request...
    info = proxy.get("/key/info", params={"key": hash_token("sk-repost-0123456789")}).json()
    assert info["info"]["key_alias"] == "bob"  # ...but the row is unchanged


def test_generate_rejections(proxy):
    generate(proxy, key_alias="taken")
    dup = proxy.post("/key/generate", json={"key_alias": "taken"})
    assert dup.status_code == 400 and dup.json() == {"error": {
        "message": "Key with alias 'taken' already exists. Unique key aliases across all keys are required.",
        "type": "bad_request_error", "param": "key_alias", "code": "400"}}
    bad = proxy.post("/key/generate", json={"models": "claude"})
    assert (bad.status_code, bad.json()) == (recorded("key_generate_bad_body")["status"],
                                             recorded("key_generate_bad_body")["body"])
    prefix = proxy.post("/key/generate", json={"key": "abc-0123456789012345"})
    assert prefix.status_code == 400 and prefix.json()["error"] == {  # as LiteLLM answers (differential test)
        "message": "{'error': \"Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: "
                   "abc-****2345\"}", "type": "internal_server_error", "param": None, "code": "400"}
    unit = proxy.post("/key/generate", json={"duration": "30"})
    assert unit.status_code == 500 and unit.json()["error"]["message"] == \
        "Unsupported duration unit, passed duration: 30"
    assert proxy.post("/key/generate", json={"key": "sk-short"}).status_code == 400


def test_auth_errors_match_recordings(proxy):
    for name, headers in (("v1_models_no_auth", {"Authorization": ""}),
                          ("v1_models_malformed_auth", {"Authorization": "Token abc"})):
        r = httpx.get(f"{proxy.sandbox.url}/v1/models", headers={k: v for k, v in headers.items() if v})
        assert (r.status_code, r.json()) == (recorded(name)["status"], recorded(name)["body"]), name
    unknown = httpx.get(f"{proxy.sandbox.url}/v1/models", headers={"Authorization": "Bearer sk-unknown-123456789"})
    assert unknown.status_code == 401 and unknown.json()["error"] == {
        "message": "Authentication Error, Invalid API key provided.", "type": "token_not_found_in_db",
        "param": "key", "code": "401"}


def test_models_match_recordings(proxy):
    ids = [m["id"] for m in proxy.get("/v1/models").json()["data"]]
    assert ids == [m["id"] for m in recorded("v1_models_master")["body"]["data"]]
    info = proxy.get("/model/info").json()["data"]
    want = recorded("model_info_master")["body"]["data"]
    assert [(m["model_name"], m["litellm_params"]["model"]) for m in info] == \
           [(m["model_name"], m["litellm_params"]["model"]) for m in want]
    assert all("api_key" not in m["litellm_params"] for m in info)


def test_scoped_key_sees_its_models_verbatim(proxy):
    out = generate(proxy, models=["claude-sonnet-4-5-20250929", "not-configured"])
    seen = httpx.get(f"{proxy.sandbox.url}/v1/models", headers={"Authorization": f"Bearer {out['key']}"}).json()
    assert [m["id"] for m in seen["data"]] == ["claude-sonnet-4-5-20250929", "not-configured"]
    info = httpx.get(f"{proxy.sandbox.url}/model/info", headers={"Authorization": f"Bearer {out['key']}"}).json()
    assert [m["model_name"] for m in info["data"]] == ["claude-sonnet-4-5-20250929"]


def test_list_pages_order_and_limits(proxy):
    for i in range(25):
        generate(proxy, key=f"sk-list-{i:03d}-0123456789", key_alias=f"k{i:03d}")
    first = proxy.get("/key/list", params={"size": 10}).json()
    validate(first, "KeyListResponseObject")
    assert first["total_count"] == 25 and first["total_pages"] == 3 and first["current_page"] == 1
    assert len(first["keys"]) == 10 and all(len(k) == 64 for k in first["keys"])  # hashes by default
    newest = proxy.get("/key/list", params={"size": 1, "return_full_object": "true"}).json()["keys"][0]
    validate(newest, "UserAPIKeyAuth")
    assert newest["key_alias"] == "k024"  # created_at desc by default
    asc = [proxy.get("/key/list", params={"page": p, "size": 10, "sort_order": "asc", "return_full_object": "true"})
           .json()["keys"] for p in (1, 2, 3)]
    assert [k["key_alias"] for page in asc for k in page] == [f"k{i:03d}" for i in range(25)]
    for order in ("asc", "desc"):  # by hash, as the tool pages
        pages = [proxy.get("/key/list", params={"page": p, "size": 10, "sort_by": "token", "sort_order": order})
                 .json()["keys"] for p in (1, 2, 3)]
        tokens = [t for page in pages for t in page]
        assert tokens == sorted(tokens, reverse=order == "desc") and len(set(tokens)) == 25
    too_big = proxy.get("/key/list", params={"size": 101})
    assert too_big.status_code == 422 and too_big.json()["detail"][0]["type"] == "less_than_equal"
    assert too_big.json()["detail"][0]["loc"] == ["query", "size"]
    assert proxy.get("/key/list", params={"sort_by": "nope"}).status_code == 400
    exact = proxy.get("/key/list", params={"key_alias": "k007"}).json()
    assert exact["total_count"] == 1


def test_info_of_deleted_and_unknown_keys(proxy):
    out = generate(proxy, key_alias="gone")
    deleted = proxy.post("/key/delete", json={"keys": [out["token"], "0" * 64]})
    assert deleted.status_code == 200 and deleted.json() == {"deleted_keys": [out["token"], "0" * 64]}  # echoes
    info = proxy.get("/key/info", params={"key": out["token"]})
    assert info.status_code == 200 and info.json()["info"]["status"] == "deleted"
    assert info.json()["info"]["deleted_at"]
    unknown = proxy.get("/key/info", params={"key": "f" * 64})
    assert unknown.status_code == 404 and unknown.json() == {"error": {
        "message": "Key not found in database", "type": "not_found_error", "param": "key", "code": "404"}}
    none = proxy.post("/key/delete", json={"keys": [out["token"]]})
    assert none.status_code == 404 and none.json()["error"]["message"] == "{'error': 'No keys found'}"
    assert proxy.post("/key/delete", json={}).status_code == 422
    assert httpx.delete(f"{proxy.sandbox.url}/key/delete",
                        headers={"Authorization": f"Bearer {RECORDED_MASTER}"}).status_code == 405
    generate(proxy, key_alias="gone")  # an alias is free again once its key is deleted


def test_update_is_a_merge_patch_and_metadata_is_replaced(proxy):
    out = generate(proxy, key_alias="u", models=["a"], metadata={"keep": 1, "x": 2}, duration="1h")
    body = {"key": out["token"], "metadata": {"x": 3}, "models": ["a", "b"]}
    validate(body, "UpdateKeyRequest")
    r = proxy.post("/key/update", json=body)
    assert r.status_code == 200 and r.json()["token"] == out["token"]
    row = proxy.get("/key/info", params={"key": out["token"]}).json()["info"]
    assert row["metadata"] == {"x": 3} and row["models"] == ["a", "b"] and row["key_alias"] == "u"
    proxy.post("/key/update", json={"key": out["token"], "duration": ""})
    assert proxy.get("/key/info", params={"key": out["token"]}).json()["info"]["expires"] == row["expires"]
    proxy.post("/key/update", json={"key": out["token"], "duration": None})
    assert proxy.get("/key/info", params={"key": out["token"]}).json()["info"]["expires"] is None
    missing = proxy.post("/key/update", json={"key": "f" * 64, "models": []})
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Key not found."
    neither = proxy.post("/key/update", json={"models": []})
    assert neither.status_code == 422
    other = generate(proxy, key_alias="v")
    clash = proxy.post("/key/update", json={"key": other["token"], "key_alias": "u"})
    assert clash.status_code == 400 and "already exists" in clash.json()["error"]["message"]
    assert proxy.post("/key/update", json={"key": out["token"], "key_alias": "u"}).status_code == 200  # itself


def test_block_unblock_and_expiry(proxy):
    out = generate(proxy, models=["claude-3-opus-20240229"], duration="1h")
    as_key = {"Authorization": f"Bearer {out['key']}"}
    assert proxy.post("/key/block", json={"key": out["token"]}).json()["blocked"] is True
    blocked = httpx.get(f"{proxy.sandbox.url}/v1/models", headers=as_key)
    assert blocked.status_code == 401 and blocked.json()["error"]["message"].startswith(
        "Authentication Error, Key is blocked.")
    proxy.post("/key/unblock", json={"key": out["token"]})
    assert httpx.get(f"{proxy.sandbox.url}/v1/models", headers=as_key).status_code == 200
    assert proxy.post("/key/block", json={"key": "bad key!"}).status_code == 400
    proxy.sandbox.store.offset += timedelta(hours=2)
    expired = httpx.get(f"{proxy.sandbox.url}/v1/models", headers=as_key)
    assert expired.status_code == 401 and expired.json()["error"]["type"] == "expired_key"
    listed = proxy.get("/key/list", params={"status": "expired"}).json()
    assert listed["keys"] == [out["token"]]  # expired keys stay listed


def test_non_admin_key_cannot_manage(proxy):
    out = generate(proxy)
    r = httpx.post(f"{proxy.sandbox.url}/key/generate", headers={"Authorization": f"Bearer {out['key']}"}, json={})
    assert r.status_code == 401 and "Only proxy admin" in r.json()["error"]["message"]
    listing = httpx.get(f"{proxy.sandbox.url}/key/list", headers={"Authorization": f"Bearer {out['key']}"})
    assert listing.status_code == 403


def test_a_post_to_an_unknown_route_leaves_the_connection_usable(sandbox):
    """LiteLLM's server reads a request's body even for a route it does not have; so must the sandbox, or the next
    request on the same keep-alive connection starts inside the old body (a 400 in HTML)."""
    import httpx
    from helpers import MASTER

    with httpx.Client(base_url=sandbox.url, headers={"Authorization": f"Bearer {MASTER}"}) as client:
        assert client.post("/team/new", json={"team_id": "x" * 200}).status_code == 404
        assert client.get("/model/info").status_code == 200
