"""A loopback Kubernetes API server with just the routes the tool uses: Secret, Service and Pod reads, Lease
create/get/replace/delete with resourceVersion conflicts, and pod port-forward over websocket (the protocol the
official client speaks: subprotocol v4.channel.k8s.io, one channel byte per frame, the port in each channel's first
frame). It forwards to a real TCP backend (a sandbox) and can be told to drop streams mid-run."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Cluster:
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # (ns, name) -> plain values
    services: dict[tuple[str, str], dict] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)
    leases: dict[tuple[str, str], dict] = field(default_factory=dict)
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (verb, resource) the caller may not do
    backend: tuple[str, int] | None = None  # where port-forwarded streams go
    drop_after_bytes: int | None = None  # cut a stream after this many bytes from the backend...
    drops_left: int = 0  # ...this many times
    streams: int = 0
    token: str = "test-token"
    version: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_service(self, ns: str, name: str, port: int, target: int | str, selector: dict[str, str]) -> None:
        self.services[(ns, name)] = {"metadata": {"name": name, "namespace": ns},
                                     "spec": {"selector": selector,
                                              "ports": [{"name": "http", "port": port, "targetPort": target}]}}

    def add_pod(self, ns: str, name: str, labels: dict[str, str], ready: bool, port: int,
                port_name: str = "http") -> None:
        self.pods[(ns, name)] = {
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "litellm", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def _status(code: int, reason: str, message: str) -> tuple[int, dict]:
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                  "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else {}

    def _handle(self, verb: str) -> None:
        c = self.server.cluster
        if self.headers.get("Authorization") != f"Bearer {c.token}":
            return self._send(*_status(401, "Unauthorized", "Unauthorized"))
        url = urlsplit(self.path)
        m = re.match(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/portforward$", url.path)
        if m and self.headers.get("Upgrade", "").lower() == "websocket":
            return self._portforward(m.group(1), m.group(2), parse_qs(url.query))
        for pattern, resource in ((r"^/api/v1/namespaces/([^/]+)/secrets/([^/]+)$", "secrets"),
                                  (r"^/api/v1/namespaces/([^/]+)/services/([^/]+)$", "services"),
                                  (r"^/api/v1/namespaces/([^/]+)/pods$", "pods"),
                                  (r"^/apis/coordination.k8s.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?$",
                                   "leases")):
            m = re.match(pattern, url.path)
            if m:
                break
        else:
            return self._send(*_status(404, "NotFound", f"the server could not find {url.path}"))
        k8s_verb = {"GET": "list" if resource == "pods" else "get", "POST": "create", "PUT": "update",
                    "DELETE": "delete"}[verb]
        if (k8s_verb, resource) in c.forbidden:
            return self._send(*_status(403, "Forbidden", f'{resource} is forbidden: User "system:serviceaccount:'
                                       f'{m.group(1)}:reconciler" cannot {k8s_verb} resource "{resource}" in API '
                                       f'group "" in the namespace "{m.group(1)}"'))
        ns = m.group(1)
        with c.lock:
            if resource == "secrets":
                data = c.secrets.get((ns, m.group(2)))
                if data is None:
                    return self._send(*_status(404, "NotFound", f'secrets "{m.group(2)}" not found'))
                return self._send(200, {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": m.group(2)},
                                        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
            if resource == "services":
                svc = c.services.get((ns, m.group(2)))
                if svc is None:
                    return self._send(*_status(404, "NotFound", f'services "{m.group(2)}" not found'))
                return self._send(200, {"kind": "Service", "apiVersion": "v1", **svc})
            if resource == "pods":
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                want = dict(part.split("=", 1) for part in selector.split(",") if part)
                items = [p for (pns, _), p in c.pods.items()
                         if pns == ns and all(p["metadata"]["labels"].get(k) == v for k, v in want.items())]
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
            return self._lease(verb, ns, m.group(2))

    def _lease(self, verb: str, ns: str, name: str | None) -> None:
        c = self.server.cluster
        if verb == "POST":
            body = self._body()
            name = body["metadata"]["name"]
            if (ns, name) in c.leases:
                return self._send(*_status(409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already '
                                                                 "exists"))
            c.version += 1
            body["metadata"].update({"namespace": ns, "resourceVersion": str(c.version)})
            c.leases[(ns, name)] = body
            return self._send(201, body)
        lease = c.leases.get((ns, name))
        if lease is None:
            return self._send(*_status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found'))
        if verb == "GET":
            return self._send(200, lease)
        if verb == "PUT":
            body = self._body()
            if body["metadata"].get("resourceVersion") != lease["metadata"]["resourceVersion"]:
                return self._send(*_status(409, "Conflict", "Operation cannot be fulfilled on leases.coordination."
                                                            f'k8s.io "{name}": the object has been modified'))
            c.version += 1
            body["metadata"]["resourceVersion"] = str(c.version)
            c.leases[(ns, name)] = body
            return self._send(200, body)
        del c.leases[(ns, name)]
        return self._send(200, {"kind": "Status", "status": "Success"})

    # ------------------------------------------------------------ websocket port-forward

    def _portforward(self, ns: str, pod: str, query: dict[str, list[str]]) -> None:
        c = self.server.cluster
        if (ns, pod) not in c.pods or c.backend is None:
            return self._send(*_status(404, "NotFound", f'pods "{pod}" not found'))
        port = int(query["ports"][0])
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + _GUID).encode()).digest())
        protocol = self.headers.get("Sec-WebSocket-Protocol", "v4.channel.k8s.io").split(",")[0].strip()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept.decode()}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n")
                         .encode())
        self.wfile.flush()
        with c.lock:
            c.streams += 1
        sock = self.connection
        send_lock = threading.Lock()

        def send(payload: bytes, opcode: int = 2) -> None:
            header = bytes([0x80 | opcode])
            n = len(payload)
            header += bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n) if n < 65536 else \
                bytes([127]) + struct.pack(">Q", n)
            with send_lock:
                sock.sendall(header + payload)

        port_bytes = struct.pack("<H", port)
        send(b"\x00" + port_bytes)
        send(b"\x01" + port_bytes)
        backend = socket.create_connection(c.backend)
        done = threading.Event()

        with c.lock:
            drop = c.drop_after_bytes is not None and c.drops_left > 0
            c.drops_left -= 1 if drop else 0

        def pump_back() -> None:
            sent = 0
            try:
                while not done.is_set():
                    data = backend.recv(65536)
                    if not data:
                        break
                    if drop and sent + len(data) > c.drop_after_bytes:
                        send(b"\x00" + data[: max(0, c.drop_after_bytes - sent)])
                        sock.shutdown(socket.SHUT_RDWR)  # the stream dies mid-response
                        break
                    sent += len(data)
                    send(b"\x00" + data)
            except OSError:
                pass
            finally:
                done.set()
                try:
                    send(b"", opcode=8)
                except OSError:
                    pass

        threading.Thread(target=pump_back, daemon=True).start()
        try:
            while not done.is_set():
                frame = self._read_frame()
                if frame is None:
                    break
                opcode, payload = frame
                if opcode == 8:
                    break
                if opcode == 2 and payload[:1] == b"\x00" and len(payload) > 1:
                    backend.sendall(payload[1:])
        except OSError:
            pass
        finally:
            done.set()
            backend.close()
            self.close_connection = True

    def _read_frame(self) -> tuple[int, bytes] | None:
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack(">H", self.rfile.read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self.rfile.read(8))[0]
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\x00" * 4
        data = bytearray(self.rfile.read(length))
        for i in range(len(data)):
            data[i] ^= mask[i % 4]
        return opcode, bytes(data)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeApiServer:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.server = _Server(cluster)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, path: Path, context: str = "test") -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "loopback", "cluster": {"server": self.url}}],
            "users": [{"name": "reconciler", "user": {"token": self.cluster.token}}],
            "contexts": [{"name": context, "context": {"cluster": "loopback", "user": "reconciler"}}]}))
        return path

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
