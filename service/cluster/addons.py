"""What ``up`` declares inside the cluster once the API server answers.

- RBAC for kube-router's firewall (it reads pods, namespaces and NetworkPolicies);
- CoreDNS in ``kube-system`` (labelled ``k8s-app: kube-dns`` as every cluster labels it,
  so DNS egress rules that name it work unchanged), behind the ``kube-dns`` Service at
  the cluster's DNS address. It answers only for the cluster's zones and forwards
  nothing: no pod query leaves the machine. It runs as a restricted pod (numeric
  non-root user, no capabilities, read-only root, RuntimeDefault seccomp) and listens on
  port 53 itself, as on k3s and kubeadm clusters, thanks to the namespaced safe sysctl
  ``net.ipv4.ip_unprivileged_port_start``: NetworkPolicies match the pod's port after the
  Service's translation, so DNS rules written for port 53 work unchanged.
- the ``local-path`` StorageClass (the cluster default, as on k3s/k3d) served by
  local-path-provisioner, which runs as a host process like kube-router and creates
  each volume's directory through a short-lived helper pod in ``local-path-storage``.
  Volumes live under the cluster's state directory on the one node and are deleted with
  their claim (reclaim policy Delete); as a shared filesystem, every access mode binds.
"""

from __future__ import annotations

from typing import Any

from service.cluster.layout import CLUSTER_DOMAIN, DNS_SERVICE_IP

KUBE_ROUTER_USER = "ztml:kube-router"
LOCAL_PATH_USER = "ztml:local-path-provisioner"
LOCAL_PATH_NAMESPACE = "local-path-storage"
LOCAL_PATH_CONFIG_MAP = "local-path-config"
LOCAL_PATH_HELPER_ACCOUNT = "local-path-helper"
STORAGE_CLASS = "local-path"
LOCAL_PATH_PROVISIONER = "rancher.io/local-path"
# The helper pod creates a volume's directory world-writable (the pod that mounts it
# runs as its own numeric user; hostPath volumes get no fsGroup) and removes it again.
LOCAL_PATH_SETUP = """#!/bin/sh
set -eu
mkdir -m 0777 -p "$VOL_DIR"
"""
LOCAL_PATH_TEARDOWN = """#!/bin/sh
set -eu
rm -rf "$VOL_DIR"
"""
DNS_PORT = 53
COREFILE = f"""\
.:{DNS_PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
    loop
    reload
}}
"""
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _read_rule(groups: list[str], resources: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": ["get", "list", "watch"]}


def kube_router_rbac() -> list[dict[str, Any]]:
    """Return the ClusterRole and binding for kube-router's client certificate user."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "ztml:kube-router"},
            "rules": [
                _read_rule([""], ["namespaces", "pods", "services", "endpoints", "nodes"]),
                _read_rule(["networking.k8s.io"], ["networkpolicies"]),
                _read_rule(["discovery.k8s.io"], ["endpointslices"]),
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ztml:kube-router"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "ztml:kube-router",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBE_ROUTER_USER}
            ],
        },
    ]


def coredns(image: str) -> list[dict[str, Any]]:
    """Return CoreDNS's ServiceAccount, RBAC, ConfigMap, Deployment and Service."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"namespace": "kube-system", "labels": labels}
    probe_port = {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "ztml:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ztml:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "ztml:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", **meta},
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", **meta},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            # Port 53 without a capability (a safe, namespaced sysctl).
                            "sysctls": [
                                {"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}
                            ],
                        },
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": DNS_PORT, "protocol": "UDP"},
                                    {
                                        "name": "dns-tcp",
                                        "containerPort": DNS_PORT,
                                        "protocol": "TCP",
                                    },
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": probe_port,
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": RESTRICTED_CONTAINER,
                                "volumeMounts": [
                                    {
                                        "name": "config",
                                        "mountPath": "/etc/coredns",
                                        "readOnly": True,
                                    }
                                ],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", **meta},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": DNS_PORT, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": DNS_PORT, "protocol": "TCP"},
                ],
            },
        },
    ]


def local_path_config(volumes_dir: str) -> str:
    """Return local-path-provisioner's config.json: one shared directory on the node."""
    import json

    return json.dumps({"sharedFileSystemPath": volumes_dir}, indent=2)


def local_path_helper_pod(image: str) -> str:
    """Return the helper pod template (JSON is YAML) the provisioner fills in per volume.

    It runs as root (the volume root belongs to root) with only ``DAC_OVERRIDE`` (to
    remove files the workload's user wrote), a read-only root and RuntimeDefault seccomp.
    """
    import json

    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "helper-pod"},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [
                    {
                        "name": "helper-pod",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "securityContext": {
                            "runAsUser": 0,
                            "runAsGroup": 0,
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]},
                        },
                        "resources": {
                            "requests": {"cpu": "10m", "memory": "8Mi"},
                            "limits": {"memory": "32Mi"},
                        },
                    }
                ],
            },
        },
        indent=2,
    )


def local_path(image: str, volumes_dir: str) -> list[dict[str, Any]]:
    """Return the provisioner's namespace, RBAC, helper ConfigMap and the StorageClass."""
    ns = LOCAL_PATH_NAMESPACE
    user = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": LOCAL_PATH_USER}
    write = ["get", "list", "watch", "create", "patch", "update", "delete"]
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                # hostPath helper pods: baseline refuses them; nothing else runs here and
                # only the provisioner's user may create pods in it (RBAC below).
                "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": LOCAL_PATH_HELPER_ACCOUNT, "namespace": ns},
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": LOCAL_PATH_CONFIG_MAP, "namespace": ns},
            "data": {
                "config.json": local_path_config(volumes_dir),
                "setup": LOCAL_PATH_SETUP,
                "teardown": LOCAL_PATH_TEARDOWN,
                "helperPod.yaml": local_path_helper_pod(image),
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": LOCAL_PATH_USER},
            "rules": [
                _read_rule([""], ["nodes", "persistentvolumeclaims", "configmaps", "pods"]),
                {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": write},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                _read_rule(["storage.k8s.io"], ["storageclasses"]),
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": LOCAL_PATH_USER},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": LOCAL_PATH_USER,
            },
            "subjects": [user],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": LOCAL_PATH_USER, "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": write}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": LOCAL_PATH_USER, "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": LOCAL_PATH_USER,
            },
            "subjects": [user],
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": LOCAL_PATH_PROVISIONER,
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        },
    ]
