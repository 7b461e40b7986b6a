"""The configuration files of the local cluster's components, rendered from one place.

Files are written as JSON, which every component reads as YAML.

Security settings, each chosen for a zero-trust cluster:
- every connection is TLS with client certificates (etcd peers and clients, API server,
  kubelet);
- the API server authorizes with the Node authorizer and RBAC, admits with
  NodeRestriction and PodSecurity, refuses anonymous requests, encrypts Secrets at rest in
  etcd (secretbox), and writes an audit log;
- kubelet refuses anonymous requests, asks the API server to authorize every request
  (webhook) and has no read-only port;
- containerd's CRI never pulls (images are imported), runs pods under runc, and lets the
  CNI bridge give pods addresses without masquerading.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from service.cluster.layout import (
    API_PORT,
    BRIDGE,
    CLUSTER_DOMAIN,
    CLUSTER_NAME,
    CONTEXT,
    DNS_SERVICE_IP,
    NODE_POD_SUBNET,
    POD_CIDR,
    Layout,
)

CNI_BIN_DIR = "/usr/lib/cni"


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def kubeconfig(
    layout: Layout, *, name: str, server: str, cert: Path, key: Path, context: str = CONTEXT
) -> Path:
    """Write a kubeconfig for one client certificate; return its path."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": server,
                    "certificate-authority": str(layout.pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {"name": name, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": context, "context": {"cluster": CLUSTER_NAME, "user": name}}],
        "current-context": context,
    }
    target = layout.kubeconfig if name == "admin" else layout.config / f"{name}.kubeconfig"
    return _write(target, json.dumps(document, indent=2), 0o600)


def encryption_config(layout: Layout) -> Path:
    """Write the EncryptionConfiguration (secretbox for Secrets) once; return its path."""
    path = layout.config / "encryption.json"
    if path.exists():
        return path
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    document = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"secretbox": {"keys": [{"name": "key1", "secret": key}]}},
                    {"identity": {}},
                ],
            }
        ],
    }
    return _write(path, json.dumps(document, indent=2), 0o600)


def audit_policy(layout: Layout) -> Path:
    """Write the API server's audit policy: metadata for everything, no bodies of Secrets."""
    document = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*"]},
            {"level": "Metadata", "resources": [{"group": "", "resources": ["secrets"]}]},
            {"level": "Metadata"},
        ],
    }
    return _write(layout.config / "audit-policy.json", json.dumps(document, indent=2))


def containerd_config(layout: Layout, *, sandbox_image: str) -> Path:
    """Write containerd's configuration (its own root, state and socket); return its path.

    ``restrict_oom_score_adj`` keeps runc from asking for an OOM score adjustment that
    root without CAP_SYS_RESOURCE may not set (every sandbox would fail otherwise).
    """
    root = layout.containerd
    text = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"

[grpc]
  address = "{layout.containerd_socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{layout.cni_conf}"
"""
    return _write(layout.config / "containerd.toml", text)


def cni_config(layout: Layout) -> Path:
    """Write the pod network: a bridge with host-local addresses and no masquerading."""
    document = {
        "cniVersion": "1.0.0",
        "name": "ztml",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return _write(layout.cni_conf / "10-ztml.conflist", json.dumps(document, indent=2))


def kubelet_config(layout: Layout, *, tls_cert: Path, tls_key: Path) -> Path:
    """Write the KubeletConfiguration: webhook authn/authz, no anonymous, no read-only port."""
    resolv = _write(layout.config / "resolv.conf", "nameserver 127.0.0.1\n")
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [DNS_SERVICE_IP],
        "resolvConf": str(resolv),
        "tlsCertFile": str(tls_cert),
        "tlsPrivateKeyFile": str(tls_key),
        "tlsMinVersion": "VersionTLS12",
        "readOnlyPort": 0,
        "failSwapOn": False,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # Imported images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "podPidsLimit": 4096,
        "maxPods": 60,
        "healthzBindAddress": "127.0.0.1",
    }
    return _write(layout.config / "kubelet.json", json.dumps(document, indent=2))


def kube_proxy_config(layout: Layout, *, kubeconfig_path: Path, node_name: str) -> Path:
    """Write kube-proxy's configuration (iptables mode, health and metrics on loopback)."""
    document = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig_path)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": node_name,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"localhostNodePorts": False},
    }
    return _write(layout.config / "kube-proxy.json", json.dumps(document, indent=2))


def api_server_url(ip: str) -> str:
    """Return the API server's URL on the node's address."""
    return f"https://{ip}:{API_PORT}"
