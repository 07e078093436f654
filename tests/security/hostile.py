"""A hostile LiteLLM look-alike: it forwards every request to a real sandbox, except that one route misbehaves in a
chosen way (echoes the request with its Authorization header, answers a list where an object belongs, wrong field
types, lying paging, a slow drip, a huge body). Loopback only; every loop is bounded."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

MODES = ("echo-200", "echo-400", "echo-500", "list-not-object", "wrong-types", "lying-paging", "slow-drip",
         "huge-body")
DRIP_SECONDS = 60  # how long a drip would last if the client let it: far past any test's patience
HUGE_BYTES = 300 * 1024 * 1024  # streamed, never held here


def _wrong_types(route: str, body: Any) -> Any:
    """The real answer with its fields of the wrong type."""
    if route == "/key/list" and isinstance(body, dict):
        keys = [{**k, "created_at": 12345, "models": "claude", "metadata": ["x"], "max_budget": "lots"}
                if isinstance(k, dict) else k for k in body.get("keys", [])]
        return {**body, "keys": keys or [{"token": 7, "created_at": []}], "total_pages": "many",
                "total_count": {"n": 1}}
    if route == "/model/info":
        return {"data": [{"model_name": 42, "litellm_params": "x"}]}
    if route == "/v1/models":
        return {"data": [{"id": None}, "claude"]}
    if route == "/key/info":
        return {"info": "me"}
    if route == "/team/list":
        return [{"team_id": 7, "members_with_roles": "everyone", "metadata": ["x"]}]
    return {"token": 1, "key": ["x"], "data": 3}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass

    def _forward(self, method: str, body: bytes) -> httpx.Response:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        return httpx.request(method, self.server.upstream + self.path, headers=headers, content=body or None,
                             timeout=30)

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        route = self.path.split("?", 1)[0]
        mode = self.server.mode
        if route != self.server.route or mode is None:
            real = self._forward(method, body)
            self._send(real.status_code, real.content, real.headers.get("content-type", "application/json"))
            return
        self.server.hits += 1
        if mode.startswith("echo-"):
            # The credential and the body (a new key's plaintext) first, where a quoted snippet would show them.
            echo = (f"Authorization: {self.headers.get('Authorization')}\n{body.decode('utf-8', 'replace')}\n"
                    f"{method} {self.path}\n{self.headers}").encode()
            self._send(int(mode[5:]), echo, "text/plain")
        elif mode == "list-not-object":
            self._send(200, json.dumps([{"token": "x", "data": []}]).encode())
        elif mode == "wrong-types":
            real = self._forward(method, body)
            try:
                parsed = real.json()
            except ValueError:
                parsed = None
            self._send(200, json.dumps(_wrong_types(route, parsed)).encode())
        elif mode == "lying-paging":
            real = self._forward(method, body).json()
            self._send(200, json.dumps({**real, "total_pages": 10**8, "total_count": 10**10}).encode())
        elif mode == "slow-drip":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            deadline = time.monotonic() + DRIP_SECONDS
            try:
                while time.monotonic() < deadline and not self.server.stopping.is_set():
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                pass
        elif mode == "huge-body":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(HUGE_BYTES))
            self.end_headers()
            chunk = b'{"keys": [' + b" " * (1024 * 1024 - 10)
            try:
                for _ in range(HUGE_BYTES // len(chunk)):
                    if self.server.stopping.is_set():
                        break
                    self.wfile.write(chunk)
            except OSError:
                pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.route: str | None = None
        self.mode: str | None = None
        self.hits = 0
        self.stopping = threading.Event()


class HostileProxy:
    def __init__(self, upstream: str):
        self.server = _Server(upstream)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def misbehave(self, route: str, mode: str) -> None:
        self.server.route, self.server.mode, self.server.hits = route, mode, 0

    def stop(self) -> None:
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
