"""The scaled-out stack on the local cluster: model pods sharing one PostgreSQL.

``ztml cluster config --replicas 2`` and ``up`` under the real engine, after the
one-replica stack is destroyed (the ``scaled_stack`` marker runs these tests after
``stack_destroy``). The ledger moves to a hardened PostgreSQL StatefulSet; each pod keeps
its own home (audit log, keys) in a sub-directory of a ReadWriteMany volume. Scaled up
to three replicas, the monitors' state and the review queue are shared in the same
PostgreSQL: one limit per caller, one extraction history, one queue, and an outage of
the store refused (503, audited) until it is back.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.network import POSTGRES_PORT
from infra.records import POSTGRES_LABELS, POSTGRES_UID
from infra.secrets import TRUST_DIR
from tests.service.cluster.fixtures import Cluster
from tests.system.cluster_clients import (
    CONNECTOR,
    SERVICE_URL,
    audit_events,
    client_pod,
    copy_audit_log,
    deployment,
    extraction_plan,
    predict,
    python_in,
    send,
    ztml_audit_verify,
)
from tests.system.cluster_stack import NAMESPACE, ClusterStack, deploy_stack, engine_changes

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.cluster, pytest.mark.scaled_stack]

REPLICAS = 2
SCALED_UP = 3
POSTGRES_SELECTOR = ",".join(f"{k}={v}" for k, v in POSTGRES_LABELS.items())


@pytest.fixture(scope="module")
def scaled_stack(
    cluster: Cluster,
    stack_images: dict[str, str],
    cluster_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClusterStack]:
    """The stack with two replicas, deployed after the one-replica stack is gone."""
    if cluster.kubectl("get", "namespace", NAMESPACE).returncode == 0:
        pytest.fail(
            f"namespace {NAMESPACE} still exists: the one-replica stack was not destroyed "
            "(see the stack_destroy test's failure)"
        )
    stack = deploy_stack(
        cluster, cluster_home, tmp_path_factory.mktemp("scaled-stack"), replicas=REPLICAS
    )
    yield stack
    if not stack.destroyed:
        stack.engine("destroy")


@pytest.fixture(scope="module")
def client(scaled_stack: ClusterStack) -> str:
    """A pod labelled as an allowed client of the scaled-out stack."""
    return client_pod(scaled_stack, "ztml-test-client", labelled=True)


def _postgres_pod(cluster: Cluster) -> dict[str, Any]:
    proc = cluster.kubectl("-n", NAMESPACE, "get", "pods", "-l", POSTGRES_SELECTOR, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    (pod,) = json.loads(proc.stdout)["items"]
    found: dict[str, Any] = pod
    return found


def test_up_brings_every_model_pod_and_a_hardened_postgresql_up(
    scaled_stack: ClusterStack,
) -> None:
    cluster = scaled_stack.cluster
    workload = deployment(cluster)
    assert workload["spec"]["replicas"] == REPLICAS
    assert workload["status"].get("availableReplicas") == REPLICAS, workload["status"]
    assert len(scaled_stack.model_pods()) == REPLICAS
    pod = _postgres_pod(cluster)
    spec = pod["spec"]
    assert pod["status"]["phase"] == "Running"
    assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == POSTGRES_UID
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "@sha256:" in container["image"]
    # The password is a mounted file: no environment value carries it.
    password = cluster.exec(
        NAMESPACE, pod["metadata"]["name"], "cat", "/etc/postgres/password/password"
    )
    assert password.returncode == 0 and len(password.stdout) >= 16
    assert all(password.stdout not in str(e.get("value", "")) for e in container.get("env", []))
    claims = cluster.kubectl("-n", NAMESPACE, "get", "pvc", "-o", "json")
    listed = json.loads(claims.stdout)["items"]
    assert {c["status"]["phase"] for c in listed} == {"Bound"}
    assert ["ReadWriteMany"] in [c["spec"]["accessModes"] for c in listed]


def test_postgresql_admits_the_model_pods_and_no_other_pod(
    scaled_stack: ClusterStack, client: str
) -> None:
    cluster = scaled_stack.cluster
    address = _postgres_pod(cluster)["status"]["podIP"]
    tried = [[address, POSTGRES_PORT]]
    for pod in scaled_stack.model_pods():
        assert python_in(cluster, pod, CONNECTOR, tried, container="model") == ["connected"]
    assert python_in(cluster, client, CONNECTOR, tried) != ["connected"]


def test_each_model_pod_verified_its_model_against_the_one_ledger(
    scaled_stack: ClusterStack,
) -> None:
    cluster = scaled_stack.cluster
    digest = scaled_stack.config()["ztml:modelDigest"]
    heads = set()
    for pod in scaled_stack.model_pods():
        logs = cluster.kubectl("-n", NAMESPACE, "logs", pod, "-c", "model").stdout
        assert f"({digest}) verified" in logs, logs[-2000:]
        starts = [e for e in audit_events(cluster, pod) if e.get("action") == "start"]
        assert starts and all(e["model_digest"] == digest for e in starts), starts
        verified = cluster.exec(NAMESPACE, pod, "ztml", "ledger", "verify", "--trust", TRUST_DIR)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        env = cluster.exec(NAMESPACE, pod, "printenv", "ZTML_LEDGER_URL")
        assert env.stdout.strip() == "postgresql://?service=ztml"
        head = re.search(r"head seq (\d+)\s+([0-9a-f]{64})", verified.stdout)
        assert head, verified.stdout
        heads.add(head.groups())
    # One ledger: both pods read the same records, up to the same newest one.
    assert len(heads) == 1, heads


def test_requests_spread_over_every_model_pod(scaled_stack: ClusterStack, client: str) -> None:
    cluster = scaled_stack.cluster
    subjects = [f"spread-{n}" for n in range(40)]
    answers = send(scaled_stack, client, [predict(scaled_stack.token(s)) for s in subjects])
    assert [a["status"] for a in answers] == [200] * len(subjects), answers
    served = {}
    for pod in scaled_stack.model_pods():
        events = audit_events(cluster, pod)
        served[pod] = sum(
            1 for e in events if e.get("kind") == "request" and str(e.get("subject")) in subjects
        )
    assert sum(served.values()) == len(subjects), served
    assert all(count > 0 for count in served.values()), served


def test_the_audit_log_of_every_model_pod_verifies(
    scaled_stack: ClusterStack, tmp_path: Path
) -> None:
    for pod in scaled_stack.model_pods():
        copy = copy_audit_log(scaled_stack.cluster, pod, tmp_path / pod)
        verify = ztml_audit_verify(copy)
        assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_scale_up_adds_a_pod_that_joins_the_same_ledger(scaled_stack: ClusterStack) -> None:
    cluster = scaled_stack.cluster
    before = _postgres_pod(cluster)
    scaled_stack.scale(SCALED_UP)
    up = scaled_stack.engine("up")
    assert up.returncode == 0, up.stderr[-3000:]
    assert engine_changes(up).get("replace", 0) == 0, engine_changes(up)
    # The autoscaler owns the count between its bounds: when it syncs between the
    # Deployment's update and its own, it holds the old maximum until its next sync.
    deadline = time.monotonic() + 240
    workload = deployment(cluster)
    while workload["status"].get("availableReplicas") != SCALED_UP and time.monotonic() < deadline:
        time.sleep(3)
        workload = deployment(cluster)
    assert workload["status"].get("availableReplicas") == SCALED_UP, workload["status"]
    pods = scaled_stack.model_pods()
    assert len(pods) == SCALED_UP
    # PostgreSQL and its data were kept: the same pod, and every pod verifies one ledger.
    after = _postgres_pod(cluster)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    digest = scaled_stack.config()["ztml:modelDigest"]
    for pod in pods:
        logs = cluster.kubectl("-n", NAMESPACE, "logs", pod, "-c", "model").stdout
        assert f"({digest}) verified" in logs, logs[-2000:]


def _in_model_pod(stack: ClusterStack, pod: str, *command: str) -> str:
    proc = stack.cluster.kubectl("-n", NAMESPACE, "exec", pod, "-c", "model", "--", *command)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _served_by(stack: ClusterStack, subject: str) -> dict[str, int]:
    """How many of ``subject``'s requests each model pod audited."""
    return {
        pod: sum(
            1
            for e in audit_events(stack.cluster, pod)
            if e.get("kind") == "request" and e.get("subject") == subject
        )
        for pod in stack.model_pods()
    }


