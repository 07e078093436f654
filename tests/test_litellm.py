"""The LiteLLM client against the sandbox over HTTP: paging, retries under injected faults, error messages."""

from __future__ import annotations

import math
import socket

import pytest
from helpers import MASTER, raw_server

from litellm_roster_sandbox import Fault, start_sandbox
from reconciler.adapters.litellm import LiteLLMClient
from reconciler.errors import AuthError, ProxyError


@pytest.fixture
def client(sandbox):
    c = LiteLLMClient(sandbox.url, MASTER)
    c.BACKOFF_BASE = 0.01  # fast retries in tests; the schedule itself is the same
    yield c
    c.close()


def seed(client, n: int) -> None:
    for i in range(n):
        client.generate({"key": f"sk-seed-{i:06d}-abcdefgh", "key_alias": f"seed-{i}"})


@pytest.mark.parametrize("n", [0, 1, 100, 101, 250])
def test_list_reads_every_key_in_pages_of_100(client, sandbox, n):
    seed(client, n)
    sandbox.counts.clear()
    keys = client.list_keys()
    assert sorted(k["key_alias"] for k in keys) == sorted(f"seed-{i}" for i in range(n))
    assert sandbox.counts["GET /key/list"] == max(1, math.ceil(n / 100))


def test_retries_503_and_429_with_retry_after(client, sandbox):
    sandbox.set_faults(Fault("GET /key/list", "status", 503, count=2), Fault("GET /model/info", "status", 429, count=1,
                                                                              retry_after=0.05))
    assert client.list_keys() == []
    assert client.model_info()
    assert client.stats.retries == 3


def test_retries_connection_reset(client, sandbox):
    sandbox.set_faults(Fault("GET /key/list", "reset-before", count=2))
    assert client.list_keys() == []
    assert sandbox.counts["GET /key/list"] == 3


def test_gives_up_after_bounded_attempts(client, sandbox):
    sandbox.set_faults(Fault("GET /key/list", "status", 502))
    with pytest.raises(ProxyError) as caught:
        client.list_keys()
    assert str(caught.value) == "GET /key/list: HTTP 502: injected fault: HTTP 502"
    assert sandbox.counts["GET /key/list"] == LiteLLMClient.MAX_ATTEMPTS


def test_generate_whose_answer_was_lost_is_not_duplicated(client, sandbox):
    sandbox.set_faults(Fault("POST /key/generate", "reset-after", count=1))
    with pytest.raises(ProxyError, match="already exists"):  # the retry meets its own first attempt
        client.generate({"key": "sk-lost-answer-000001", "key_alias": "lost"})
    assert len(sandbox.store.rows) == 1  # and apply resolves it by looking the hash up (test_faults)


def test_delete_already_gone_is_success(client, sandbox):
    client.delete(["0" * 64])
    sandbox.set_faults(Fault("POST /key/delete", "reset-after", count=1))
    client.generate({"key": "sk-to-delete-0000001", "key_alias": "d"})
    client.delete([next(iter(sandbox.store.rows))])
    assert sandbox.store.rows == {}


def test_wrong_master_key_is_auth_error_without_the_key(sandbox):
    with LiteLLMClient(sandbox.url, "sk-wrong-master-key-1234") as c:
        with pytest.raises(AuthError) as caught:
            c.model_info()
    assert str(caught.value) == "GET /model/info: HTTP 401: Authentication Error, Invalid API key provided."
    assert "sk-wrong" not in repr(caught.value.args)


def test_unreachable_proxy():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = LiteLLMClient(f"http://127.0.0.1:{port}", MASTER)
    c.BACKOFF_BASE = 0.01
    with pytest.raises(ProxyError) as caught:
        c.model_info()
    assert str(caught.value).startswith(f"GET /model/info: no response: cannot connect to http://127.0.0.1:{port}")
    assert "is the proxy running, and is the URL right?" in str(caught.value)


