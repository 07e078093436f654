"""The security tier: each attack from docs/security.md, run against the sandbox and against LiteLLM's own app.

`target` is the proxy under attack, reached only over HTTP (so the same test reads the same on both), with the
helpers an attacker and an operator need: users with roles, keys made by them, and every key row."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import pytest
from helpers import MASTER, Workspace, scan_for_secrets


@dataclass
class Target:
    url: str
    kind: str
    secrets: list[str] = field(default_factory=list)  # every plaintext key made here, for the leak scan
    wipe: Callable[[], None] = lambda: None  # the proxy's database lost: no keys, no users

    def call(self, method: str, route: str, *, key: str = MASTER, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + route, headers={"Authorization": f"Bearer {key}"}, timeout=30,
                             **kwargs)

    def user(self, user_id: str, role: str) -> None:
        r = self.call("POST", "/user/new", json={"user_id": user_id, "user_role": role})
        assert r.status_code == 200, r.text

    def key(self, *, by: str = MASTER, **body: Any) -> str:
        """A key made by `by` (the master key, or a user's own key): returns its secret."""
        r = self.call("POST", "/key/generate", key=by, json=body)
        assert r.status_code == 200, r.text
        self.secrets.append(r.json()["key"])
        return r.json()["key"]

    def rows(self) -> dict[str, dict[str, Any]]:
        r = self.call("GET", "/key/list", params={"size": 100, "return_full_object": "true"})
        assert r.status_code == 200, r.text
        return {k["token"]: k for k in r.json()["keys"]}

    def row(self, secret: str) -> dict[str, Any] | None:
        return self.rows().get(hashlib.sha256(secret.encode()).hexdigest())


@pytest.fixture(params=["sandbox", "litellm"])
def target(request) -> Target:
    if request.param == "sandbox":
        sandbox = request.getfixturevalue("sandbox")
        t = Target(sandbox.url, "sandbox", wipe=sandbox.store.clear)
        yield t
        t.secrets += sandbox.store.plaintexts
    else:
        litellm = request.getfixturevalue("litellm")
        yield Target(litellm.url, "litellm", wipe=litellm.reset)


@pytest.fixture
def ws(tmp_path, target, people) -> Workspace:
    workspace = Workspace(tmp_path, target.url, people)
    yield workspace
    leaks = scan_for_secrets(workspace.outputs, tmp_path, [MASTER, *target.secrets, *workspace.known_secrets])
    assert not leaks, leaks
