"""Helpers shared by the test tiers: the installed command, a workspace that runs it, secret scanning, the
delivery invariant."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MASTER = "sk-test-master-key-0123456789"
PROOF_KEY = "test-proof-key-0123456789abcdefghijklmnop"  # RECONCILE_PROOF_KEY: proofs on, as in production
BIN = Path(sys.executable).parent
RECONCILE = str(BIN / "reconcile")
SOPS = str(BIN / "sops")
NAMES = ("jane", "john", "priya", "ada", "omar", "admin")


@dataclass(frozen=True)
class Person:
    name: str
    recipient: str
    identity_file: Path


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


@dataclass
class Workspace:
    root: Path
    url: str
    people: dict[str, Person]
    outputs: list[str] = field(default_factory=list)
    known_secrets: list[str] = field(default_factory=list)

    @property
    def roster(self) -> Path:
        return self.root / "roster.yaml"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    def write_roster(self, developers: list[dict[str, Any]], *, proxy_url: bool = True,
                     teams: list[dict[str, Any]] | None = None, **keys: Any) -> None:
        doc = {
            "version": 1,
            **({"proxy": {"url": self.url}} if proxy_url else {}),
            "keys": {"alias": "claude-code-{name}", "grace": "0",
                     "admin_recipients": [self.people["admin"].recipient], **keys},
            "model_groups": {"claude-code": ["claude-sonnet-4-5-20250929", "claude-3-opus-20240229"]},
            **({"teams": teams} if teams is not None else {}),
            "defaults": {"models": ["claude-code"]},
            "developers": [{"recipient": self.people[d["name"]].recipient, **d} for d in developers],
        }
        self.roster.write_text("# yaml-language-server: $schema=schema/roster.schema.json\n"
                               + yaml.safe_dump(doc, sort_keys=False))

    def add_people(self, names: list[str]) -> None:
        """A real age identity for each name: every developer needs their own recipient (a roster rule)."""
        import pyrage

        folder = self.root / ".identities"
        folder.mkdir(exist_ok=True)
        for name in names:
            if name in self.people:
                continue
            identity = pyrage.x25519.Identity.generate()
            (folder / f"{name}.txt").write_text(f"{identity}\n")
            self.people[name] = Person(name, str(identity.to_public()), folder / f"{name}.txt")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "SOPS_", "RECONCILE_"))}
        # Locks go to the test's own directory: a test run leaves nothing in the system's temp directory.
        env.update({"LITELLM_MASTER_KEY": MASTER, "LITELLM_PROXY_URL": self.url, "RECONCILE_PROOF_KEY": PROOF_KEY,
                    "RECONCILE_LOCK_DIR": str(self.root / ".locks"), **extra})
        return env

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        done = subprocess.run([RECONCILE, *args], cwd=self.root, capture_output=True, text=True,
                              env=env or self.env(), timeout=120)
        self.outputs += [done.stdout, done.stderr]
        return Result(done.returncode, done.stdout, done.stderr)

    def decrypt(self, name: str, person: str | None = None) -> str:
        """What the developer does: sops decrypt --extract '["api_key"]' keys/<name>.sops.yaml"""
        who = self.people[person or name]
        env = {**self.env(), "SOPS_AGE_KEY_FILE": str(who.identity_file)}
        done = subprocess.run([SOPS, "decrypt", "--extract", '["api_key"]', str(self.keys / f"{name}.sops.yaml")],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        secret = done.stdout.strip()
        self.known_secrets.append(secret)
        return secret

    def key_file(self, name: str) -> dict[str, Any]:
        return yaml.safe_load((self.keys / f"{name}.sops.yaml").read_text())


_RECIPIENTS: dict[str, str] = {"jane": "age1m9pfl7efvru89xwn6rdl5xpkus6q6g2vrhwstqgyqlz4laj6cfwqepjg7h"}


def recipient_of(name: str) -> str:
    """A real age recipient of this name's own, the same for the whole test run (a recipient is one developer's)."""
    if name not in _RECIPIENTS:
        import pyrage

        _RECIPIENTS[name] = str(pyrage.x25519.Identity.generate().to_public())
    return _RECIPIENTS[name]


def scan_for_secrets(texts: list[str], files_root: Path, secrets: list[str]) -> list[str]:
    """Every place a secret appears in plaintext: in the texts, or in any file under files_root."""
    found = []
    for secret in {s for s in [*secrets, PROOF_KEY] if s}:  # the proof key is a secret too
        for i, text in enumerate(texts):
            if secret in text:
                found.append(f"output #{i} holds {secret[:6]}...")
        for path in files_root.rglob("*"):
            if path.is_file() and secret.encode() in path.read_bytes():
                found.append(f"{path} holds {secret[:6]}...")
    return found


def sandbox_models(sandbox_url: str, secret: str) -> list[str] | int:
    import httpx

    r = httpx.get(f"{sandbox_url}/v1/models", headers={"Authorization": f"Bearer {secret}"})
    if r.status_code != 200:
        return r.status_code
    return sorted(m["id"] for m in r.json()["data"])


def managed_keys(sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.store.rows.values() if (r.get("metadata") or {}).get("managed_by") == "litellm-roster"]


def check_invariant(ws: Workspace, sandbox) -> None:
    """Every live managed key has exactly one key file that decrypts to it; no key file names a key that is not
    live; exactly one key per developer carries the canonical alias; the next plan is empty."""
    import hashlib

    from reconciler.adapters.keyfiles import read_key_files

    rows = managed_keys(sandbox)
    files = read_key_files(ws.keys)
    current = [r for r in rows if "retire_at" not in r["metadata"] and r["metadata"].get("delivery") != "external"]
    for row in current:
        name = row["metadata"]["roster_name"]
        assert files[name].token_sha256 == row["token"], name
        assert hashlib.sha256(ws.decrypt(name, "admin").encode()).hexdigest() == row["token"], name
    assert sorted(files) == sorted(r["metadata"]["roster_name"] for r in current)
    assert {f.token_sha256 for f in files.values()} <= set(sandbox.store.rows)
    canonical = [r["key_alias"] for r in rows if r["key_alias"] == f"claude-code-{r['metadata']['roster_name']}"]
    assert len(canonical) == len(set(canonical)) == len(current)
    again = ws.run("plan", "--detailed-exitcode")
    assert again.rc == 0, again.stdout + again.stderr


def raw_server(response: bytes, seen: list[bytes] | None = None) -> tuple[socket.socket, str]:
    """A loopback server that answers every request with the given raw bytes (and keeps what it got in `seen`)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                if seen is not None:
                    seen.append(request)
                conn.sendall(response)

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def host_route(upstream: str, host: str):
    """An nginx-like route on 127.0.0.1, as a devcontainer has: it forwards GET requests to upstream only when they
    carry `Host: host`, and answers 404 otherwise. A context manager yielding its URL."""
    import contextlib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    class Route(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.headers.get("Host") != host:
                self.send_response(404)
                self.end_headers()
                return
            answer = httpx.get(upstream + self.path, headers={"Authorization": self.headers.get("Authorization", "")})
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args):
            pass

    @contextlib.contextmanager
    def serving():
        server = ThreadingHTTPServer(("127.0.0.1", 0), Route)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()

    return serving()
