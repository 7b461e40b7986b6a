"""The namespace is restricted and the network is default-deny with explicit allows only."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.model_service import MODEL_POD_LABELS, SERVICE_PORT
from infra.namespace import PSA_VERSION, Namespace, NamespaceArgs
from infra.network import Network, NetworkArgs
from infra.records import POSTGRES_LABELS


def _by_role(run: Any, role: str) -> tuple[str, dict[str, Any]]:
    ((urn, manifest),) = (
        (u, m) for u, m in run.of_kind("NetworkPolicy").items() if u.endswith(f"::ztml-{role}")
    )
    return urn, manifest


def test_namespace_enforces_restricted_pod_security(any_run: Any) -> None:
    ((urn, namespace),) = any_run.stack().of_kind("Namespace").items()
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", f"{urn}: {mode}"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == PSA_VERSION, urn


def test_namespace_has_quota_and_limit_range(any_run: Any) -> None:
    ns = any_run.config.namespace
    ((q_urn, quota),) = any_run.stack().of_kind("ResourceQuota").items()
    assert quota["metadata"]["namespace"] == ns, q_urn
    assert quota["spec"]["hard"]["services.loadbalancers"] == "0", q_urn
    assert quota["spec"]["hard"]["services.nodeports"] == "0", q_urn
    ((l_urn, limits),) = any_run.of_kind("LimitRange").items()
    assert {item["type"] for item in limits["spec"]["limits"]} >= {"Container"}, l_urn


def test_every_namespaced_resource_lives_in_the_stack_namespace(any_run: Any) -> None:
    for urn, manifest in any_run.stack().manifests.items():
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"].get("namespace") == any_run.config.namespace, urn


def test_default_deny_covers_ingress_and_egress_for_every_pod(any_run: Any) -> None:
    urn, policy = _by_role(any_run, "default-deny")
    spec = policy["spec"]
    assert spec["podSelector"] == {}, urn
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"], urn
    assert "ingress" not in spec and "egress" not in spec, urn


def test_dns_egress_reaches_only_kube_dns(any_run: Any) -> None:
    urn, policy = _by_role(any_run, "allow-dns")
    (rule,) = policy["spec"]["egress"]
    (peer,) = rule["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }, urn
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}, urn
    assert sorted((p["protocol"], p["port"]) for p in rule["ports"]) == [
        ("TCP", 53),
        ("UDP", 53),
    ], urn


def test_clients_reach_only_the_service_port(any_run: Any) -> None:
    urn, policy = _by_role(any_run, "allow-clients")
    assert policy["spec"]["podSelector"]["matchLabels"] == MODEL_POD_LABELS, urn
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": SERVICE_PORT}], urn
    peers = rule["from"]
    assert {"podSelector": {"matchLabels": {"ztml.dev/client": "true"}}} in peers, urn
    extra = [p["namespaceSelector"]["matchLabels"] for p in peers if "namespaceSelector" in p]
    expected = [{"kubernetes.io/metadata.name": n} for n in any_run.config.client_namespaces]
    assert extra == expected, urn


def test_nothing_else_is_allowed(any_run: Any) -> None:
    stack = any_run.stack()
    roles = {u.rsplit("::", 1)[1] for u in stack.of_kind("NetworkPolicy")}
    expected = {
        "ztml-default-deny",
        "ztml-allow-dns",
        "ztml-allow-clients",
        "ztml-allow-client-egress",
    }
    if any_run.config.uses_postgres:
        expected |= {"ztml-allow-model-to-postgres", "ztml-allow-postgres-from-model"}
    assert roles == expected
    for urn, policy in stack.of_kind("NetworkPolicy").items():
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            peers = rule.get("from", []) + rule.get("to", [])
            assert peers, f"{urn}: a rule without peers allows everyone"
            assert rule.get("ports"), f"{urn}: a rule without ports allows every port"
            assert not any("ipBlock" in p for p in peers), f"{urn}: ipBlock peer"


def test_labelled_clients_may_send_only_to_the_model_service_port(any_run: Any) -> None:
    urn, policy = _by_role(any_run, "allow-client-egress")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"ztml.dev/client": "true"}}, urn
    (rule,) = policy["spec"]["egress"]
    assert rule["to"] == [{"podSelector": {"matchLabels": MODEL_POD_LABELS}}], urn
    assert rule["ports"] == [{"protocol": "TCP", "port": 3000}], urn


def test_postgres_is_reachable_only_from_the_model_service(scaled_run: Any) -> None:
    urn, egress = _by_role(scaled_run, "allow-model-to-postgres")
    assert egress["spec"]["egress"][0]["to"] == [{"podSelector": {"matchLabels": POSTGRES_LABELS}}]
    urn, ingress = _by_role(scaled_run, "allow-postgres-from-model")
    assert ingress["spec"]["podSelector"]["matchLabels"] == POSTGRES_LABELS, urn
    assert ingress["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": MODEL_POD_LABELS}}
    ], urn


@pulumi.runtime.test
def test_namespace_component_outputs_its_name() -> pulumi.Output[None]:
    namespace = Namespace("unit", NamespaceArgs(name="ztml-unit"))

    def check(name: str) -> None:
        assert name == "ztml-unit", f"{namespace.urn}: name output {name!r}"

    return namespace.name.apply(check)


@pulumi.runtime.test
def test_network_component_without_postgres_declares_four_policies() -> pulumi.Output[None]:
    network = Network(
        "unit", NetworkArgs(namespace="ztml-unit", model_labels=MODEL_POD_LABELS, service_port=3000)
    )

    def check(names: list[str]) -> None:
        assert len(names) == 4, f"policies: {names}"
        assert any(n.startswith("unit-default-deny-") for n in names), names

    return network.policy_names.apply(check)


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_quota_leaves_room_for_every_autoscaled_pod_plus_a_surge(any_run: Any) -> None:
    stack = any_run.stack()
    ((q_urn, quota),) = stack.of_kind("ResourceQuota").items()
    hard = quota["spec"]["hard"]
    totals = {"limits.cpu": 0.0, "limits.memory": 0.0, "requests.cpu": 0.0, "requests.memory": 0.0}
    for manifest in stack.workloads().values():
        spec = manifest["spec"]["template"]["spec"]
        pods = any_run.config.max_replicas + 1 if manifest["kind"] == "Deployment" else 1
        for key in totals:
            kind, resource = key.split(".")
            per_pod = sum(_quantity(c["resources"][kind][resource]) for c in spec["containers"])
            init = max(
                (_quantity(c["resources"][kind][resource]) for c in spec.get("initContainers", [])),
                default=0.0,
            )
            totals[key] += pods * max(per_pod, init)
    for key, needed in totals.items():
        assert _quantity(hard[key]) >= needed, f"{q_urn}: {key}={hard[key]} < {needed}"
    assert int(hard["pods"]) >= any_run.config.max_replicas + 1, q_urn
