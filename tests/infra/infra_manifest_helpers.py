"""Helpers for reading pod specs out of captured manifests (infra tests only)."""

from __future__ import annotations

from typing import Any

POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def pod_template_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a workload manifest (the manifest itself for a Pod)."""
    if manifest["kind"] == "Pod":
        return manifest
    node: Any = manifest
    for key in POD_TEMPLATE_PATHS[manifest["kind"]]:
        node = node[key]
    return node


def pod_spec_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a workload manifest."""
    return pod_template_of(manifest)["spec"]


def containers_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container (init, regular, ephemeral) of a workload manifest."""
    spec = pod_spec_of(manifest)
    return [
        c
        for field in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(field, [])
    ]
