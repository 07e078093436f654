"""HTTP for the sandbox: stdlib ThreadingHTTPServer with keep-alive, so it needs nothing beyond the tool itself.

Besides LiteLLM's routes it serves a few of its own under /_sandbox/ (master key only), for tests and demos: move the
clock, read request counts, seed keys in bulk, and inject faults (HTTP errors, delays, connection resets before or
after the work).
"""

from __future__ import annotations

import errno
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from .store import KeyStore, Response, error

DEFAULT_MASTER_KEY = "sk-sandbox-master-key"


class SandboxError(Exception):
    """A one-line reason the sandbox cannot start (a taken port, an unreadable --models)."""


def load_models(path: str | Path | None = None) -> list[dict[str, Any]]:
    """A LiteLLM config's model_list (a whole proxy config is accepted too). ConfigError, one line, if it is not."""
    try:
        text = Path(path).read_text("utf-8") if path else \
            resources.files("litellm_roster_sandbox").joinpath("models.yaml").read_text("utf-8")
        data = yaml.safe_load(text) or {}
    except OSError as exc:
        raise SandboxError(f"--models {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SandboxError(f"--models {path}: not YAML{where}; give a LiteLLM config with a model_list") from None
    models = data.get("model_list") if isinstance(data, dict) else data
    if not isinstance(models, list) or not all(isinstance(m, dict) and "model_name" in m for m in models):
        raise SandboxError(f"--models {path}: expected a LiteLLM config whose model_list entries have model_name")
    return models


@dataclass
class Fault:
    """Make a share of the requests to a route fail.

    kind: "status" (answer `status`, with Retry-After when `retry_after` is set), "delay" (sleep `seconds`, then
    answer normally), "reset-before" (drop the connection without doing the work), "reset-after" (do the work, then
    drop the connection: the request took effect but the client never heard).
    """

    route: str  # "POST /key/generate", or "*" for every route
    kind: str = "status"
    status: int = 503
    rate: float = 1.0
    count: int | None = None  # at most this many times; None: no limit
    retry_after: float | None = None
    seconds: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """'POST /key/generate=503@0.3' or '*=reset-after@0.1' or 'GET /key/list=delay:2@1'."""
        route, _, rest = spec.partition("=")
        what, _, rate = rest.partition("@")
        kind, _, arg = what.partition(":")
        if kind.isdigit():
            return cls(route, "status", int(kind), float(rate or 1), retry_after=float(arg) if arg else None)
        return cls(route, kind, rate=float(rate or 1), seconds=float(arg or 0))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], store: KeyStore):
        self.store = store
        self.counts: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self.required_headers: dict[str, str] = {}
        self.changed_by: list[str] = []  # litellm-changed-by headers seen on writes: LiteLLM's audit actor
        self.random = random.Random(0)
        self.faults_lock = threading.Lock()
        super().__init__(address, _Handler)

    def draw_fault(self, name: str) -> Fault | None:
        with self.faults_lock:
            for fault in self.faults:
                if fault.route in ("*", name) and fault.count != 0 and self.random.random() < fault.rate:
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: with Nagle's algorithm the body waited for the client's delayed ACK,
    # 40 ms on some answers (TCP_NODELAY, as uvicorn sets it under LiteLLM).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass  # request lines could carry key hashes; the sandbox stays quiet

    def _send(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in getattr(self, "_extra_headers", {}).items():
            self.send_header(name, value)
        self._extra_headers = {}
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_text(self, status: int, text: str) -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> tuple[Any, Response | None]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}, None
        try:
            body = json.loads(raw)
        except ValueError:
            return None, (422, {"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]})
        if not isinstance(body, dict):
            return None, (422, {"detail": [{"type": "model_attributes_type", "loc": ["body"],
                                            "msg": "Input should be a valid dictionary or object to extract fields "
                                                   "from"}]})
        return body, None

    def _reset(self) -> None:
        # SO_LINGER 0: close with RST, as a crashed proxy or a cut network would.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        route, query = parts.path, dict(parse_qsl(parts.query))
        name = f"{method} {route}"
        self.server.counts[name] += 1
        for header, value in self.server.required_headers.items():
            if self.headers.get(header) != value:  # as an ingress routing on Host answers for an unknown host
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                return self._send_text(404, "404 page not found\n")
        fault = None if route.startswith("/_sandbox/") else self.server.draw_fault(name)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        elif fault is not None and fault.kind == "reset-before":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return self._reset()
        elif fault is not None and fault.kind == "status":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if fault.retry_after is not None:
                self._extra_headers = {"Retry-After": str(fault.retry_after)}
            return self._send(fault.status, {"error": {"message": f"injected fault: HTTP {fault.status}",
                                                       "type": "sandbox_fault", "param": None,
                                                       "code": str(fault.status)}})
        status, body = self._route(method, route, query)
        if fault is not None and fault.kind == "reset-after":
            return self._reset()
        self._send(status, body)

    def _route(self, method: str, route: str, query: dict[str, str]) -> Response:
        store = self.server.store
        if route in ("/health/liveliness", "/health/liveness"):
            return 200, "I'm alive!"
        if route == "/health/readiness":
            return 200, {"status": "healthy", "db": "connected"}
        routes = {
            ("POST", "/key/generate"): lambda c, b: store.generate(c, b),
            ("POST", "/key/update"): lambda c, b: store.update(c, b),
            ("POST", "/key/delete"): lambda c, b: store.delete(c, b, self.headers.get("litellm-changed-by")),
            ("POST", "/key/block"): lambda c, b: store.set_blocked(c, b, True),
            ("POST", "/key/unblock"): lambda c, b: store.set_blocked(c, b, False),
            ("GET", "/key/info"): lambda c, b: store.info(c, query.get("key")),
            ("GET", "/key/list"): lambda c, b: store.list(c, query),
            ("GET", "/v1/models"): lambda c, b: store.v1_models(c),
            ("GET", "/models"): lambda c, b: store.v1_models(c),
            ("GET", "/model/info"): lambda c, b: store.model_info(c),
            ("POST", "/user/new"): lambda c, b: store.user_new(c, b),
            ("POST", "/chat/completions"): lambda c, b: store.chat(c, b),
            ("POST", "/v1/chat/completions"): lambda c, b: store.chat(c, b),
            ("GET", "/user/info"): lambda c, b: store.user_info(c, query.get("user_id")),
            ("GET", "/user/list"): lambda c, b: store.user_list(c, query),
            ("POST", "/user/update"): lambda c, b: store.user_update(c, b),
            ("POST", "/user/delete"): lambda c, b: store.user_delete(c, b),
            ("GET", "/v1/model/info"): lambda c, b: store.model_info(c),
            ("POST", "/_sandbox/clock"): lambda c, b: self._clock(c, b),
            ("GET", "/_sandbox/stats"): lambda c, b: self._stats(c),
            ("POST", "/_sandbox/faults"): lambda c, b: self._faults(c, b),
            ("POST", "/_sandbox/seed"): lambda c, b: store.seed(b.get("keys", []), b.get("users")) if c == "master" else
            error(403, "master key only", "auth_error"),
        }
        handler = routes.get((method, route))
        if handler is None:
            # The body is read even so: left unread, it would be taken for the next request on this connection.
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if any(r == route for _, r in routes):
                return 405, {"detail": "Method Not Allowed"}
            return 404, {"detail": "Not Found"}
        headers = {k.lower(): v for k, v in self.headers.items()}
        caller, denied = store.authenticate(headers, route)
        if denied is not None:
            return denied
        body: Any = {}
        if method == "POST" and self.headers.get("litellm-changed-by"):
            self.server.changed_by.append(self.headers["litellm-changed-by"])
        if method == "POST":
            body, bad = self._body()
            if bad is not None:
                return bad
        return handler(caller, body)

    def _clock(self, caller: str, body: dict[str, Any]) -> Response:
        if caller != "master":
            return error(403, "master key only", "auth_error")
        self.server.store.offset += timedelta(seconds=float(body.get("advance_seconds", 0)))
        return 200, {"now": self.server.store.now().isoformat()}

    def _faults(self, caller: str, body: dict[str, Any]) -> Response:
        """Replace the fault list: {"faults": [{"route": ..., "kind": ..., ...}, ...]}; [] clears it."""
        if caller != "master":
            return error(403, "master key only", "auth_error")
        try:
            faults = [Fault(**spec) for spec in body.get("faults", [])]
        except TypeError as exc:
            return error(400, f"bad fault: {exc}", "bad_request_error")
        with self.server.faults_lock:
            self.server.faults = faults
        return 200, {"faults": len(faults)}

    def _stats(self, caller: str) -> Response:
        if caller != "master":
            return error(403, "master key only", "auth_error")
        return 200, {"requests": dict(self.server.counts), "keys": len(self.server.store.rows)}

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


@dataclass
class Sandbox:
    server: _Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{getattr(self.server, 'scheme', 'http')}://{host}:{port}"

    @property
    def store(self) -> KeyStore:
        return self.server.store

    @property
    def counts(self) -> Counter[str]:
        return self.server.counts

    def set_faults(self, *faults: Fault) -> None:
        with self.server.faults_lock:
            self.server.faults = list(faults)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sandbox(port: int = 0, master_key: str = DEFAULT_MASTER_KEY, models: list[dict[str, Any]] | None = None,
                  host: str = "127.0.0.1", faults: list[Fault] | None = None,
                  required_headers: dict[str, str] | None = None,
                  tls: tuple[str, str] | None = None) -> Sandbox:
    """Serve in a background thread; port 0 picks a free one (read it from .url). `tls` is (cert, key) files."""
    store = KeyStore(master_key, models if models is not None else load_models())
    try:
        server = _Server((host, port), store)
    except OSError as exc:
        why = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise SandboxError(f"cannot listen on {host}:{port}: {why}") from None
    if tls is not None:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.scheme = "https"
    server.faults = list(faults or [])
    server.required_headers = dict(required_headers or {})
    thread = threading.Thread(target=server.serve_forever, name="sandbox", daemon=True)
    thread.start()
    return Sandbox(server, thread)
