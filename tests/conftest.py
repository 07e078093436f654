"""Shared fixtures: a sandbox proxy on 127.0.0.1, real age identities, and a workspace that runs the installed
`reconcile` command and, at teardown, scans everything the test's runs wrote for plaintext keys."""

from __future__ import annotations

import logging
from pathlib import Path

import pyrage
import pytest
from github_fake import FakeGitHub
from helpers import MASTER, NAMES, Person, Workspace, scan_for_secrets
from litellm_app import serve_litellm_app

from litellm_roster_sandbox import start_sandbox
from reconciler.adapters.delivery import Sops


@pytest.fixture(scope="session")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    folder = tmp_path_factory.mktemp("identities")
    out = {}
    for name in NAMES:
        identity = pyrage.x25519.Identity.generate()
        path = folder / f"{name}.txt"
        path.write_text(f"{identity}\n")
        out[name] = Person(name, str(identity.to_public()), path)
    return out


@pytest.fixture
def sandbox():
    with start_sandbox(master_key=MASTER) as sb:
        yield sb


@pytest.fixture
def workspace(tmp_path: Path, sandbox, people) -> Workspace:
    ws = Workspace(tmp_path, sandbox.url, people)
    yield ws
    # Everything the runs printed and every file they left must be free of every key the proxy ever saw
    # (the sandbox remembers plaintexts for exactly this) and of the master key.
    leaks = scan_for_secrets(ws.outputs, tmp_path, [MASTER, *sandbox.store.plaintexts, *ws.known_secrets])
    assert not leaks, leaks


@pytest.fixture(scope="session")
def litellm_proxy():
    yield from serve_litellm_app()


@pytest.fixture
def litellm(litellm_proxy):
    """LiteLLM's own proxy app with empty tables (the conformance and security tiers)."""
    litellm_proxy.reset()
    return litellm_proxy


@pytest.fixture(scope="session")
def sops() -> Sops:
    return Sops()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
def no_secret_in_logs_or_output(request, capsys):
    """Every test: all log records of the tool (at DEBUG) and all it printed in-process must hold no key the
    sandbox issued and not the master key. (Subprocess runs are scanned by the workspace fixture.)"""
    handler = _Records()
    logger = logging.getLogger("reconciler")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    out = capsys.readouterr()
    secrets = [MASTER]
    for value in request.node.funcargs.values():
        store = getattr(value, "store", None) or getattr(getattr(value, "sandbox", None), "store", None)
        secrets += getattr(store, "plaintexts", [])
    leaks = scan_for_secrets([*handler.lines, out.out, out.err], Path("/nonexistent"), secrets)
    assert not leaks, leaks


@pytest.fixture
def github():
    """A fake GitHub REST endpoint on 127.0.0.1 (tests/github_fake.py)."""
    fake = FakeGitHub()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
