"""The stack that ``pulumi up`` deployed onto the local cluster, checked and attacked.

The real engine deployed it (:mod:`tests.system.cluster_stack`); the clients are pods on
the cluster's network (:mod:`tests.system.cluster_clients`).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from service.cluster.layout import API_SERVICE_IP
from tests.service.app.harness import b64url
from tests.service.cluster.fixtures import Cluster
from tests.system.cluster_clients import (
    CONNECTOR,
    SERVICE_URL,
    audit_events,
    client_pod,
    copy_audit_log,
    deployment,
    extraction_plan,
    pod_ip,
    predict,
    python_in,
    send,
    ztml_audit_verify,
)
from tests.system.cluster_stack import NAMESPACE, WORKLOAD, ClusterStack, engine_changes

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def client(cluster_stack: ClusterStack) -> str:
    """A pod labelled as an allowed client."""
    return client_pod(cluster_stack, "ztml-test-client", labelled=True)


@pytest.fixture(scope="module")
def stranger(cluster_stack: ClusterStack) -> str:
    """A pod of the same namespace without the client label."""
    return client_pod(cluster_stack, "ztml-test-stranger", labelled=False)


def test_up_creates_every_resource_and_the_model_deployment_becomes_available(
    cluster_stack: ClusterStack,
) -> None:
    workload = deployment(cluster_stack.cluster)
    wanted = workload["spec"]["replicas"]
    assert workload["status"].get("availableReplicas") == wanted, workload["status"]
    assert len(cluster_stack.model_pods()) == wanted
    listed = cluster_stack.cluster.kubectl(
        "-n", NAMESPACE, "get", "all,pvc,secrets,configmaps,networkpolicies", "-o", "json"
    )
    annotations = [
        item["metadata"].get("annotations") or {} for item in json.loads(listed.stdout)["items"]
    ]
    assert not any("pulumi.com/skipAwait" in a for a in annotations)
    claims = cluster_stack.cluster.kubectl("-n", NAMESPACE, "get", "pvc", "-o", "json")
    phases = {
        c["metadata"]["name"]: c["status"]["phase"] for c in json.loads(claims.stdout)["items"]
    }
    assert phases and set(phases.values()) == {"Bound"}, phases


def test_a_second_up_changes_nothing_and_preview_shows_no_diff(
    cluster_stack: ClusterStack,
) -> None:
    preview = cluster_stack.engine("preview")
    assert preview.returncode == 0, preview.stderr[-3000:]
    assert set(engine_changes(preview)) == {"same"}, engine_changes(preview)
    again = cluster_stack.engine("up")
    assert again.returncode == 0, again.stderr[-3000:]
    assert set(engine_changes(again)) == {"same"}, engine_changes(again)


def test_a_labelled_client_gets_200_from_predict_through_the_service_dns_name(
    cluster_stack: ClusterStack, client: str
) -> None:
    (answer,) = send(cluster_stack, client, [predict(cluster_stack.token("cluster-client"))])
    assert answer["status"] == 200, answer
    assert "predictions" in json.loads(answer["body"])


def test_the_service_port_speaks_tls_to_clients_that_trust_the_stacks_ca_only(
    cluster_stack: ClusterStack, client: str
) -> None:
    request = predict(cluster_stack.token("tls-client"))
    plan = [
        request,
        {**request, "ca": None},  # the system's CAs only
        {**request, "url": request["url"].replace("https://", "http://")},
    ]
    verified, unknown_ca, plain = send(cluster_stack, client, plan)
    assert verified["status"] == 200, verified
    assert unknown_ca == {"status": 0, "body": "SSLCertVerificationError"}, unknown_ca
    assert plain["status"] in (0, 400), plain
    # The plain-HTTP attempt is refused below HTTP and still audited (status 497).
    refused = [
        e
        for pod in cluster_stack.model_pods()
        for e in audit_events(cluster_stack.cluster, pod)
        if e.get("action") == "tls_handshake" and e.get("status") == 497
    ]
    assert refused, "the plain-HTTP attempt was not audited"


def test_a_pod_without_the_client_label_cannot_connect(
    cluster_stack: ClusterStack, stranger: str
) -> None:
    plan = [{**predict(cluster_stack.token("stranger")), "timeout": 5}]
    (answer,) = send(cluster_stack, stranger, plan)
    assert answer["status"] == 0, f"the NetworkPolicy let a stranger through: {answer}"


def test_nothing_outside_the_model_pod_reaches_opa(
    cluster_stack: ClusterStack, client: str
) -> None:
    address = pod_ip(cluster_stack.cluster, cluster_stack.model_pods()[0])
    tried = [[address, 8181], [address, 8282], [address, 3000]]
    outcome = python_in(cluster_stack.cluster, client, CONNECTOR, tried)
    # OPA's API is a Unix socket (no port at all); its diagnostic port admits no pod;
    # the service port is open to this client, which shows the probe itself works.
    assert outcome[0] != "connected" and outcome[1] != "connected", outcome
    assert outcome[2] == "connected", outcome


def test_the_model_pod_reaches_only_dns(
    cluster_stack: ClusterStack, client: str, stranger: str
) -> None:
    cluster = cluster_stack.cluster
    pod = cluster_stack.model_pods()[0]
    tried = [
        [API_SERVICE_IP, 443],
        [pod_ip(cluster, client), 3000],
        [pod_ip(cluster, stranger), 3000],
        [f"{WORKLOAD}.{NAMESPACE}.svc.cluster.local", 3000],
    ]
    outcome = python_in(cluster, pod, CONNECTOR, tried, container="model")
    assert all(o != "connected" for o in outcome), outcome
    # DNS works: the name resolved (the connection then timed out, it was not a lookup error).
    assert outcome[3] in ("TimeoutError", "ConnectionRefusedError"), outcome


def test_the_opa_socket_is_open_to_the_service_user_only(cluster_stack: ClusterStack) -> None:
    pod = cluster_stack.model_pods()[0]
    proc = cluster_stack.cluster.exec(
        NAMESPACE,
        pod,
        "python",
        "-c",
        "import os, stat; s = os.stat('/run/ztml-opa/opa.sock'); "
        "print(stat.S_ISSOCK(s.st_mode), oct(s.st_mode & 0o777), s.st_uid, os.getuid())",
    )
    assert proc.returncode == 0, proc.stderr
    is_socket, mode, owner, me = proc.stdout.split()
    assert is_socket == "True" and mode == "0o600" and owner == me


def _forged(stack: ClusterStack, *, alg: str) -> str:
    good = stack.token("forger")
    header, claims, _ = good.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    if alg == "none":
        forged_header = b64url(json.dumps({**decoded, "alg": "none"}).encode())
        return f"{forged_header}.{claims}."
    signature = b64url(b"\x01" * 64)
    return f"{header}.{claims}.{signature}"


def test_attacks_on_the_cluster_service_get_the_documented_answers(
    cluster_stack: ClusterStack, client: str
) -> None:
    stack = cluster_stack
    expired = stack.token("late", now=time.time() - 3600, ttl_seconds=60)
    metadata = {
        "url": f"{SERVICE_URL}/metadata",
        "headers": {"Authorization": f"Bearer {stack.token('rapid', roles=('viewer',))}"},
    }
    malformed = {
        **predict(stack.token("mal")),
        "body": '{"instances": [[0.1, 0.2',
    }
    plan = [
        predict(None),
        predict(expired),
        predict(_forged(stack, alg="EdDSA")),
        predict(_forged(stack, alg="none")),
        predict(stack.token("eve", tenant="acme")),
        malformed,
        *[metadata] * 40,
    ]
    answers = send(stack, client, plan)
    statuses = [a["status"] for a in answers]
    assert statuses[:6] == [401, 401, 401, 401, 403, 422], answers[:6]
    for answer in answers[:6]:
        assert set(json.loads(answer["body"])) == {"error"}, answer
    assert 429 in statuses[6:], statuses


def test_an_extraction_style_sequence_is_flagged_and_refused(
    cluster_stack: ClusterStack, client: str
) -> None:
    plan = extraction_plan(cluster_stack, "cluster-extractor", seed=11, start=40)
    statuses = [a["status"] for a in send(cluster_stack, client, plan)]
    assert statuses[0] == 200, statuses
    first = next((i for i, s in enumerate(statuses) if s == 403), None)
    assert first is not None, f"the sequence was never refused: {statuses}"
    assert all(s == 403 for s in statuses[first:]), statuses


def _ctr(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", f"--address={cluster.layout.containerd_socket}", "-n", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _container_state(cluster: Cluster, pod: str) -> dict[str, dict[str, Any]]:
    proc = cluster.kubectl("-n", NAMESPACE, "get", "pod", pod, "-o", "json")
    statuses = json.loads(proc.stdout)["status"]["containerStatuses"]
    return {s["name"]: s for s in statuses}


@pytest.mark.disruptive
def test_opa_killed_gives_503_for_every_request_and_recovers_without_a_pod_restart(
    cluster_stack: ClusterStack, client: str
) -> None:
    cluster = cluster_stack.cluster
    pod = cluster_stack.model_pods()[0]
    cluster.wait_ready(NAMESPACE, pod)
    before = _container_state(cluster, pod)
    opa_id = before["opa"]["containerID"].removeprefix("containerd://")
    token = cluster_stack.token("during-outage", roles=("analyst",))
    (first,) = send(cluster_stack, client, [predict(token)])
    assert first["status"] == 200, first
    # Freeze OPA, so the outage lasts while the requests are sent, then kill it.
    assert _ctr(cluster, "task", "pause", opa_id).returncode == 0
    try:
        outage = send(cluster_stack, client, [predict(token)] * 10)
    finally:
        _ctr(cluster, "task", "kill", "--signal", "SIGKILL", opa_id)
        _ctr(cluster, "task", "resume", opa_id)
    assert [a["status"] for a in outage] == [503] * 10, outage
    assert all(json.loads(a["body"])["error"]["code"] for a in outage)
    deadline = time.monotonic() + 120
    recovered = False
    while time.monotonic() < deadline and not recovered:
        (answer,) = send(cluster_stack, client, [predict(token)])
        recovered = answer["status"] == 200
        if not recovered:
            # 503 from the service, or no connection while the pod is not Ready (the
            # Service drops it while OPA restarts): never anything served.
            assert answer["status"] in (503, 0), answer
            time.sleep(2)
    assert recovered, "the service did not recover after OPA was restarted"
    after = _container_state(cluster, pod)
    assert cluster_stack.model_pods()[0] == pod, "the pod was replaced"
    assert after["opa"]["restartCount"] == before["opa"]["restartCount"] + 1
    assert after["model"]["restartCount"] == before["model"]["restartCount"]
    outage_events = [
        e
        for e in audit_events(cluster, pod)
        if e.get("kind") == "request" and e.get("status") == 503 and "during-outage" in str(e)
    ]
    assert len(outage_events) >= 10, f"{len(outage_events)} outage requests audited"


@pytest.mark.disruptive
def test_the_audit_log_copied_out_of_the_pod_verifies(
    cluster_stack: ClusterStack, tmp_path: Path
) -> None:
    pod = cluster_stack.model_pods()[0]
    copy = copy_audit_log(cluster_stack.cluster, pod, tmp_path / "pod-home")
    verify = ztml_audit_verify(copy)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.stack_destroy
def test_destroy_removes_the_namespace_and_every_volume(cluster_stack: ClusterStack) -> None:
    cluster = cluster_stack.cluster
    volumes = cluster.kubectl("get", "pv", "-o", "jsonpath={.items[*].metadata.name}")
    ours = set(volumes.stdout.split())
    assert ours, "the stack had no volume to remove"
    started = time.monotonic()
    proc = cluster_stack.engine("destroy")
    took = time.monotonic() - started
    cluster_stack.destroyed = proc.returncode == 0
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"destroy took {took:.0f} s; up took {cluster_stack.up_seconds:.0f} s")
    assert cluster.kubectl("get", "namespace", NAMESPACE).returncode != 0
    deadline = time.monotonic() + 120
    left = ours
    while left and time.monotonic() < deadline:
        time.sleep(2)
        listed = cluster.kubectl("get", "pv", "-o", "jsonpath={.items[*].metadata.name}")
        left = ours & set(listed.stdout.split())
    assert not left, f"volumes left behind: {sorted(left)}"
    assert not any(cluster.layout.volumes.iterdir()), "volume directories left on the node"