def test_every_replica_keeps_its_monitor_state_in_the_shared_store(
    scaled_stack: ClusterStack,
) -> None:
    for pod in scaled_stack.model_pods():
        env = _in_model_pod(scaled_stack, pod, "printenv", "ZTML_MONITOR_URL")
        assert env.strip() == "postgresql://?service=ztml", pod


def test_the_replicas_together_admit_one_callers_limit(
    scaled_stack: ClusterStack, client: str
) -> None:
    """A viewer's requests, spread over every replica, are limited as if by one replica."""
    token = scaled_stack.token("shared-burst", roles=("viewer",))
    plan = [
        {"url": f"{SERVICE_URL}/metadata", "headers": {"Authorization": f"Bearer {token}"}}
    ] * 120
    statuses = [a["status"] for a in send(scaled_stack, client, plan)]
    admitted = statuses.count(200)
    # One bucket: the burst (30) plus what refills during the run at the viewer's 60 per
    # minute (1 a second). A bucket per replica would admit about REPLICAS times the burst.
    assert set(statuses) <= {200, 429}, statuses
    assert 30 <= admitted <= 30 + 10, (admitted, statuses)
    served = _served_by(scaled_stack, "shared-burst")
    assert len(served) == SCALED_UP and all(n > 0 for n in served.values()), served


