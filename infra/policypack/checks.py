"""What the CrossGuard pack checks, without importing ``pulumi_policy``.

The pack's ``__main__`` adapts these functions to ``pulumi_policy``; tests call them
directly. Standard library and the standard-library-only ``service.toolchain.paths``
(the pack runs in its own virtualenv, with the repository importable).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from infra.policypack.opa_eval import admission_violations, find_opa_binary, manifest_from_props
from service.toolchain.paths import POLICIES_DIR, PROJECT_ROOT

# Per-resource reviews cannot see the stack's NetworkPolicies; the stack policy checks
# the default-deny requirement with the full inventory instead.
PER_RESOURCE_PARAMETERS = {"require_default_deny_network_policy": False}


@dataclass(frozen=True)
class Resource:
    """A resource as CrossGuard presents it."""

    urn: str
    name: str
    resource_type: str
    props: Mapping[str, Any]


@dataclass(frozen=True)
class Finding:
    """One violation to report against a resource URN."""

    urn: str
    message: str


def is_kubernetes(resource_type: str) -> bool:
    """True for pulumi-kubernetes resource types (not providers or components)."""
    return resource_type.startswith("kubernetes:")


def _findings(resources: list[Resource], *, per_resource: bool) -> list[Finding]:
    if not resources:
        return []
    manifests = [manifest_from_props(r.name, r.props) for r in resources]
    violations = admission_violations(
        find_opa_binary(PROJECT_ROOT),
        POLICIES_DIR,
        manifests,
        parameters=PER_RESOURCE_PARAMETERS if per_resource else None,
    )
    by_name = {
        (m["kind"], m["metadata"]["name"]): r.urn for m, r in zip(manifests, resources, strict=True)
    }
    return [
        Finding(by_name.get((v.kind, v.name), resources[0].urn), f"[ztml.admission] {v.msg}")
        for v in violations
    ]


def check_resource(resource: Resource) -> list[Finding]:
    """Review one Kubernetes resource on its own (no cross-resource rules)."""
    if not is_kubernetes(resource.resource_type):
        return []
    return _findings([resource], per_resource=True)


def check_stack(resources: Iterable[Resource]) -> list[Finding]:
    """Review every Kubernetes resource of the stack with the stack as the inventory."""
    return _findings([r for r in resources if is_kubernetes(r.resource_type)], per_resource=False)
