"""What each target of the testinfra checks is expected to look like (a plugin: the
``target`` fixture serves every module of tests/system).

Two targets: the local stack (``local://``, started by ``ztml up``) and the model pod of
the stack the real Pulumi engine deploys onto the local cluster (``kubectl://``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.toolchain.paths import PROJECT_ROOT
from tests.system.conftest import LocalStack

NAMESPACE = "ztml"
WORKLOAD = "ztml-model"
LOCKED = ("torch", "bentoml", "cryptography", "pyjwt", "rfc8785", "model-signing", "numpy")


def kube_host() -> str:
    """The testinfra host of the model pod of the stack deployed onto the local cluster.

    It names the Deployment (``ztml-model``); :func:`target` puts the name of one of its
    running pods in its place once the stack is deployed.
    """
    from service.cluster.layout import Layout

    kubeconfig = Layout.default().kubeconfig
    return f"kubectl://{WORKLOAD}?namespace={NAMESPACE}&container=model&kubeconfig={kubeconfig}"


def _running_pod(host) -> str:
    """Return a running pod of the Deployment ``host`` names (or ``host``'s pod itself)."""
    import subprocess

    backend = host.backend
    if backend.name != WORKLOAD:
        return str(backend.name)
    command = ["kubectl", "-n", backend.namespace or NAMESPACE, "get", "pods"]
    if backend.kubeconfig:
        command.append(f"--kubeconfig={backend.kubeconfig}")
    command += [
        "-l",
        f"app.kubernetes.io/name={WORKLOAD}",
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"no running pod of deployment/{WORKLOAD}: {proc.stderr.strip()}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class Target:
    """What a target is expected to look like."""

    kind: str  # "local" or "kubernetes"
    listeners: frozenset[tuple[str, int]]
    pids: frozenset[int]
    home: Path
    keys_dir: Path
    service_url: str
    python: str
    local: LocalStack | None = None
    ca_file: str | None = None


def _stack_pids(host, leaders: tuple[int, ...]) -> frozenset[int]:
    rows = host.check_output("ps -eo pid=,pgid=").splitlines()
    return frozenset(
        int(pid) for pid, pgid in (row.split() for row in rows) if int(pgid) in leaders
    )


@pytest.fixture
def target(host, request: pytest.FixtureRequest) -> Target:
    """The expectations for the host under test."""
    if host.backend.NAME == "kubectl":
        if request.config.option.hosts is None:
            # The default target: the stack the engine deploys onto the local cluster.
            request.getfixturevalue("cluster_stack")
        host.backend.name = _running_pod(host)
        return Target(
            kind="kubernetes",
            # The service, and OPA's read-only diagnostics for the kubelet's probes; OPA's
            # API is a Unix socket, not a port.
            # (OPA's Go listener for 0.0.0.0 shows as the dual-stack "::").
            listeners=frozenset({("0.0.0.0", 3000), ("::", 8282)}),
            pids=frozenset(),
            home=Path("/var/lib/ztml"),
            keys_dir=Path("/var/lib/ztml/keys"),
            # HTTPS over the pod's loopback: the certificate names the Service's DNS names,
            # and the stack's CA is not in the pod, so this check, like the kubelet's HTTPS
            # probe, does not verify it (ca_file None); the cluster tests verify it.
            service_url="https://127.0.0.1:3000",
            python="python",
        )
    if host.backend.NAME != "local":
        pytest.skip(
            f"backend {host.backend.NAME} is not a ztml target (use local:// or kubectl://)"
        )
    stack = request.getfixturevalue("local_stack")
    state = stack.state
    return Target(
        kind="local",
        listeners=frozenset({("127.0.0.1", state.opa.port), ("127.0.0.1", state.service.port)}),
        pids=_stack_pids(host, (state.opa.pid, state.service.pid)),
        home=stack.home,
        keys_dir=stack.home / "keys",
        service_url=state.service_url,
        python=str(PROJECT_ROOT / ".venv" / "bin" / "python"),
        local=stack,
        ca_file=state.ca_file,
    )


def listening(host, target: Target) -> set[tuple[str, int]]:
    if target.kind == "local":
        out = host.check_output("ss -ltnpH")
        found = set()
        for line in out.splitlines():
            pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
            if pids & target.pids:
                local = line.split()[3]
                addr, _, port = local.rpartition(":")
                found.add((addr.strip("[]"), int(port)))
        return found
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = host.file(table).content_string if host.file(table).exists else ""
        for row in text.splitlines()[1:]:
            cols = row.split()
            if cols[3] != "0A":  # LISTEN
                continue
            hex_addr, hex_port = cols[1].split(":")
            if len(hex_addr) == 8:
                addr = ".".join(str(int(hex_addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                addr = "::" if set(hex_addr) == {"0"} else "ipv6"
            found.add((addr, int(hex_port, 16)))
    return found


def http_status(host, target: Target, url: str, *extra: str) -> int:
    """The status ``url`` answers on the target (0 when no answer), trusting the stack's CA.

    Without a CA file (in a pod) the certificate is not verified, as by the kubelet's probes.
    """
    make_context = (
        f"ssl.create_default_context(cafile={target.ca_file!r})"
        if target.ca_file
        else "ssl._create_unverified_context()"
    )
    code = (
        "import ssl, sys, urllib.request, urllib.error\n"
        f"context = {make_context}\n"
        "try:\n"
        f"    r = urllib.request.urlopen({url!r}, timeout=5, context=context); print(r.status)\n"
        "except urllib.error.HTTPError as e: print(e.code)\n"
        "except Exception as e: print(0)\n"
    )
    return int(host.check_output(f"{target.python} -c {shlex.quote(code)}"))
