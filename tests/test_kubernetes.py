"""Kubernetes against a loopback API server that serves the routes the tool uses (tests/k8s_fake.py): the master key
from a Secret, the proxy through a Service by port-forward (including streams that drop), the Lease lock, and the
errors a user meets."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import yaml
from helpers import MASTER, Workspace, managed_keys
from k8s_fake import Cluster, FakeApiServer

NS, SECRET, KEY = "ai", "urbalurba-secrets", "LITELLM_PROXY_MASTER_KEY"


@pytest.fixture
def cluster(sandbox):
    c = Cluster()
    c.secrets[(NS, SECRET)] = {KEY: MASTER, "OTHER": "x"}
    c.add_service(NS, "litellm", 4000, "http", {"app": "litellm"})
    c.add_pod(NS, "litellm-0", {"app": "litellm"}, ready=True, port=4000)
    address = urlsplit(sandbox.url)
    c.backend = (address.hostname, address.port)
    server = FakeApiServer(c)
    yield c, server
    server.stop()


def kube_roster(ws: Workspace, *, url: bool, service: bool = True, secret: dict | None = None, **kube) -> None:
    ws.write_roster([{"name": "jane"}, {"name": "john"}])
    doc = yaml.safe_load(ws.roster.read_text())
    if not url:
        del doc["proxy"]["url"]
    doc["proxy"]["kubernetes"] = {"namespace": NS, **({"service": "litellm", "port": 4000} if service else {}),
                                  "master_key_secret": secret or {"name": SECRET, "key": KEY}, **kube}
    ws.roster.write_text(yaml.safe_dump(doc, sort_keys=False))


def env(ws: Workspace, server: FakeApiServer, tmp_path, **extra) -> dict[str, str]:
    e = ws.env(KUBECONFIG=str(server.kubeconfig(tmp_path / "kubeconfig")), LITELLM_PROXY_KUBE=f"{NS}/litellm",
               **extra)
    del e["LITELLM_MASTER_KEY"]  # it must come from the Secret
    if "url:" not in ws.roster.read_text():
        del e["LITELLM_PROXY_URL"]  # the operator confirms the roster's Service instead
    return e


def test_master_key_from_a_secret(workspace, sandbox, cluster, tmp_path):
    c, server = cluster
    kube_roster(workspace, url=True, service=False)
    result = workspace.run("apply", env=env(workspace, server, tmp_path))
    assert result.rc == 0, result.stdout + result.stderr
    assert len(managed_keys(sandbox)) == 2 and c.streams == 0  # reached directly by URL


def test_proxy_through_a_service_port_forward(workspace, sandbox, cluster, tmp_path):
    c, server = cluster
    kube_roster(workspace, url=False)
    e = env(workspace, server, tmp_path)
    plan = workspace.run("plan", env=e)
    assert plan.rc == 0, plan.stderr
    assert "Plan for roster.yaml against http://litellm.ai.svc:4000:" in plan.stdout and "2 to create" in plan.stdout
    assert c.streams >= 1  # every request went through the port-forward
    result = workspace.run("apply", env=e)
    assert result.rc == 0, result.stdout + result.stderr
    assert len(managed_keys(sandbox)) == 2
    assert workspace.key_file("jane")["proxy_url"] == "http://litellm.ai.svc:4000"  # not the local forward
    assert workspace.run("plan", "--detailed-exitcode", env=e).rc == 0


def test_port_forward_that_drops_mid_run(workspace, sandbox, cluster, tmp_path):
    c, server = cluster
    kube_roster(workspace, url=False)
    c.drop_after_bytes, c.drops_left = 50, 3  # three streams die mid-response
    result = workspace.run("apply", env=env(workspace, server, tmp_path))
    assert result.rc == 0, result.stdout + result.stderr
    assert c.drops_left <= 0
    ws_env = env(workspace, server, tmp_path)
    assert workspace.run("plan", "--detailed-exitcode", env=ws_env).rc == 0
    assert len(managed_keys(sandbox)) == 2 and len(sandbox.store.plaintexts) == 2  # nothing created twice


def test_lease_lock_names_its_holder_and_can_be_forced(workspace, sandbox, cluster, tmp_path):
    from datetime import datetime, timezone

    c, server = cluster
    kube_roster(workspace, url=False)
    e = env(workspace, server, tmp_path)
    assert workspace.run("apply", env=e).rc == 0
    assert c.leases == {}  # released after the run
    now = datetime.now(timezone.utc).isoformat()
    name = "litellm-roster-" + __import__("hashlib").sha256(f"{NS}/litellm".encode()).hexdigest()[:12]
    c.leases[(NS, name)] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": name, "namespace": NS, "resourceVersion": "7"},
                            "spec": {"holderIdentity": "abc123 ci@runner-3 pid 99", "leaseDurationSeconds": 120,
                                     "acquireTime": now, "renewTime": now}}
    blocked = workspace.run("apply", env=e)
    assert blocked.rc == 1 and "ci@runner-3 pid 99, lock abc123 (Lease ai/" in blocked.stderr
    assert workspace.run("force-unlock", "abc123", env=e).rc == 0
    assert (NS, name) not in c.leases
    # An expired Lease is taken over.
    c.leases[(NS, name)] = {**c.leases.get((NS, name), {}), "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": name, "namespace": NS, "resourceVersion": "9"},
                            "spec": {"holderIdentity": "dead01 gone", "leaseDurationSeconds": 1,
                                     "renewTime": "2020-01-01T00:00:00+00:00"}}
    assert workspace.run("apply", env=e).rc == 0


def test_stale_resource_version_conflicts(cluster, tmp_path):
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    c, server = cluster
    cfg = client.Configuration()
    config.load_kube_config(str(server.kubeconfig(tmp_path / "kc")), client_configuration=cfg)
    api = client.CoordinationV1Api(client.ApiClient(cfg))
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="l"), spec=client.V1LeaseSpec(holder_identity="a"))
    created = api.create_namespaced_lease(NS, lease)
    with pytest.raises(ApiException) as taken:
        api.create_namespaced_lease(NS, lease)
    assert taken.value.status == 409
    api.replace_namespaced_lease("l", NS, created)  # current resourceVersion: accepted
    with pytest.raises(ApiException) as stale:
        api.replace_namespaced_lease("l", NS, created)  # now stale
    assert stale.value.status == 409


@pytest.mark.parametrize("case, expected", [
    ("no kubeconfig", "error: no usable kubeconfig"),
    ("wrong context", "error: kubeconfig has no context 'staging'"),
    ("forbidden", "error: forbidden: may not get secrets in namespace ai (Secret urbalurba-secrets); grant it in "
                  "the Role (see deploy/operator/rbac.yaml)"),
    ("missing secret", "error: Secret missing-secret: not found in namespace ai"),
    ("missing key", "error: Secret ai/urbalurba-secrets has no key 'NOPE'; check proxy.kubernetes.secret_key"),
    ("no ready pod", "error: Service ai/litellm has no ready pod (1 pod(s) match 'app=litellm'); is the proxy "
                     "running?"),
])
def test_clear_errors(workspace, sandbox, cluster, tmp_path, case, expected):
    c, server = cluster
    secret = {"name": "missing-secret", "key": KEY} if case == "missing secret" else \
        {"name": SECRET, "key": "NOPE"} if case == "missing key" else None
    kube_roster(workspace, url=False, secret=secret, **({"context": "staging"} if case == "wrong context" else {}))
    e = env(workspace, server, tmp_path)
    if case == "no kubeconfig":
        e["KUBECONFIG"] = str(tmp_path / "nothing-here")
    if case == "forbidden":
        c.forbidden.add(("get", "secrets"))
    if case == "no ready pod":
        c.add_pod(NS, "litellm-0", {"app": "litellm"}, ready=False, port=4000)
    result = workspace.run("plan", env=e)
    assert result.rc == 1
    assert result.stderr.startswith(expected), result.stderr
    assert sum(sandbox.counts.values()) == 0


def test_the_operator_role_grants_exactly_what_the_tool_uses_by_name_where_it_can():
    from pathlib import Path

    role = yaml.safe_load((Path(__file__).parent.parent / "deploy" / "operator" / "rbac.yaml").read_text())
    granted = {(g, r, v, tuple(rule.get("resourceNames", ()))) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("", "secrets", "get", ("litellm-master-key",)), ("", "services", "get", ("litellm",)),
                       ("", "pods", "list", ()), ("", "pods/portforward", "create", ()),
                       ("coordination.k8s.io", "leases", "create", ()),
                       *{("coordination.k8s.io", "leases", v, ("litellm-roster-LEASE",))
                         for v in ("get", "update", "delete")}}


def test_lease_create_forbidden_is_named_not_mistaken_for_a_held_lock(workspace, sandbox, cluster, tmp_path):
    c, server = cluster
    kube_roster(workspace, url=False)
    c.forbidden.add(("create", "leases"))
    result = workspace.run("apply", env=env(workspace, server, tmp_path))
    assert result.rc == 1
    assert result.stderr.startswith("error: forbidden: may not create leases in namespace ai (Lease); grant it")
    assert managed_keys(sandbox) == []
