"""The admission webhook on the live stack: the API server refuses what policies/admission denies.

The stack is the one ``pulumi up`` deployed onto the local cluster
(:mod:`tests.system.cluster_stack`), with the webhook on as ``ztml cluster config`` writes
it. Every example under ``policies/examples/admission`` is sent to the API server with
``kubectl apply --dry-run=server`` (every admission step runs, nothing is stored, no image
is pulled), and the messages expected are the webhook policy's own answer for the same
object, computed here with the pinned OPA and the stack's parameters.

Two namespaces besides the stack's: one that carries only the webhook's label (no Pod
Security label, so Pod Security admission, which runs before webhooks, refuses nothing
first and every refusal is the webhook's), and one without it (never judged). The tests
that change the shared stack (a parameter changed by a second ``up``, the webhook's pods
scaled to zero) are marked ``disruptive`` and run before it is destroyed.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.toolchain.opa import find_opa
from service.toolchain.paths import POLICIES_DIR
from tests.service.cluster.fixtures import Cluster
from tests.system.cluster_clients import deployment
from tests.system.cluster_stack import NAMESPACE, ClusterStack

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.cluster]

WEBHOOK_NAMESPACE = f"{NAMESPACE}-admission"
WEBHOOK_NAME = "admission.ztml.dev"
ADMISSION_LABEL = "ztml.dev/admission"
WEBHOOK_SELECTOR = "app.kubernetes.io/name=ztml-admission"
PROBE = "ztml-admission-probe"  # labelled for the webhook, no Pod Security label
FREE = "ztml-admission-free"  # not labelled: never judged
EXAMPLES = POLICIES_DIR / "examples" / "admission"
BEFORE_DEPLOY_ONLY = ("bad-no-network-policy",)
BAD = sorted(p.name for p in EXAMPLES.iterdir() if p.name.startswith("bad-"))
GOOD = sorted(p.name for p in EXAMPLES.iterdir() if p.name.startswith("good-"))


def example(case: str, namespace: str) -> dict[str, Any]:
    """The example's object, placed in ``namespace``."""
    review = json.loads((EXAMPLES / case / "input.json").read_text())["review"]
    manifest: dict[str, Any] = copy.deepcopy(review["object"])
    manifest["metadata"]["namespace"] = namespace
    return manifest


