"""The local cluster, checked and attacked for real (``ztml cluster up`` on this machine)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import ssl
import time
import tomllib
import uuid
from pathlib import Path

import pytest

from service.cluster import network, node
from service.cluster.layout import API_PORT, ETCD_CLIENT_PORT, NODE_NAME, node_ip
from service.toolchain.opa import OPA_VERSION
from tests.service.cluster.fixtures import Cluster, restricted_pod, ztml_cluster

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.cluster]


def _anonymous_get(port: int, path: str, ca: Path) -> int:
    """GET over TLS with the cluster's CA and no client certificate; return the status."""
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(node_ip(), port, timeout=10, context=context)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_node_is_ready(cluster: Cluster) -> None:
    proc = cluster.kubectl("get", "node", NODE_NAME, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    conditions = {c["type"]: c["status"] for c in json.loads(proc.stdout)["status"]["conditions"]}
    assert conditions["Ready"] == "True"


def test_kubectl_reports_the_pinned_server_version(cluster: Cluster) -> None:
    proc = cluster.kubectl("version", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["serverVersion"]["gitVersion"] == "v1.34.4"


def test_rbac_denies_a_service_account_what_it_was_not_granted(cluster: Cluster) -> None:
    who = "--as=system:serviceaccount:default:default"
    for verb, resource in (("create", "pods"), ("get", "secrets"), ("list", "nodes")):
        proc = cluster.kubectl("auth", "can-i", verb, resource, who)
        assert proc.stdout.strip() == "no", (verb, resource, proc.stdout, proc.stderr)
    assert cluster.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"


def test_an_anonymous_request_to_the_api_server_is_refused(cluster: Cluster) -> None:
    for path in ("/api/v1/namespaces", "/version", "/healthz"):
        assert _anonymous_get(API_PORT, path, cluster.layout.pki / "ca.crt") == 401, path


def test_an_anonymous_request_to_the_kubelet_is_refused(cluster: Cluster) -> None:
    for path in ("/pods", "/runningpods/", "/configz"):
        assert _anonymous_get(10250, path, cluster.layout.pki / "ca.crt") == 401, path


def test_the_kubelet_has_no_read_only_port(cluster: Cluster) -> None:
    conn = http.client.HTTPConnection(node_ip(), 10255, timeout=3)
    with pytest.raises(ConnectionRefusedError):
        conn.connect()


def test_a_restricted_pod_runs_with_its_security_context_in_force(cluster: Cluster) -> None:
    ns = cluster.namespace("restricted-check", {"pod-security.kubernetes.io/enforce": "restricted"})
    pod = restricted_pod("probe", cluster.images["toolbox"])
    assert cluster.apply({**pod, "metadata": {**pod["metadata"], "namespace": ns}}).returncode == 0
    cluster.wait_ready(ns, "probe")
    ids = cluster.exec(ns, "probe", "id")
    assert ids.stdout.split()[:2] == ["uid=10001", "gid=10001"], ids.stdout + ids.stderr
    status = cluster.exec(ns, "probe", "cat", "/proc/self/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"].strip(), 16) == 0
    assert int(fields["CapPrm"].strip(), 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # a filter is installed
    write = cluster.exec(ns, "probe", "touch", "/probe-was-here")
    assert write.returncode != 0
    assert "Read-only file system" in write.stdout + write.stderr
    token = cluster.exec(ns, "probe", "ls", "/var/run/secrets/kubernetes.io/serviceaccount")
    assert token.returncode != 0  # no service-account token is mounted


def test_a_pod_breaking_the_restricted_standard_is_refused_with_its_violations(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace("restricted-check", {"pod-security.kubernetes.io/enforce": "restricted"})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-on-host", "namespace": ns},
        "spec": {
            "hostNetwork": True,
            "hostPID": True,
            "containers": [
                {
                    "name": "main",
                    "image": cluster.images["toolbox"],
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "runAsUser": 0,
                        "capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"]},
                    },
                }
            ],
        },
    }
    proc = cluster.apply(pod)
    assert proc.returncode != 0
    message = proc.stderr
    assert 'violates PodSecurity "restricted:latest"' in message
    for violation in (
        "host namespaces (hostNetwork=true, hostPID=true)",
        'container "main" must not include "NET_ADMIN", "SYS_ADMIN"',
        "allowPrivilegeEscalation != false",
        "runAsNonRoot != true",
        "runAsUser=0",
        "seccompProfile",
    ):
        assert violation in message, (violation, message)
    assert cluster.kubectl("-n", ns, "get", "pod", "root-on-host").returncode != 0


