"""LiteLLM's surprising behaviours, pinned against its real app, with the client coping with each."""

from __future__ import annotations

import hashlib

import pytest
from helpers import MASTER

from reconciler.adapters.litellm import LiteLLMClient
from reconciler.errors import ProxyError

KEY = "sk-quirk-key-000000000001"
TOKEN = hashlib.sha256(KEY.encode()).hexdigest()


@pytest.fixture
def client(litellm):
    with LiteLLMClient(litellm.url, MASTER) as c:
        yield c


def test_reposting_a_key_answers_200_and_changes_nothing(client):
    client.generate({"key": KEY, "key_alias": "bob"})
    echoed = client.generate({"key": KEY, "key_alias": "bob2"})
    assert echoed["key_alias"] == "bob2"  # the answer echoes the request
    assert client.key_info(TOKEN)["key_alias"] == "bob"  # the row is unchanged: look before you post


def test_delete_echoes_its_input_and_a_second_delete_is_404(client):
    client.generate({"key": KEY})
    body = client.request("POST", "/key/delete", body={"keys": [TOKEN, "f" * 64]})
    assert body == {"deleted_keys": [TOKEN, "f" * 64]}  # not the set actually deleted
    with pytest.raises(ProxyError) as caught:
        client.request("POST", "/key/delete", body={"keys": [TOKEN]}, retry=False)
    assert caught.value.status == 404 and caught.value.detail == "No keys found"
    client.delete([TOKEN])  # the client's delete treats "already gone" as done


def test_deleted_keys_still_answer_info(client):
    client.generate({"key": KEY, "key_alias": "gone"})
    client.delete([TOKEN])
    info = client.key_info(TOKEN)
    assert info["status"] == "deleted" and info["key_alias"] == "gone"
    assert client.key_info("f" * 64) is None  # never existed: 404
    assert all(k["token"] != TOKEN for k in client.list_keys())  # but the listing no longer has it


def test_lost_generate_answer_is_recognised_by_apply(client):
    """apply's register step: a retry of a generate that had landed meets 'alias exists'; the hash tells."""
    client.generate({"key": KEY, "key_alias": "landed"})
    with pytest.raises(ProxyError, match="already exists"):
        client.generate({"key": "sk-quirk-key-000000000002", "key_alias": "landed"})
    assert client.key_info(TOKEN)["status"] == "active"
