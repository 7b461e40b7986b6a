"""Several models in one stack on the local cluster: each in its own Deployment.

The session's one-replica stack (:mod:`tests.system.cluster_stack`) serves the demo
model and, through ``ztml:models``, the examples/digits_cnn and examples/breast_cancer
packages: each trained, signed, evaluated at its modality's ε, registered for its own
tenant and approved by the ``model_packages`` fixture, and baked into the image by
``ztml cluster images --package``. Clients are pods on the cluster's network calling
each model's Service by its DNS name.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.service.app.harness import digit_rows
from tests.service.cluster.fixtures import BREAST_CANCER, DIGITS_CNN, EXAMPLES, ModelPackage
from tests.system.cluster_clients import client_pod, predict, send
from tests.system.cluster_stack import NAMESPACE, WORKLOAD, ClusterStack

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def client(cluster_stack: ClusterStack) -> str:
    """A pod labelled as an allowed client."""
    return client_pod(cluster_stack, "ztml-test-client", labelled=True)


def _token(stack: ClusterStack, tenant: str) -> str:
    """A token of ``tenant`` allowed to use any of its models (high-risk ones too)."""
    return stack.token(f"{tenant}-owner", roles=("model-owner",), tenant=tenant)


def _call(stack: ClusterStack, pod: str, model: str, token: str, rows: list[Any]) -> dict[str, Any]:
    """POST ``rows`` to the model's predict route through the model's own Service."""
    url = f"https://{model}.{NAMESPACE}.svc.cluster.local:3000/v1/models/{model}/predict"
    step = {
        "url": url,
        "method": "POST",
        "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        "body": json.dumps({"instances": rows}),
    }
    (answer,) = send(stack, pod, [step])
    return answer


def _field_error(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["status"] == 422, answer
    error: dict[str, Any] = json.loads(answer["body"])["error"]
    assert error["code"] == "invalid_input", error
    return error


def test_each_models_deployment_becomes_available(
    cluster_stack: ClusterStack, model_packages: tuple[ModelPackage, ...]
) -> None:
    for name in (WORKLOAD, *(p.name for p in model_packages)):
        proc = cluster_stack.cluster.kubectl(
            "-n", NAMESPACE, "get", "deployment", name, "-o", "json"
        )
        assert proc.returncode == 0, f"deployment {name}: {proc.stderr}"
        workload = json.loads(proc.stdout)
        wanted = workload["spec"]["replicas"]
        assert workload["status"].get("availableReplicas") == wanted, (name, workload["status"])


def test_the_cnn_answers_a_token_of_its_tenant(cluster_stack: ClusterStack, client: str) -> None:
    token = _token(cluster_stack, DIGITS_CNN.tenant)
    answer = _call(cluster_stack, client, DIGITS_CNN.name, token, digit_rows(1))
    assert answer["status"] == 200, answer
    assert '"predictions"' in answer["body"], answer


def test_a_wrongly_sized_row_is_refused_by_the_cnn_naming_the_field(
    cluster_stack: ClusterStack, client: str
) -> None:
    token = _token(cluster_stack, DIGITS_CNN.tenant)
    answer = _call(cluster_stack, client, DIGITS_CNN.name, token, [[0.5] * 30])
    error = _field_error(answer)
    assert str(error["field"]).startswith("instances[0]"), error


def test_the_tabular_model_answers_a_token_of_its_tenant(
    cluster_stack: ClusterStack, client: str
) -> None:
    request = json.loads((EXAMPLES / BREAST_CANCER.directory / "request.json").read_text())
    token = _token(cluster_stack, BREAST_CANCER.tenant)
    answer = _call(cluster_stack, client, BREAST_CANCER.name, token, request["instances"])
    assert answer["status"] == 200, answer


def test_a_digits_row_is_refused_by_the_tabular_model_naming_the_field(
    cluster_stack: ClusterStack, client: str
) -> None:
    token = _token(cluster_stack, BREAST_CANCER.tenant)
    answer = _call(cluster_stack, client, BREAST_CANCER.name, token, digit_rows(1))
    error = _field_error(answer)
    assert str(error["field"]).startswith("instances[0]"), error


#: Each model's tenant: the demo model's, then the examples' own.
TENANTS = {
    WORKLOAD: "demo",
    DIGITS_CNN.name: DIGITS_CNN.tenant,
    BREAST_CANCER.name: BREAST_CANCER.tenant,
}


@pytest.mark.parametrize(
    ("model", "tenant"),
    [(m, t) for m in TENANTS for t in sorted(set(TENANTS.values())) if t != TENANTS[m]],
)
def test_each_model_refuses_the_tenants_of_the_others(
    cluster_stack: ClusterStack, client: str, model: str, tenant: str
) -> None:
    token = _token(cluster_stack, tenant)
    if model == WORKLOAD:
        (answer,) = send(cluster_stack, client, [predict(token)])
    elif model == BREAST_CANCER.name:
        request = json.loads((EXAMPLES / BREAST_CANCER.directory / "request.json").read_text())
        answer = _call(cluster_stack, client, model, token, request["instances"])
    else:
        answer = _call(cluster_stack, client, model, token, digit_rows(1))
    assert answer["status"] == 403, answer
    reasons = json.loads(answer["body"])["error"]["reasons"]
    assert any(f'subject tenant "{tenant}"' in r for r in reasons), reasons


def test_the_digits_model_still_answers_beside_the_others(
    cluster_stack: ClusterStack, client: str
) -> None:
    (answer,) = send(cluster_stack, client, [predict(cluster_stack.token("demo-analyst"))])
    assert answer["status"] == 200, answer
