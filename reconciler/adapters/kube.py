"""Kubernetes, through the official client: the master key from a Secret, the proxy through a Service (a
port-forward the tool keeps alive, or the Service's cluster DNS name inside a pod), and a Lease as the apply lock.

The client is imported only when a roster asks for Kubernetes (`pip install litellm-roster[kubernetes]`).
Config loading is explicit: in-cluster in a pod, else kubeconfig with an optional context. Never
config.load_config(), which prints to stdout and would corrupt JSON output.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import time
from typing import Any, Callable

from ..core.roster import KubeSettings
from ..errors import KubeError, LockError

log = logging.getLogger(__name__)


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def api_client(context: str | None) -> Any:
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise KubeError("the roster uses Kubernetes, but its client is not installed: "
                        "pip install 'litellm-roster[kubernetes]'") from None
    configuration = client.Configuration()
    try:
        if in_cluster():
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(context=context, client_configuration=configuration)
    except ConfigException as exc:
        text = str(exc)
        if "context" in text.lower() and context:
            raise KubeError(f"kubeconfig has no context {context!r} ({text}); "
                            "see kubectl config get-contexts") from None
        raise KubeError(f"no usable kubeconfig ({text}); set KUBECONFIG or create ~/.kube/config") from None
    except OSError as exc:
        raise KubeError(f"cannot read the kubeconfig: {exc.strerror}") from None
    return client.ApiClient(configuration)


def _call(what: str, verb: str, resource: str, namespace: str, fn: Callable[[], Any]) -> Any:
    """Run one API call, turning the client's exceptions into messages that name the verb, resource and fix."""
    from kubernetes.client.exceptions import ApiException

    try:
        return fn()
    except ApiException as exc:
        if exc.status == 403:
            message = (f"forbidden: may not {verb} {resource} in namespace {namespace} ({what}); grant it in the "
                       "Role (see deploy/operator/rbac.yaml)")
        elif exc.status == 401:
            message = (f"the Kubernetes API refused the credentials ({what}); check the kubeconfig user or the "
                       "service account token")
        elif exc.status == 404:
            message = f"{what}: not found in namespace {namespace}"
        else:
            message = f"{what}: Kubernetes API answered {exc.status} {exc.reason}"
        raise KubeError(message, exc.status) from None
    except OSError as exc:
        raise KubeError(f"{what}: cannot reach the Kubernetes API server ({type(exc).__name__})") from None
    except Exception as exc:  # urllib3's MaxRetryError and friends: the API server is not there
        if type(exc).__module__.startswith("urllib3"):
            raise KubeError(f"{what}: cannot reach the Kubernetes API server ({type(exc).__name__})") from None
        raise


def read_secret(api: Any, namespace: str, name: str, key: str) -> str:
    from kubernetes import client

    secret = _call(f"Secret {name}", "get", "secrets", namespace,
                   lambda: client.CoreV1Api(api).read_namespaced_secret(name, namespace))
    data = secret.data or {}
    if key not in data:
        # Not listing the keys it does have: the roster names the key, and a pull request must not learn a Secret's
        # layout from the error.
        raise KubeError(f"Secret {namespace}/{name} has no key {key!r}; check proxy.kubernetes.secret_key")
    return base64.b64decode(data[key]).decode("utf-8").strip()


