"""The CrossGuard pack's checks, evaluated with the real OPA (pulumi_policy not needed)."""

from __future__ import annotations

import ast
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from infra.policypack.checks import Resource, check_resource, check_stack
from infra.policypack.opa_eval import auto_name, build_inventory, manifest_from_props

PACK = Path(__file__).resolve().parents[2] / "infra" / "policypack"


REPO = Path(__file__).resolve().parents[2]


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


def _as_the_engine_hands_them(resource: Resource) -> Resource:
    """The resource as the pack's analyzer server builds it from the engine's request.

    ``pulumi_policy`` receives the properties as a protobuf Struct, turns them into a dict
    with ``json_format.MessageToDict`` and ``deserialize_properties`` (numbers become
    floats), and wraps them in read-only proxies (``unknown_checking_proxy``): the objects
    ``json`` could not serialize. The pack cannot run under ``pulumi preview
    --policy-pack`` here, because Pulumi's Python language host is not published where this
    machine can build it; this is the same code path without the engine.
    """
    from google.protobuf import json_format, struct_pb2
    from pulumi_policy.deserialize import deserialize_properties
    from pulumi_policy.proxy import unknown_checking_proxy

    struct = json_format.ParseDict(
        json.loads(json.dumps(dict(resource.props))), struct_pb2.Struct()
    )
    props = unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(struct)))
    assert not isinstance(props, dict)  # a proxy, as in the engine
    return Resource(resource.urn, resource.name, resource.resource_type, props)


def test_engine_proxies_are_reviewed_like_plain_manifests(single_run: Any) -> None:
    resources = [_as_the_engine_hands_them(r) for r in _resources(single_run)]
    for resource in resources:
        assert check_resource(resource) == [], resource.urn
    assert check_stack(resources) == []


def test_engine_proxies_of_a_privileged_container_are_refused(single_run: Any) -> None:
    deployment = next(r for r in _resources(single_run) if r.props["kind"] == "Deployment")
    props = copy.deepcopy(dict(deployment.props))
    props["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    bad = Resource(deployment.urn, deployment.name, deployment.resource_type, props)
    findings = check_resource(_as_the_engine_hands_them(bad))
    assert any("privileged" in f.message for f in findings), findings
    assert all(f.urn == deployment.urn for f in findings)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_pack_needs_only_its_own_requirements() -> None:
    """Everything the pack imports is the standard library, its requirements, or the repo."""
    pack = REPO / "infra" / "policypack"
    settings = yaml.safe_load((pack / "PulumiPolicy.yaml").read_text())["runtime"]["options"]
    assert settings == {"toolchain": "pip", "virtualenv": "venv"}
    required = {
        line.split(">")[0].split("=")[0].split("<")[0].strip().replace("-", "_")
        for line in (pack / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert required == {"pulumi", "pulumi_policy"}
    seen: set[Path] = set()
    queue = [pack / "__main__.py"]
    third_party: set[str] = set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            top = module.split(".")[0]
            if top in ("infra", "service"):
                parts = module.split(".")
                # Importing a.b.c runs a/__init__.py and a/b/__init__.py too.
                queue += [REPO / Path(*parts[:n]) / "__init__.py" for n in range(1, len(parts))]
                target = REPO / Path(*parts)
                queue += [
                    p for p in (target.with_suffix(".py"), target / "__init__.py") if p.is_file()
                ]
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    assert third_party <= required, third_party - required