def test_html_answer_is_named():
    body = b"<html><body>Bad gateway page</body></html>"
    listener, url = raw_server(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    with listener, LiteLLMClient(url, MASTER) as c:
        with pytest.raises(ProxyError) as caught:
            c.model_info()
    assert "the proxy answered text/html, not JSON ('<html><body>Bad gateway page</body></html>'); " \
           "is the URL a LiteLLM proxy?" in str(caught.value)


def test_truncated_json_is_named():
    listener, url = raw_server(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n'
                                b'Connection: close\r\n\r\n{"data": ')
    with listener, LiteLLMClient(url, MASTER) as c:
        with pytest.raises(ProxyError) as caught:
            c.model_info()
    assert "not JSON" in str(caught.value)


def test_validation_error_detail_is_flattened(client):
    with pytest.raises(ProxyError) as caught:
        client.generate({"models": "not-a-list"})
    assert str(caught.value) == "POST /key/generate: HTTP 422: body.models: Input should be a valid list"


def test_proxy_headers_are_sent():
    with start_sandbox(master_key=MASTER, required_headers={"Host": "litellm.localhost"}) as sb:
        with LiteLLMClient(sb.url, MASTER) as bare:
            with pytest.raises(ProxyError, match="the proxy answered text/plain, not JSON"):
                bare.model_info()
        with LiteLLMClient(sb.url, MASTER, headers={"Host": "litellm.localhost"}) as routed:
            assert routed.model_info()


def test_str_dict_error_messages_are_unwrapped(client):
    with pytest.raises(ProxyError) as caught:
        client.generate({"key": "abc-0123456789012345"})
    assert str(caught.value) == ("POST /key/generate: HTTP 400: Invalid key format. LiteLLM Virtual Key must start "
                                 "with 'sk-'. Received: abc-****2345")
    with pytest.raises(ProxyError, match=r"HTTP 404: No keys found$"):
        client.request("POST", "/key/delete", body={"keys": ["0" * 64]})


def test_old_litellms_401_for_an_unknown_key_reads_as_not_found():
    """LiteLLM 1.80 and older answer 401 "not found in db" on key routes for a key that is gone: a delete of it is
    done, not an authentication failure."""
    import json as json_

    from helpers import raw_server

    body = json_.dumps({"error": {"message": "Authentication Error, Key not found in db", "type": "auth_error",
                                  "param": "None", "code": "401"}}).encode()
    listener, url = raw_server(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nConnection: close\r\n"
                               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with listener, LiteLLMClient(url, "sk-master-for-this-test") as client:
        client.delete(["0" * 64])  # no exception
        assert client.key_info("0" * 64) is None


def test_version_outside_the_tested_range_is_a_warning():
    from reconciler.adapters.litellm import TESTED_VERSIONS, version_warning

    assert version_warning(None) is None
    assert version_warning(TESTED_VERSIONS[0]) is None and version_warning("1.100.5") is None
    assert version_warning("1.73.0") == (f"the proxy runs LiteLLM 1.73.0, outside the versions this tool is tested "
                                         f"with ({TESTED_VERSIONS[0]} to {TESTED_VERSIONS[1]}); check the plan "
                                         "closely")
    assert version_warning("1.200.0").startswith("the proxy runs LiteLLM 1.200.0, outside")


def test_tested_versions_are_what_ci_runs_and_the_readme_lists():
    """CI runs the pin and versions.txt; the warning's range and the README's compatibility table must say the same."""
    import re
    from pathlib import Path

    from reconciler.adapters.litellm import TESTED_VERSIONS

    root = Path(__file__).parent.parent
    conformance = root / "tests" / "conformance"
    pin = re.search(r"^litellm\[proxy\]==(\S+)$", (conformance / "requirements.txt").read_text(), re.M).group(1)
    matrix = re.findall(r"^(\d+\.\d+\.\d+)$", (conformance / "versions.txt").read_text(), re.M)
    ran = sorted({pin, *matrix}, key=lambda v: tuple(map(int, v.split("."))))
    table = re.findall(r"^\| (\d+\.\d+\.\d+) \|", (root / "README.md").read_text(), re.M)
    assert table == ran
    assert TESTED_VERSIONS == (ran[0], ran[-1])
