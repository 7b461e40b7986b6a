"""Where the local cluster keeps its state, and the addresses it uses.

One directory holds everything ``up`` creates (``$ZTML_CLUSTER_DIR``, default
``/var/lib/ztml-cluster``): certificates, etcd's data, rendered configuration, logs,
PID files and containerd's stores. ``down`` removes it whole.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = "ztml-node"
CONTEXT = "ztml-local"
CLUSTER_NAME = "ztml-local"
POD_CIDR = "10.244.0.0/16"
NODE_POD_SUBNET = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
BRIDGE = "ztml0"
API_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380


def node_ip() -> str:
    """Return the machine's own address: the source address of its default route.

    The API server and kubelet listen on it; pods reach the API server through it.
    A connected UDP socket sends nothing; it only asks the kernel which address it would
    use.
    """
    if explicit := os.environ.get("ZTML_NODE_IP"):
        return str(ipaddress.ip_address(explicit))
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never sent to, only routed
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


@dataclass(frozen=True)
class Layout:
    """The paths of one cluster's state."""

    root: Path

    @classmethod
    def default(cls) -> Layout:
        """Return the layout under ``$ZTML_CLUSTER_DIR`` (default ``/var/lib/ztml-cluster``)."""
        return cls(Path(os.environ.get("ZTML_CLUSTER_DIR", "/var/lib/ztml-cluster")))

    @property
    def pki(self) -> Path:
        """Return the Kubernetes CA's directory."""
        return self.root / "pki"

    @property
    def etcd_pki(self) -> Path:
        """Return the etcd CA's directory."""
        return self.root / "pki" / "etcd"

    @property
    def etcd_data(self) -> Path:
        """Return etcd's data directory."""
        return self.root / "etcd"

    @property
    def config(self) -> Path:
        """Return the directory of rendered configuration files."""
        return self.root / "config"

    @property
    def cni_conf(self) -> Path:
        """Return the CNI configuration directory containerd reads."""
        return self.root / "cni" / "net.d"

    @property
    def containerd(self) -> Path:
        """Return containerd's root and state parent directory."""
        return self.root / "containerd"

    @property
    def kubelet(self) -> Path:
        """Return kubelet's root directory (pods' volumes are mounted below it)."""
        return self.root / "kubelet"

    @property
    def logs(self) -> Path:
        """Return the directory of component logs and the API server's audit log."""
        return self.root / "log"

    @property
    def run(self) -> Path:
        """Return the directory of PID files and sockets."""
        return self.root / "run"

    @property
    def containerd_socket(self) -> Path:
        """Return the cluster's own containerd socket."""
        return self.run / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        """Return the administrator's kubeconfig."""
        return self.root / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """Return the API server's audit log."""
        return self.logs / "audit.log"

    @property
    def volumes(self) -> Path:
        """Where the ``local-path`` provisioner creates each volume's directory."""
        return self.root / "volumes"

    def pid_file(self, component: str) -> Path:
        """Return the PID file of ``component``."""
        return self.run / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        """Return the log file of ``component``."""
        return self.logs / f"{component}.log"
