"""Properties every provisioned ztml stack has, checked with pytest-testinfra.

Run against any target::

    pytest tests/system/test_stack_properties.py --hosts=local://
    pytest tests/system/test_stack_properties.py \
        --hosts='kubectl://ztml-model?namespace=ztml&container=model'

Without ``--hosts`` the suite checks the local stack (``ztml up``) and the model pod of
the stack the real Pulumi engine deploys onto the local cluster (``kubectl://``, through
the cluster's kubeconfig; the host ``ztml-model`` names the Deployment and the suite
picks one of its running pods).
Properties of one kind of target only are in test_local_properties.py and
test_pod_properties.py.
"""

from __future__ import annotations

import json
import shlex
import stat
import tomllib
from pathlib import Path

import pytest

from service.toolchain.opa import OPA_VERSION
from service.toolchain.paths import PROJECT_ROOT
from tests.system.targets import (
    LOCKED,
    Target,
    http_status,
    kube_host,
    listening,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]

testinfra_hosts = ["local://", kube_host()]


def test_only_the_expected_ports_listen(host, target: Target):
    assert listening(host, target) == set(target.listeners)


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


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_health_endpoints_answer(host, target: Target, path: str):
    assert http_status(host, target, target.service_url + path) == 200


def test_model_api_refuses_unauthenticated_calls(host, target: Target):
    assert http_status(host, target, target.service_url + "/metadata") == 401


def test_opa_is_reachable_only_by_the_service(host, target: Target):
    if target.kind == "kubernetes":
        # OPA's API is a socket only the pod's user may open, in a volume only OPA and
        # the service mount (read-only for the service); no TCP port serves it.
        sock = host.file("/run/ztml-opa/opa.sock")
        assert sock.is_socket
        assert sock.mode == 0o600
        assert sock.uid == int(host.check_output("id -u"))
        assert http_status(host, target, "http://127.0.0.1:8282/v1/data") == 404
        assert http_status(host, target, "http://127.0.0.1:8282/health") == 200
        return
    stack = target.local
    assert stack is not None
    # OPA's API is a socket only the servers' user may open, in a directory only that user
    # may enter; its loopback port serves the read-only diagnostics, not the API.
    sock = host.file(stack.state.opa_socket)
    directory = host.file(str(Path(stack.state.opa_socket).parent))
    service_user = host.check_output(f"ps -o user= -p {stack.state.service.pid}")
    assert sock.is_socket
    assert sock.mode == 0o600
    assert directory.mode == 0o700
    assert sock.user == directory.user == service_user
    port = stack.state.opa.port
    assert http_status(host, target, f"http://127.0.0.1:{port}/v1/data") == 404
    assert http_status(host, target, f"http://127.0.0.1:{port}/health") == 200


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
