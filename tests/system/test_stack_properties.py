"""Properties of a provisioned ztml stack, checked with pytest-testinfra.

Run against any target::

    pytest tests/system/test_stack_properties.py --hosts=local://
    pytest tests/system/test_stack_properties.py \
        --hosts='kubectl://<pod>?namespace=ztml&container=model'

Without ``--hosts`` the suite checks the local stack and every model pod of the current
kube context (skipped, with the reason, when there is no context).
"""

from __future__ import annotations

import json
import re
import shlex
import ssl
import stat
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.authn.tls import DevCertificates
from service.stack.runner import opa_client_context, tls_dir
from service.toolchain.opa import OPA_VERSION
from service.toolchain.paths import PROJECT_ROOT
from tests.system.conftest import LocalStack

pytestmark = [pytest.mark.system, pytest.mark.slow]

NAMESPACE = "ztml"
POD_SELECTOR = "app.kubernetes.io/name=ztml-model"
SENTINEL_POD = "ztml-model"
LOCKED = ("torch", "bentoml", "cryptography", "pyjwt", "rfc8785", "opa-python-client", "numpy")


def _kube_context() -> str | None:
    try:
        proc = subprocess.run(
            ["kubectl", "config", "current-context"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _kube_hosts() -> list[str]:
    pods: list[str] = []
    if _kube_context():
        proc = subprocess.run(
            ["kubectl", "get", "pods", "-n", NAMESPACE, "-l", POD_SELECTOR, "-o", "name"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        pods = [line.split("/", 1)[-1] for line in proc.stdout.split()]
    return [
        f"kubectl://{pod}?namespace={NAMESPACE}&container=model" for pod in pods or [SENTINEL_POD]
    ]


testinfra_hosts = ["local://", *_kube_hosts()]


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


def _stack_pids(host, leaders: tuple[int, ...]) -> frozenset[int]:
    rows = host.check_output("ps -eo pid=,pgid=").splitlines()
    return frozenset(
        int(pid) for pid, pgid in (row.split() for row in rows) if int(pgid) in leaders
    )


@pytest.fixture
def target(host, request: pytest.FixtureRequest) -> Target:
    """The expectations for the host under test."""
    if host.backend.NAME == "kubectl":
        if _kube_context() is None:
            pytest.skip(
                "no Kubernetes context is configured (`kubectl config current-context` failed): "
                "provision with `pulumi up` (see infra/README.md) and run "
                "`pytest tests/system --hosts='kubectl://POD?namespace=ztml&container=model'`"
            )
        return Target(
            kind="kubernetes",
            # service, OPA's API on the pod's loopback, OPA's read-only diagnostics for probes
            listeners=frozenset({("0.0.0.0", 3000), ("127.0.0.1", 8181), ("0.0.0.0", 8282)}),
            pids=frozenset(),
            home=Path("/var/lib/ztml"),
            keys_dir=Path("/var/lib/ztml/keys"),
            service_url="http://127.0.0.1:3000",
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
    )


def _listening(host, target: Target) -> set[tuple[str, int]]:
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


def test_only_the_expected_ports_listen(host, target: Target):
    assert _listening(host, target) == set(target.listeners)


def test_local_listeners_are_bound_to_loopback_only(host, target: Target):
    if target.kind != "local":
        pytest.skip("binding to loopback is a property of the local stack")
    assert all(addr == "127.0.0.1" for addr, _ in _listening(host, target))


def test_processes_run_as_non_root_users(host, target: Target):
    if target.kind == "kubernetes":
        assert host.check_output("id -u") != "0"
        return
    users = {host.check_output(f"ps -o user= -p {pid}") for pid in target.pids}
    assert target.pids, "no stack processes found"
    assert "root" not in users, f"stack processes run as {users}"


def test_private_keys_are_0600_in_a_0700_directory(host, target: Target):
    keys = host.file(str(target.keys_dir))
    if target.kind == "kubernetes" and not keys.exists:
        pytest.skip("this pod holds no private keys (public trust keys only)")
    assert keys.is_directory
    assert keys.mode == 0o700, f"{target.keys_dir} has mode {keys.mode:o}"
    private = [p for p in keys.listdir() if p.endswith(".key")]
    assert private, "no private keys found"
    for name in private:
        mode = host.file(str(target.keys_dir / name)).mode
        assert mode == 0o600, f"{name} has mode {mode:o}"


@pytest.mark.parametrize("relative", ["audit", "ledger.db", "review.db"])
def test_records_are_not_world_readable(host, target: Target, relative: str):
    path = host.file(str(target.home / relative))
    if not path.exists:
        pytest.skip(f"{relative} does not exist on this target")
    assert path.mode & (stat.S_IRWXO) == 0, f"{relative} has mode {path.mode:o}"


def test_root_filesystem_is_read_only(host, target: Target):
    if target.kind != "kubernetes":
        pytest.skip("read-only root filesystems are a property of the pods")
    result = host.run("touch /ztml-probe")
    assert result.rc != 0


def test_no_service_account_token_is_mounted(host, target: Target):
    if target.kind != "kubernetes":
        pytest.skip("service-account tokens exist only in pods")
    assert not host.file("/var/run/secrets/kubernetes.io/serviceaccount/token").exists


def _http_status(host, target: Target, url: str, *extra: str) -> int:
    code = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen({url!r}, timeout=5); print(r.status)\n"
        "except urllib.error.HTTPError as e: print(e.code)\n"
        "except Exception as e: print(0)\n"
    )
    return int(host.check_output(f"{target.python} -c {shlex.quote(code)}"))


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_health_endpoints_answer(host, target: Target, path: str):
    assert _http_status(host, target, target.service_url + path) == 200


def test_model_api_refuses_unauthenticated_calls(host, target: Target):
    assert _http_status(host, target, target.service_url + "/metadata") == 401


def test_opa_is_reachable_only_by_the_service(host, target: Target):
    if target.kind == "kubernetes":
        # The sidecar's API listens on the pod's loopback only (see the listener test).
        assert ("127.0.0.1", 8181) in _listening(host, target)
        return
    stack = target.local
    assert stack is not None
    port = stack.state.opa.port
    # Plain HTTP is not served, and a TLS client without the service's certificate is
    # refused during the handshake even when it trusts the stack's CA.
    assert _http_status(host, target, f"http://127.0.0.1:{port}/health") != 200
    certs = DevCertificates.in_directory(tls_dir(stack.home))
    anonymous = ssl.create_default_context(cafile=str(certs.ca_cert))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://127.0.0.1:{port}/health", verify=anonymous, timeout=5)
    service = opa_client_context(certs)
    assert (
        httpx.get(f"https://127.0.0.1:{port}/health", verify=service, timeout=5).status_code == 200
    )


def test_versions_match_the_lock(host, target: Target):
    lock = tomllib.loads((PROJECT_ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"] if p["name"] in LOCKED}
    code = (
        "import json; from importlib.metadata import version; "
        f"print(json.dumps({{n: version(n) for n in {sorted(locked)!r}}}))"
    )
    installed = json.loads(host.check_output(f"{target.python} -c {shlex.quote(code)}"))
    assert installed == locked
    if target.kind == "local":
        opa = host.check_output(f"{PROJECT_ROOT / '.tools/bin/opa'} version")
        assert f"Version: {OPA_VERSION}" in opa