def test_an_extraction_sequence_spread_over_the_replicas_is_refused(
    scaled_stack: ClusterStack, client: str
) -> None:
    plan = extraction_plan(scaled_stack, "cluster-shared-extractor", seed=12, start=80)
    statuses = [a["status"] for a in send(scaled_stack, client, plan)]
    # The detector needs 30 distances of one caller. A history per replica would see about
    # 45 / REPLICAS = 15 of them and never flag this sequence; the shared one does.
    first = next((i for i, s in enumerate(statuses) if s == 403), None)
    assert first is not None, f"the sequence was never refused: {statuses}"
    assert all(s == 403 for s in statuses[first:]), statuses
    served = _served_by(scaled_stack, "cluster-shared-extractor")
    assert sum(1 for n in served.values() if n > 0) >= 2, served
    print(f"extraction refused from request {first} on; served per pod: {served}")


def test_ztml_review_in_any_replica_lists_the_one_queue(scaled_stack: ClusterStack) -> None:
    listings = [
        json.loads(
            _in_model_pod(scaled_stack, pod, "ztml", "review", "list", "--status", "all", "--json")
        )
        for pod in scaled_stack.model_pods()
    ]
    ids = [[item["id"] for item in listing] for listing in listings]
    assert ids[0] and all(seen == ids[0] for seen in ids), ids
    # The documented path: kubectl exec into the Deployment, any of its pods.
    through_deployment = _in_model_pod(
        scaled_stack, "deploy/ztml-model", "ztml", "review", "list", "--status", "all", "--json"
    )
    assert [item["id"] for item in json.loads(through_deployment)] == ids[0]


def _scale_postgres(cluster: Cluster, replicas: int) -> None:
    proc = cluster.kubectl(
        "-n", NAMESPACE, "scale", "statefulset", "-l", POSTGRES_SELECTOR, f"--replicas={replicas}"
    )
    assert proc.returncode == 0, proc.stderr


def test_the_shared_store_stopped_gives_503_audited_and_recovers_without_a_restart(
    scaled_stack: ClusterStack, client: str
) -> None:
    cluster = scaled_stack.cluster
    token = scaled_stack.token("store-outage", roles=("analyst",))
    (first,) = send(scaled_stack, client, [predict(token)])
    assert first["status"] == 200, first
    restarts = {p: _restarts(cluster, p) for p in scaled_stack.model_pods()}
    _scale_postgres(cluster, 0)
    try:
        deadline = time.monotonic() + 90
        while _postgres_pods(cluster) and time.monotonic() < deadline:
            time.sleep(1)
        outage = send(scaled_stack, client, [predict(token)] * 9)
    finally:
        _scale_postgres(cluster, 1)
    assert [a["status"] for a in outage] == [503] * 9, outage
    codes = {json.loads(a["body"])["error"]["code"] for a in outage}
    assert codes == {"monitor_unavailable"}, codes
    deadline = time.monotonic() + 180
    recovered = False
    while time.monotonic() < deadline and not recovered:
        (answer,) = send(scaled_stack, client, [predict(token)])
        recovered = answer["status"] == 200
        if not recovered:
            assert answer["status"] == 503, answer
            time.sleep(2)
    assert recovered, "the service did not recover once PostgreSQL was back"
    # Recovered by the same processes, and every refused request was audited.
    assert {p: _restarts(cluster, p) for p in scaled_stack.model_pods()} == restarts
    refused = [
        e
        for pod in scaled_stack.model_pods()
        for e in audit_events(cluster, pod)
        if e.get("subject") == "store-outage" and e.get("status") == 503
    ]
    assert len(refused) >= 9, len(refused)


def _postgres_pods(cluster: Cluster) -> list[str]:
    proc = cluster.kubectl("-n", NAMESPACE, "get", "pods", "-l", POSTGRES_SELECTOR, "-o", "name")
    return proc.stdout.split()


def _restarts(cluster: Cluster, pod: str) -> int:
    proc = cluster.kubectl(
        "-n",
        NAMESPACE,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[*].restartCount}",
    )
    return sum(int(n) for n in proc.stdout.split())


def test_destroy_removes_the_scaled_out_stack_with_its_volumes(
    scaled_stack: ClusterStack,
) -> None:
    cluster = scaled_stack.cluster
    proc = scaled_stack.engine("destroy")
    scaled_stack.destroyed = proc.returncode == 0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cluster.kubectl("get", "namespace", NAMESPACE).returncode != 0
    deadline = time.monotonic() + 120
    while any(cluster.layout.volumes.iterdir()) and time.monotonic() < deadline:
        time.sleep(2)
    assert not any(cluster.layout.volumes.iterdir()), "volume directories left on the node"