def dry_apply(cluster: Cluster, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``kubectl apply --dry-run=server`` of one object."""
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(manifest))


def expected_messages(stack: ClusterStack, manifest: dict[str, Any], work: Path) -> list[str]:
    """The webhook policy's finding messages for ``manifest``, with the stack's parameters."""
    parameters = stack.config().get("ztml:admissionParameters") or {}
    settings = work / "settings" / "data"
    settings.mkdir(parents=True, exist_ok=True)
    document = {"admission_webhook": {"parameters": parameters}}
    (settings / "admission_webhook.json").write_text(json.dumps(document))
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "expected",
            "operation": "CREATE",
            "namespace": manifest["metadata"]["namespace"],
            "name": manifest["metadata"]["name"],
            "object": manifest,
        },
    }
    (work / "review.json").write_text(json.dumps(review))
    result = subprocess.run(
        [
            str(find_opa()),
            "eval",
            "-f",
            "json",
            "--ignore",
            "examples",
            "-d",
            str(POLICIES_DIR),
            "-d",
            str(work / "settings"),
            "-i",
            str(work / "review.json"),
            "data.ztml.admission.webhook.response.response",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(result.stdout)["result"][0]["expressions"][0]["value"]
    return [
        cause["message"] for cause in answer.get("status", {}).get("details", {}).get("causes", [])
    ]


@pytest.fixture(scope="module")
def probe(cluster_stack: ClusterStack) -> Iterator[str]:
    """A namespace under the webhook, without Pod Security labels."""
    cluster = cluster_stack.cluster
    yield cluster.namespace(PROBE, {ADMISSION_LABEL: WEBHOOK_NAMESPACE})
    cluster.kubectl("delete", "namespace", PROBE, "--wait=false")


@pytest.fixture(scope="module")
def free(cluster_stack: ClusterStack) -> Iterator[str]:
    """A namespace the webhook does not judge."""
    cluster = cluster_stack.cluster
    yield cluster.namespace(FREE)
    cluster.kubectl("delete", "namespace", FREE, "--wait=false")


def _object(cluster: Cluster, *args: str) -> dict[str, Any]:
    proc = cluster.kubectl("get", *args, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    document: dict[str, Any] = json.loads(proc.stdout)
    return document


def test_the_webhook_was_in_place_before_the_stacks_namespace(
    cluster_stack: ClusterStack,
) -> None:
    cluster = cluster_stack.cluster
    configuration = _object(cluster, "validatingwebhookconfiguration", WEBHOOK_NAMESPACE)
    namespace = _object(cluster, "namespace", NAMESPACE)
    assert namespace["metadata"]["labels"][ADMISSION_LABEL] == WEBHOOK_NAMESPACE
    created = configuration["metadata"]["creationTimestamp"]
    assert created <= namespace["metadata"]["creationTimestamp"], (created, namespace)
    (webhook,) = configuration["webhooks"]
    assert webhook["failurePolicy"] == "Fail"
    excluded = webhook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert "kube-system" in excluded and WEBHOOK_NAMESPACE in excluded
    opa = _object(cluster, "-n", WEBHOOK_NAMESPACE, "deployment", "ztml-admission")
    assert opa["status"].get("availableReplicas") == 2, opa["status"]


def test_the_stacks_own_resources_pass_the_live_webhook(cluster_stack: ClusterStack) -> None:
    cluster = cluster_stack.cluster
    model = deployment(cluster)
    assert model["status"].get("availableReplicas") == model["spec"]["replicas"]
    # Its pods were created through the webhook: the decision log shows them admitted.
    logs = cluster.kubectl(
        "-n", WEBHOOK_NAMESPACE, "logs", "-l", WEBHOOK_SELECTOR, "--tail=-1", "--prefix=false"
    )
    assert logs.returncode == 0, logs.stderr
    admitted = [
        event
        for event in (json.loads(line) for line in logs.stdout.splitlines() if line.startswith("{"))
        if event.get("msg") == "Decision Log"
        and event["input"]["request"].get("namespace") == NAMESPACE
        and event["result"]["response"]["allowed"] is True
    ]
    kinds = {event["input"]["request"]["kind"]["kind"] for event in admitted}
    assert {"Deployment", "ReplicaSet", "Pod", "Service"} <= kinds, kinds
    # And the model Deployment as it is now passes again.
    live = copy.deepcopy(model)
    live.pop("status", None)
    for field in ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"):
        live["metadata"].pop(field, None)
    proc = dry_apply(cluster, live)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("case", [c for c in BAD if c not in BEFORE_DEPLOY_ONLY])
def test_a_bad_example_is_refused_with_the_policys_messages(
    cluster_stack: ClusterStack, probe: str, case: str, tmp_path: Path
) -> None:
    manifest = example(case, probe)
    expected = expected_messages(cluster_stack, manifest, tmp_path)
    assert expected, f"the policy finds nothing in {case}"
    proc = dry_apply(cluster_stack.cluster, manifest)
    assert proc.returncode != 0, f"{case} was admitted in {probe}"
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in proc.stderr, proc.stderr
    # The API server's defaults may add findings (a host-network pod's ports become host
    # ports); every finding of the manifest as written is there.
    missing = [message for message in expected if message not in proc.stderr]
    assert not missing, f"{case}: {missing} not in\n{proc.stderr}"


@pytest.mark.parametrize("case", [c for c in BAD if c not in BEFORE_DEPLOY_ONLY])
def test_a_bad_example_is_refused_in_the_stacks_namespace(
    cluster_stack: ClusterStack, case: str, tmp_path: Path
) -> None:
    manifest = example(case, NAMESPACE)
    proc = dry_apply(cluster_stack.cluster, manifest)
    assert proc.returncode != 0, f"{case} was admitted in {NAMESPACE}"
    if manifest["kind"] == "Pod":
        # Pod Security admission (restricted) runs before webhooks and may refuse it first.
        assert "violates PodSecurity" in proc.stderr or WEBHOOK_NAME in proc.stderr, proc.stderr
        return
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in proc.stderr, proc.stderr
    expected = expected_messages(cluster_stack, manifest, tmp_path)
    missing = [message for message in expected if message not in proc.stderr]
    assert not missing, f"{case}: {missing} not in\n{proc.stderr}"


@pytest.mark.parametrize("case", GOOD)
def test_a_good_example_is_admitted(cluster_stack: ClusterStack, probe: str, case: str) -> None:
    for namespace in (probe, NAMESPACE):
        proc = dry_apply(cluster_stack.cluster, example(case, namespace))
        assert proc.returncode == 0, f"{case} in {namespace}: {proc.stderr}"


def test_the_cross_object_rule_runs_before_deploy_only(
    cluster_stack: ClusterStack, probe: str
) -> None:
    # The probe namespace has no NetworkPolicy at all; at admission the rule is off.
    proc = dry_apply(cluster_stack.cluster, example("bad-no-network-policy", probe))
    assert proc.returncode == 0, proc.stderr


def test_a_namespace_without_the_label_is_not_judged(
    cluster_stack: ClusterStack, free: str
) -> None:
    proc = dry_apply(cluster_stack.cluster, example("bad-unpinned-image", free))
    assert proc.returncode == 0, proc.stderr


def _until(check: Any, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(2)
    return False


@pytest.mark.disruptive
def test_a_changed_parameter_changes_enforcement(
    cluster_stack: ClusterStack, probe: str, tmp_path: Path
) -> None:
    cluster = cluster_stack.cluster
    service = example("bad-nodeport-service", probe)
    assert dry_apply(cluster, service).returncode != 0
    changed = cluster_stack.config()
    parameters = dict(changed.get("ztml:admissionParameters") or {})
    parameters["external_services"] = [f"{probe}/{service['metadata']['name']}"]
    changed["ztml:admissionParameters"] = parameters
    changed_file = tmp_path / "changed-stack.json"
    changed_file.write_text(json.dumps(changed))
    changed_file.chmod(0o600)
    try:
        up = cluster_stack.engine("up", config_file=changed_file)
        assert up.returncode == 0, up.stderr[-3000:]
        # The new pods serve the new parameters; old ones leave the Service as they stop.
        assert _until(lambda: dry_apply(cluster, service).returncode == 0), dry_apply(
            cluster, service
        ).stderr
    finally:
        restored = cluster_stack.engine("up")
        assert restored.returncode == 0, restored.stderr[-3000:]
    assert _until(lambda: dry_apply(cluster, service).returncode != 0)


@pytest.mark.disruptive
def test_without_webhook_pods_the_protected_namespace_is_closed_and_others_are_not(
    cluster_stack: ClusterStack, probe: str, free: str
) -> None:
    cluster = cluster_stack.cluster
    good = "good-deployment"

    def scale(replicas: int) -> None:
        proc = cluster.kubectl(
            "-n", WEBHOOK_NAMESPACE, "scale", "deployment/ztml-admission", f"--replicas={replicas}"
        )
        assert proc.returncode == 0, proc.stderr

    def webhook_pods() -> list[str]:
        proc = cluster.kubectl(
            "-n", WEBHOOK_NAMESPACE, "get", "pods", "-l", WEBHOOK_SELECTOR, "-o", "name"
        )
        return proc.stdout.split()

    scale(0)
    try:
        assert _until(lambda: not webhook_pods()), webhook_pods()
        for namespace in (NAMESPACE, probe):
            proc = dry_apply(cluster, example(good, namespace))
            assert proc.returncode != 0, f"admitted in {namespace} without a webhook"
            assert f'failed calling webhook "{WEBHOOK_NAME}"' in proc.stderr, proc.stderr
        # Other namespaces, and the system's, are not affected.
        proc = dry_apply(cluster, example(good, free))
        assert proc.returncode == 0, proc.stderr
        proc = cluster.kubectl("-n", "kube-system", "get", "pods")
        assert proc.returncode == 0, proc.stderr
    finally:
        scale(2)
    rollout = cluster.kubectl(
        "-n",
        WEBHOOK_NAMESPACE,
        "rollout",
        "status",
        "deployment/ztml-admission",
        "--timeout=180s",
        timeout=240,
    )
    assert rollout.returncode == 0, rollout.stderr
    assert _until(lambda: dry_apply(cluster, example(good, NAMESPACE)).returncode == 0)
    assert dry_apply(cluster, example("bad-unpinned-image", NAMESPACE)).returncode != 0
