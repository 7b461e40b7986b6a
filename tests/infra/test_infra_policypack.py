"""The CrossGuard pack's checks, evaluated with the real OPA (pulumi_policy not needed)."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import yaml

from infra.policypack.checks import Resource, check_resource, check_stack
from infra.policypack.opa_eval import auto_name, build_inventory, manifest_from_props

PACK = Path(__file__).resolve().parents[2] / "infra" / "policypack"


def _resources(run: Any) -> list[Resource]:
    """The run's Kubernetes resources as CrossGuard would hand them over (no names)."""
    resources = []
    for urn, manifest in run.manifests.items():
        props = copy.deepcopy(manifest)
        logical = urn.rsplit("::", 1)[1]
        if props["metadata"]["name"] == auto_name(logical):
            del props["metadata"]["name"]  # auto-named: the engine has not named it yet
        resources.append(Resource(urn, logical, urn.split("::")[2].split("$")[-1], props))
    return resources


def test_pack_declares_resource_and_stack_policies() -> None:
    tree = ast.parse((PACK / "__main__.py").read_text())
    called = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert {"PolicyPack", "ResourceValidationPolicy", "StackValidationPolicy"} <= called
    assert yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())["runtime"]["name"] == "python"
    assert "pulumi-policy" in (PACK / "requirements.txt").read_text()


def test_manifest_from_props_fills_auto_names() -> None:
    manifest = manifest_from_props("web", {"apiVersion": "v1", "kind": "Service", "metadata": {}})
    assert manifest["metadata"]["name"].startswith("web-")
    assert len(manifest["metadata"]["name"]) == len("web-") + 7


def test_inventory_separates_namespaced_and_cluster_objects(single_run: Any) -> None:
    inventory = build_inventory(single_run.manifests.values())
    assert "ztml" in inventory["cluster"]["v1"]["Namespace"]
    policies = inventory["namespace"]["ztml"]["networking.k8s.io/v1"]["NetworkPolicy"]
    assert any("default-deny" in name for name in policies)


def test_stack_policy_reports_nothing_for_the_program(any_run: Any) -> None:
    assert check_stack(_resources(any_run)) == []


def test_resource_policy_reports_nothing_for_each_resource(single_run: Any) -> None:
    for resource in _resources(single_run):
        assert check_resource(resource) == [], resource.urn


def test_resource_policy_reports_a_privileged_container_against_its_urn(single_run: Any) -> None:
    resources = _resources(single_run)
    deployment = next(r for r in resources if r.props["kind"] == "Deployment")
    props = copy.deepcopy(dict(deployment.props))
    props["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    findings = check_resource(
        Resource(deployment.urn, deployment.name, deployment.resource_type, props)
    )
    assert findings, "privileged container admitted"
    assert all(f.urn == deployment.urn for f in findings)
    assert any("privileged" in f.message for f in findings)


def test_stack_policy_reports_a_missing_default_deny(single_run: Any) -> None:
    resources = [r for r in _resources(single_run) if "default-deny" not in r.urn]
    findings = check_stack(resources)
    assert any("default-deny" in f.message for f in findings), findings


def test_non_kubernetes_resources_are_ignored() -> None:
    resource = Resource("urn:x", "ca", "tls:index/privateKey:PrivateKey", {"algorithm": "RSA"})
    assert check_resource(resource) == []
