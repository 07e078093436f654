"""Bad environments through the installed command: each a clear message, exit 1, and nothing changed."""

from __future__ import annotations

import socket
import subprocess

import pytest
from helpers import MASTER, Workspace, managed_keys, raw_server

from litellm_roster_sandbox import Fault, start_sandbox


def test_unreachable_proxy(workspace, sandbox):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    workspace.write_roster([{"name": "jane"}], proxy_url=False)
    result = workspace.run("apply", "--proxy-url", dead)
    assert result.rc == 1
    assert f"error: GET /key/info: no response: cannot connect to {dead}" in result.stderr
    assert not workspace.keys.exists()


def test_proxy_that_answers_html(workspace, sandbox):
    body = b"<!doctype html><title>Sign in</title>"
    listener, url = raw_server(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    workspace.write_roster([{"name": "jane"}], proxy_url=False)
    with listener:
        result = workspace.run("plan", "--proxy-url", url)
    assert result.rc == 1
    assert "error: GET /model/info: HTTP 200: the proxy answered text/html, not JSON" in result.stderr
    assert "is the URL a LiteLLM proxy?" in result.stderr


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_untrusted_then_trusted_with_ca_bundle(tmp_path, people, certificate):
    with start_sandbox(master_key=MASTER, tls=certificate) as sb:
        ws = Workspace(tmp_path, sb.url, people)
        ws.write_roster([{"name": "jane"}])
        refused = ws.run("apply")
        assert refused.rc == 1 and "TLS failed for https://127.0.0.1:" in refused.stderr
        assert "pass --ca-bundle" in refused.stderr and not sb.store.rows
        trusted = ws.run("apply", "--ca-bundle", certificate[0])
        assert trusted.rc == 0, trusted.stdout + trusted.stderr
        assert len(managed_keys(sb)) == 1


def test_timeouts_are_retried_then_reported(workspace, sandbox):
    workspace.write_roster([{"name": "jane"}])
    sandbox.set_faults(Fault("GET /model/info", "delay", rate=1.0, seconds=1.5))
    result = workspace.run("plan", "--timeout", "0.3")
    assert result.rc == 1
    assert "error: GET /model/info: no response: timed out talking to" in result.stderr
    assert sandbox.counts["GET /model/info"] == 4


def test_flaky_proxy_still_converges(workspace, sandbox):
    """A share of every route fails with 429, 500, 502 or 503, or drops the connection: apply retries what is
    safe to retry and still ends where the roster says."""
    workspace.write_roster([{"name": n} for n in ("jane", "john", "priya")])
    sandbox.set_faults(Fault("*", "status", 503, rate=0.2), Fault("*", "status", 429, rate=0.1, retry_after=0.05),
                       Fault("*", "reset-before", rate=0.1), Fault("*", "status", 502, rate=0.1))
    first = workspace.run("apply")
    sandbox.set_faults()
    if first.rc != 0:  # bounded retries may still lose to this much noise: a clean re-run must converge
        assert workspace.run("apply").rc == 0
    from helpers import check_invariant
    check_invariant(workspace, sandbox)
    assert len(sandbox.store.plaintexts) == len(managed_keys(sandbox)) == 3


def test_lost_responses_create_nothing_twice(workspace, sandbox):
    """Every write's first attempt takes effect but its answer is lost (the connection is reset afterwards)."""
    workspace.write_roster([{"name": "jane"}, {"name": "john"}], grace="1h")
    sandbox.set_faults(Fault("POST /key/generate", "reset-after", count=2))
    result = workspace.run("apply")
    assert result.rc == 0, result.stdout + result.stderr
    assert len(managed_keys(sandbox)) == 2 and len(sandbox.store.plaintexts) == 2
    # a rotation with grace (its rename is an update), a block, and a delete, whose answers are lost
    changed = [{"name": "jane", "recipient": workspace.people["priya"].recipient}, {"name": "john", "disabled": True}]
    workspace.write_roster(changed, grace="1h")
    sandbox.set_faults(Fault("POST /key/generate", "reset-after", count=1),
                       Fault("POST /key/update", "reset-after", count=1),
                       Fault("POST /key/block", "reset-after", count=1))
    result = workspace.run("apply")
    assert result.rc == 0, result.stdout + result.stderr
    workspace.write_roster(changed[:1], grace="1h")
    sandbox.set_faults(Fault("POST /key/delete", "reset-after", count=1))
    assert workspace.run("apply").rc == 0
    sandbox.set_faults()
    aliases = sorted(r["key_alias"] for r in managed_keys(sandbox))
    assert aliases == ["claude-code-jane", "claude-code-jane--retiring"]