def resolve_service(api: Any, namespace: str, service: str, port: int | str | None) -> tuple[str, int, int]:
    """(ready pod, its target port, the service port) behind a Service; named target ports are looked up."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    svc = _call(f"Service {service}", "get", "services", namespace,
                lambda: core.read_namespaced_service(service, namespace))
    ports = svc.spec.ports or []
    chosen = next((p for p in ports if port is None or p.port == port or p.name == port), None)
    if chosen is None:
        raise KubeError(f"Service {namespace}/{service} has no port {port}; it has: "
                        f"{', '.join(f'{p.name}:{p.port}' for p in ports)}")
    selector = ",".join(f"{k}={v}" for k, v in sorted((svc.spec.selector or {}).items()))
    pods = _call(f"pods of Service {service}", "list", "pods", namespace,
                 lambda: core.list_namespaced_pod(namespace, label_selector=selector)).items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
    if not ready:
        raise KubeError(f"Service {namespace}/{service} has no ready pod ({len(pods)} pod(s) match {selector!r}); "
                        "is the proxy running?")
    pod = sorted(ready, key=lambda p: p.metadata.name)[0]
    target = chosen.target_port if chosen.target_port is not None else chosen.port
    if isinstance(target, str) and not target.isdigit():
        named = [cp.container_port for c in pod.spec.containers for cp in (c.ports or []) if cp.name == target]
        if not named:
            raise KubeError(f"pod {pod.metadata.name} has no container port named {target!r}")
        target = named[0]
    return pod.metadata.name, int(target), int(chosen.port)


class PortForward:
    """A local TCP listener whose every connection becomes a fresh port-forward stream to a ready pod.

    A stream that drops fails only the request on it; the next connection (httpx's retry) opens a new stream,
    re-resolving the pod if the old one is gone, with backoff between attempts.
    """

    ATTEMPTS = 4

    def __init__(self, api: Any, namespace: str, service: str, port: int | str | None):
        from kubernetes import client

        self.api, self.namespace, self.service, self.port = api, namespace, service, port
        self.pod, self.target, _ = resolve_service(api, namespace, service, port)
        # kubernetes.stream swaps its ApiClient's request method while it opens a stream: streams get a client of
        # their own (the Lease and Secret calls keep theirs), opened one at a time (the plan asks concurrently).
        self._streams_api = client.CoreV1Api(client.ApiClient(api.configuration))
        self._opening = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self._closed = threading.Event()
        self.streams = 0
        threading.Thread(target=self._accept, daemon=True, name="port-forward").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _open_stream(self) -> Any:
        from kubernetes.stream import portforward

        for attempt in range(self.ATTEMPTS):
            try:
                with self._opening:
                    forward = portforward(self._streams_api.connect_get_namespaced_pod_portforward, self.pod,
                                          self.namespace, ports=str(self.target))
                self.streams += 1
                return forward
            except Exception as exc:  # the pod went away, or the API server dropped us: find a pod again
                log.debug("port-forward to %s failed (%s); retrying", self.pod, type(exc).__name__)
                time.sleep(min(2.0, 0.2 * 2 ** attempt))
                try:
                    self.pod, self.target, _ = resolve_service(self.api, self.namespace, self.service, self.port)
                except KubeError:
                    continue
        raise KubeError(f"cannot open a port-forward to Service {self.namespace}/{self.service}")

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                local, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._bridge, args=(local,), daemon=True).start()

    def _bridge(self, local: socket.socket) -> None:
        try:
            forward = self._open_stream()
        except KubeError as exc:
            log.error("%s", exc)
            local.close()
            return
        remote = forward.socket(self.target)
        remote.setblocking(True)

        def pump(src: Any, dst: Any) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pump, args=(remote, local), daemon=True)
        back.start()
        pump(local, remote)
        back.join(timeout=5)
        local.close()
        forward.close()

    def close(self) -> None:
        self._closed.set()
        self.listener.close()


def proxy_url(api: Any, settings: KubeSettings) -> tuple[str, str, PortForward | None]:
    """(where to connect, the proxy's stable name, the port-forward if one was opened).

    Inside a pod both are the Service's cluster DNS name. Outside, the connection goes through a port-forward on a
    new local port each run, so key files and reports carry the cluster DNS name instead."""
    assert settings.service
    _, _, port = resolve_service(api, settings.namespace, settings.service, settings.port)
    stable = f"http://{settings.service}.{settings.namespace}.svc:{port}"
    if in_cluster():
        return stable, stable, None
    forward = PortForward(api, settings.namespace, settings.service, settings.port)
    return forward.url, stable, forward


class LeaseLock:
    """The apply lock as a coordination.k8s.io Lease: create answers 409 when it is taken, and a replace carrying a
    stale resourceVersion answers 409 when someone else got there first. Same interface as lock.FileLock."""

    TTL = 120

    def __init__(self, api: Any, namespace: str, name: str, holder: str):
        from kubernetes import client

        self.api, self.namespace, self.name = api, namespace, name
        self.coordination = client.CoordinationV1Api(api)
        self.id = os.urandom(6).hex()
        self.holder = holder
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.held = False

    def _body(self, resource_version: str | None = None) -> Any:
        from kubernetes import client

        now = _micro_now()
        return client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, resource_version=resource_version),
                              spec=client.V1LeaseSpec(holder_identity=f"{self.id} {self.holder}",
                                                      lease_duration_seconds=self.TTL, acquire_time=now,
                                                      renew_time=now))

    def _try(self) -> Any | None:
        """None when taken by us; else the current Lease of whoever holds it."""
        from kubernetes.client.exceptions import ApiException

        try:
            _call("Lease", "create", "leases", self.namespace,
                  lambda: self.coordination.create_namespaced_lease(self.namespace, self._body()))
            return None
        except KubeError as exc:
            if exc.status != 409:  # only "already exists" means someone holds it; forbidden and the rest are errors
                raise
        current = _call(f"Lease {self.name}", "get", "leases", self.namespace,
                        lambda: self.coordination.read_namespaced_lease(self.name, self.namespace))
        spec = current.spec
        renewed = spec.renew_time or spec.acquire_time
        if renewed is not None and renewed.timestamp() + (spec.lease_duration_seconds or self.TTL) > time.time():
            return current
        try:  # expired: take it over, unless someone else just did (then the resourceVersion is stale: 409)
            self.coordination.replace_namespaced_lease(self.name, self.namespace,
                                                       self._body(current.metadata.resource_version))
            return None
        except ApiException as exc:
            if exc.status == 409:
                return current
            raise

    def acquire(self, timeout: float = 0.0) -> None:

        deadline = time.monotonic() + timeout
        while (current := self._try()) is not None:
            if time.monotonic() >= deadline:
                lock_id, _, holder = (current.spec.holder_identity or "? unknown").partition(" ")
                raise LockError(f"another apply holds the lock for this proxy: {holder}, lock {lock_id} (Lease "
                                f"{self.namespace}/{self.name}). Wait (--lock-timeout SECONDS), or if that run is "
                                f"dead: reconcile force-unlock {lock_id}")
            time.sleep(1.0)
        self.held = True
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="lease-renewer")
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.TTL / 3):
            try:
                current = self.coordination.read_namespaced_lease(self.name, self.namespace)
                if not (current.spec.holder_identity or "").startswith(self.id):
                    return
                self.coordination.replace_namespaced_lease(self.name, self.namespace,
                                                           self._body(current.metadata.resource_version))
            except Exception as exc:  # a missed renewal is retried at the next tick; the TTL leaves room for two
                log.warning("could not renew the Lease (%s)", type(exc).__name__)

    def release(self) -> None:
        self._stop.set()
        if not self.held:
            return
        self.held = False
        try:
            current = self.coordination.read_namespaced_lease(self.name, self.namespace)
            if (current.spec.holder_identity or "").startswith(self.id):
                self.coordination.delete_namespaced_lease(self.name, self.namespace)
        except Exception as exc:
            log.warning("could not release the Lease (%s); it expires by itself", type(exc).__name__)

    def force_unlock(self, lock_id: str) -> Any:
        from .lock import LockRecord

        current = _call(f"Lease {self.name}", "get", "leases", self.namespace,
                        lambda: self.coordination.read_namespaced_lease(self.name, self.namespace))
        found, _, holder = (current.spec.holder_identity or "").partition(" ")
        if found != lock_id:
            raise LockError(f"the lock is {found} (held by {holder}), not {lock_id}; nothing removed")
        _call(f"Lease {self.name}", "delete", "leases", self.namespace,
              lambda: self.coordination.delete_namespaced_lease(self.name, self.namespace))
        return LockRecord(found, holder, 0, 0)


def _micro_now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
