"""The conformance tier: LiteLLM's real proxy (pinned, its own virtualenv) on a real PostgreSQL, served on 127.0.0.1
(the `litellm` fixture, in tests/conftest.py; docs/testing.md). `bash tests/conformance/setup.sh` makes the
virtualenv; CI always does."""

from __future__ import annotations

import pytest
from helpers import MASTER, Workspace, scan_for_secrets


@pytest.fixture
def real_workspace(tmp_path, litellm, people):
    ws = Workspace(tmp_path, litellm.url, people)
    yield ws
    leaks = scan_for_secrets(ws.outputs, tmp_path, [MASTER, *ws.known_secrets])
    assert not leaks, leaks
