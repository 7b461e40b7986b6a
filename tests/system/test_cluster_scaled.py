"""The scaled-out stack on the local cluster: two model pods, one PostgreSQL ledger.

``ztml cluster config --replicas 2`` and ``up`` under the real engine, after the
one-replica stack is destroyed (the ``scaled_stack`` marker runs these tests after
``stack_destroy``). The ledger moves to a hardened PostgreSQL StatefulSet; each pod keeps
its own home (audit log, keys) in a sub-directory of a ReadWriteMany volume.
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
    audit_events,
    client_pod,
    copy_audit_log,
    deployment,
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