def test_a_privileged_container_is_refused_in_every_namespace(cluster: Cluster) -> None:
    for ns in ("default", "kube-system"):
        pod = restricted_pod("privileged", cluster.images["toolbox"])
        pod["metadata"]["namespace"] = ns
        pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
        proc = cluster.apply(pod)
        assert proc.returncode != 0
        assert "privileged: Forbidden: disallowed by cluster policy" in proc.stderr, proc.stderr


def _policy(name: str, ns: str, spec: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def test_network_policy_is_enforced_and_dns_works_only_where_allowed(cluster: Cluster) -> None:
    ns = cluster.namespace("netpol-check", {"pod-security.kubernetes.io/enforce": "restricted"})
    image = cluster.images["toolbox"]
    server = restricted_pod(
        "server",
        image,
        labels={"app": "server"},
        command=[
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && httpd -f -p 8080 -h /tmp/www",
        ],
    )
    server["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {"medium": "Memory"}}]
    server["spec"]["containers"][0]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    allowed = restricted_pod("allowed", image, labels={"app": "client", "access": "server"})
    denied = restricted_pod("denied", image, labels={"app": "client"})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "server", "namespace": ns},
        "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    dns_egress = {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    policies = [
        _policy("default-deny", ns, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _policy(
            "server-ingress",
            ns,
            {
                "podSelector": {"matchLabels": {"app": "server"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"access": "server"}}}],
                        "ports": [{"port": 8080}],
                    }
                ],
            },
        ),
        _policy(
            "client-egress",
            ns,
            {
                "podSelector": {"matchLabels": {"access": "server"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"app": "server"}}}],
                        "ports": [{"port": 8080}],
                    },
                    dns_egress,
                ],
            },
        ),
    ]
    with_ns = [
        {**doc, "metadata": {**doc["metadata"], "namespace": ns}}
        for doc in (server, allowed, denied)
    ]
    proc = cluster.apply(*with_ns, service, *policies)
    assert proc.returncode == 0, proc.stderr
    cluster.wait_ready(ns, "server", "allowed", "denied")
    # Fetch by the ClusterIP with nc (Debian's static busybox wget crashes) and resolve
    # the name with nslookup (busybox's own DNS client) below.
    cluster_ip = cluster.kubectl(
        "-n", ns, "get", "service", "server", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    request = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 " + cluster_ip + " 80"

    def fetch(pod: str) -> tuple[int, str]:
        proc = cluster.exec(ns, pod, "sh", "-c", request)
        body = proc.stdout.split("\n\n", 1)[-1] if "200 OK" in proc.stdout else ""
        return (0 if body else 1), body

    deadline = time.monotonic() + 20  # kube-router applies new pods' rules within seconds
    while fetch("allowed") != (0, "hello\n") and time.monotonic() < deadline:
        time.sleep(1)
    assert fetch("allowed") == (0, "hello\n")
    assert fetch("denied")[0] != 0
    allowed_dns = cluster.exec(ns, "allowed", "nslookup", f"server.{ns}.svc.cluster.local")
    assert allowed_dns.returncode == 0, allowed_dns.stdout + allowed_dns.stderr
    assert cluster_ip in allowed_dns.stdout
    denied_dns = cluster.exec(
        ns, "denied", "timeout", "5", "nslookup", f"server.{ns}.svc.cluster.local"
    )
    assert denied_dns.returncode != 0
    # Without a policy the same client reaches the server: the denial was the policy's.
    assert cluster.kubectl("-n", ns, "delete", "networkpolicy", "--all").returncode == 0
    deadline = time.monotonic() + 20
    while fetch("denied")[0] != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert fetch("denied") == (0, "hello\n")


def test_a_secret_is_ciphertext_in_etcd(cluster: Cluster) -> None:
    name = f"etcd-check-{uuid.uuid4().hex[:8]}"
    plaintext = f"plaintext-{uuid.uuid4().hex}"
    proc = cluster.kubectl(
        "-n", "default", "create", "secret", "generic", name, f"--from-literal=value={plaintext}"
    )
    assert proc.returncode == 0, proc.stderr
    pki = cluster.layout.etcd_pki
    context = ssl.create_default_context(cafile=str(pki / "etcd-ca.crt"))
    context.load_cert_chain(
        str(pki / "apiserver-etcd-client.crt"), str(pki / "apiserver-etcd-client.key")
    )
    key = base64.b64encode(f"/registry/secrets/default/{name}".encode()).decode()
    conn = http.client.HTTPSConnection("127.0.0.1", ETCD_CLIENT_PORT, timeout=10, context=context)
    conn.request("POST", "/v3/kv/range", body=json.dumps({"key": key}))
    body = json.loads(conn.getresponse().read())
    conn.close()
    stored = base64.b64decode(body["kvs"][0]["value"])
    assert stored.startswith(b"k8s:enc:secretbox:v1:key1:")
    assert plaintext.encode() not in stored
    read_back = cluster.kubectl(
        "-n", "default", "get", "secret", name, "-o", "jsonpath={.data.value}"
    )
    assert base64.b64decode(read_back.stdout).decode() == plaintext


def test_the_api_server_writes_an_audit_log(cluster: Cluster) -> None:
    marker = f"audit-check-{uuid.uuid4().hex[:8]}"
    assert cluster.kubectl("create", "namespace", marker).returncode == 0
    deadline = time.monotonic() + 10
    while marker not in cluster.layout.audit_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    events = [
        json.loads(line)
        for line in cluster.layout.audit_log.read_text().splitlines()
        if marker in line
    ]
    assert any(e["verb"] == "create" and e["user"]["username"] == "ztml-admin" for e in events)


def test_pod_traffic_to_outside_addresses_is_dropped_before_routing(cluster: Cluster) -> None:
    assert network.guard_installed()
    rules = network.guard_rules()
    assert rules[-1] == "-A ZTML-EGRESS-GUARD -s 10.244.0.0/16 -j DROP"
    assert f"-A ZTML-EGRESS-GUARD -d {node_ip()}/32 -j RETURN" in rules
    cni = json.loads((cluster.layout.cni_conf / "10-ztml.conflist").read_text())
    assert cni["plugins"][0]["ipMasq"] is False


def _locked_version(package: str) -> str:
    lock = tomllib.loads(Path("uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


def test_the_opa_image_runs_the_pinned_opa(cluster: Cluster, stack_images: dict[str, str]) -> None:
    ns = cluster.namespace("images-check", {"pod-security.kubernetes.io/enforce": "restricted"})
    log = cluster.run_to_completion(
        ns, restricted_pod("opa-version", stack_images["opa"], command=["/opa", "version"])
    )
    assert f"Version: {OPA_VERSION}" in log.splitlines()


def test_the_postgresql_image_serves_as_its_numeric_user(
    cluster: Cluster, stack_images: dict[str, str]
) -> None:
    ns = cluster.namespace("images-check", {"pod-security.kubernetes.io/enforce": "restricted"})
    script = (
        "initdb -D /tmp/pg/data -U ztml --auth=trust >/dev/null && "
        "pg_ctl -D /tmp/pg/data -o \"-k /tmp/pg -c listen_addresses=''\" -w start >/dev/null && "
        "psql -h /tmp/pg -U ztml -d postgres -tAc 'select current_user, 6 * 7'"
    )
    pod = restricted_pod("postgres-check", stack_images["postgres"], command=["sh", "-c", script])
    pod["spec"]["securityContext"]["runAsUser"] = 10002
    pod["spec"]["securityContext"]["runAsGroup"] = 10002
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "256Mi"
    pod["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {"medium": "Memory"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    log = cluster.run_to_completion(ns, pod)
    assert log.strip().splitlines()[-1] == "ztml|42"


def test_the_model_service_image_holds_the_locked_environment(
    cluster: Cluster, stack_images: dict[str, str]
) -> None:
    ns = cluster.namespace("images-check", {"pod-security.kubernetes.io/enforce": "restricted"})
    check = (
        "import importlib.metadata as m, json, os, subprocess, service; "
        "from service.toolchain.paths import POLICIES_DIR; "
        "opa = subprocess.run(['opa', 'version'], capture_output=True, text=True).stdout; "
        "print(json.dumps({'uid': os.getuid(), 'torch': m.version('torch'), "
        "'bentoml': m.version('bentoml'), 'opa': opa.splitlines()[0], "
        "'provenance': sorted(p.name for p in (POLICIES_DIR / 'provenance').iterdir())}))"
    )
    pod = restricted_pod(
        "service-check", stack_images["model-service"], command=["python", "-c", check]
    )
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "512Mi"
    found = json.loads(cluster.run_to_completion(ns, pod).strip().splitlines()[-1])
    assert found["uid"] == 10001
    assert (found["torch"], found["bentoml"]) == (
        _locked_version("torch"),
        _locked_version("bentoml"),
    )
    # The deploy gate runs in the pod: the pinned OPA and the policies, without tests.
    assert found["opa"] == f"Version: {OPA_VERSION}"
    assert "provenance.rego" in found["provenance"]
    assert not [name for name in found["provenance"] if name.endswith("_test.rego")]


def test_up_after_a_crash_restarts_what_died_and_keeps_the_cluster(cluster: Cluster) -> None:
    marker = f"survives-{uuid.uuid4().hex[:8]}"
    assert cluster.kubectl("create", "namespace", marker).returncode == 0
    recorded = node.image_references(cluster.layout)
    for name in ("kube-scheduler", "kube-proxy"):
        pid = int((cluster.layout.run / f"{name}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
    status = ztml_cluster("status", timeout=60)
    assert status.returncode != 0
    assert "kube-scheduler" in status.stdout and "stopped" in status.stdout
    proc = ztml_cluster("up", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cluster started" in proc.stdout
    assert ztml_cluster("status", timeout=60).returncode == 0
    assert cluster.kubectl("get", "namespace", marker).returncode == 0  # etcd's data kept
    # containerd kept every image, and the record of them is kept too.
    assert node.image_references(cluster.layout) == recorded


def test_a_second_up_while_running_is_a_no_op(cluster: Cluster) -> None:
    before = (cluster.layout.run / "kube-apiserver.pid").read_text()
    proc = ztml_cluster("up", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "already running" in proc.stdout
    assert (cluster.layout.run / "kube-apiserver.pid").read_text() == before


@pytest.mark.cluster_lifecycle
def test_down_leaves_nothing_and_up_gives_a_clean_cluster(cluster: Cluster) -> None:
    marker = f"left-behind-{uuid.uuid4().hex[:8]}"
    assert cluster.kubectl("create", "namespace", marker).returncode == 0
    pids = [int(p.read_text()) for p in cluster.layout.run.glob("*.pid")]
    assert len(pids) == len(node.components(cluster.layout, node_ip()))
    down = ztml_cluster("down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert network.leftovers() == []
    assert not cluster.layout.root.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), pid
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(cluster.layout.root) not in mounts
    up = ztml_cluster("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "cluster started" in up.stdout
    assert cluster.kubectl("get", "namespace", marker).returncode != 0
