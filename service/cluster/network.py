"""The node's network: kernel switches, the egress guard, and cleaning up what pods leave.

Pod traffic never leaves the machine. The guard sits in the ``raw`` table's PREROUTING
chain, which every packet from a pod traverses before any NAT or filter rule of
kube-proxy, kube-router or the CNI plugins can accept it: a packet from the pod network
is dropped unless it is addressed to the pod network, the Service range or the node's
own address. The CNI bridge does not masquerade.

``down`` removes every chain the cluster's parts create (``KUBE-*`` of kube-proxy and
kube-router, ``CNI-*`` of the portmap plugin, ``ZTML-*`` of the guard), their ipsets,
the bridge and the pods' network namespaces.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from service.cluster.errors import ClusterStartError
from service.cluster.layout import BRIDGE, POD_CIDR, SERVICE_CIDR

GUARD_CHAIN = "ZTML-EGRESS-GUARD"
CHAIN_PREFIXES = ("KUBE-", "CNI-", "ZTML-")
IPSET_PREFIXES = ("KUBE-", "kube-router")
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
}
NETNS_DIR = Path("/run/netns")


def _iptables(*args: str, binary: str = "iptables") -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, "-w", *args], capture_output=True, text=True, check=False)


def enable_forwarding() -> None:
    """Turn on IP forwarding and bridge netfilter (Services and policies need both).

    Raises:
        ClusterStartError: a switch cannot be set.
    """
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        try:
            path.write_text(value)
        except OSError as err:
            raise ClusterStartError(f"cannot set {key.replace('/', '.')}={value}: {err}") from None


def install_egress_guard(node_ip: str) -> None:
    """Insert the guard that drops pod traffic to any address outside this machine.

    Idempotent: the chain is rebuilt and jumped to once, first in ``raw`` PREROUTING.

    Raises:
        ClusterStartError: iptables refused a rule.
    """
    _iptables("-t", "raw", "-N", GUARD_CHAIN)
    _iptables("-t", "raw", "-F", GUARD_CHAIN)
    rules = [
        ["-d", POD_CIDR, "-j", "RETURN"],
        ["-d", SERVICE_CIDR, "-j", "RETURN"],
        ["-d", f"{node_ip}/32", "-j", "RETURN"],
        ["-s", POD_CIDR, "-j", "DROP"],
    ]
    for rule in rules:
        proc = _iptables("-t", "raw", "-A", GUARD_CHAIN, *rule)
        if proc.returncode != 0:
            raise ClusterStartError(f"iptables refused the egress guard: {proc.stderr.strip()}")
    if _iptables("-t", "raw", "-C", "PREROUTING", "-j", GUARD_CHAIN).returncode != 0:
        proc = _iptables("-t", "raw", "-I", "PREROUTING", "1", "-j", GUARD_CHAIN)
        if proc.returncode != 0:
            raise ClusterStartError(f"iptables refused the egress guard: {proc.stderr.strip()}")


def guard_installed() -> bool:
    """Return True when raw PREROUTING jumps to the guard first."""
    out = subprocess.run(
        ["iptables-save", "-t", "raw"], capture_output=True, text=True, check=False
    ).stdout
    jumps = [line for line in out.splitlines() if line.startswith("-A PREROUTING")]
    return bool(jumps) and jumps[0] == f"-A PREROUTING -j {GUARD_CHAIN}"


def guard_rules() -> list[str]:
    """Return the guard chain's rules as ``iptables-save`` prints them."""
    out = subprocess.run(
        ["iptables-save", "-t", "raw"], capture_output=True, text=True, check=False
    ).stdout
    return [line for line in out.splitlines() if line.startswith(f"-A {GUARD_CHAIN} ")]


def _ours(chain: str) -> bool:
    return chain.startswith(CHAIN_PREFIXES)


def remove_chains() -> list[str]:
    """Delete every rule that jumps to a cluster chain, then the chains; return their names."""
    removed: list[str] = []
    for save, binary in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        for table in ("raw", "mangle", "nat", "filter"):
            dump = subprocess.run(
                [save, "-t", table], capture_output=True, text=True, check=False
            ).stdout
            chains = [m for m in re.findall(r"^:(\S+)", dump, re.MULTILINE) if _ours(m)]
            if not chains:
                continue
            for line in dump.splitlines():
                match = re.match(r"^-A (\S+) (.*-j (\S+).*)$", line)
                if match and not _ours(match.group(1)) and _ours(match.group(3)):
                    rule = shlex.split(match.group(2))
                    _iptables("-t", table, "-D", match.group(1), *rule, binary=binary)
            for chain in chains:
                _iptables("-t", table, "-F", chain, binary=binary)
            for chain in chains:
                if _iptables("-t", table, "-X", chain, binary=binary).returncode == 0:
                    removed.append(f"{binary}/{table}/{chain}")
    return removed


def remove_ipsets() -> list[str]:
    """Destroy the ipsets kube-router created; return their names."""
    names = subprocess.run(
        ["ipset", "list", "-n"], capture_output=True, text=True, check=False
    ).stdout.split()
    ours = [n for n in names if n.startswith(IPSET_PREFIXES)]
    for name in ours:
        subprocess.run(["ipset", "flush", name], capture_output=True, check=False)
    for name in ours:
        subprocess.run(["ipset", "destroy", name], capture_output=True, check=False)
    return ours


def remove_pod_network() -> None:
    """Remove the pods' network namespaces and the bridge."""
    if NETNS_DIR.is_dir():
        for netns in NETNS_DIR.glob("cni-*"):
            subprocess.run(["ip", "netns", "delete", netns.name], capture_output=True, check=False)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)


def leftovers() -> list[str]:
    """Return what of the cluster's network is still there (empty after ``down``)."""
    found: list[str] = []
    for save in ("iptables-save", "ip6tables-save"):
        dump = subprocess.run([save], capture_output=True, text=True, check=False).stdout
        found += [
            f"{save}: chain {c}" for c in re.findall(r"^:(\S+)", dump, re.MULTILINE) if _ours(c)
        ]
    names = subprocess.run(
        ["ipset", "list", "-n"], capture_output=True, text=True, check=False
    ).stdout.split()
    found += [f"ipset {n}" for n in names if n.startswith(IPSET_PREFIXES)]
    if (
        subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode
        == 0
    ):
        found.append(f"interface {BRIDGE}")
    if NETNS_DIR.is_dir():
        found += [f"netns {n.name}" for n in NETNS_DIR.glob("cni-*")]
    return found
