"""`ztml up` end to end: the printed example works, and stopping leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from service.stack.state import read_state

pytestmark = pytest.mark.system
ZTML = str(Path(sys.executable).parent / "ztml")


def ztml(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ZTML, *args],
        env={**os.environ, "ZTML_HOME": str(home), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def family(pid: int) -> list[int]:
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def listening_ports(pids: list[int]) -> set[tuple[str, int]]:
    found = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == "LISTEN"}
    return found


def run_example(stdout: str) -> dict[str, object]:
    command = next(line for line in stdout.splitlines() if line.startswith("curl "))
    result = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_detached_up_serves_the_printed_example_and_down_stops_everything(up_home: Path) -> None:
    result = ztml(up_home, "up", "--detach")
    assert result.returncode == 0, result.stdout + result.stderr
    state = read_state(up_home)
    assert state is not None
    pids = family(state.service.pid) + family(state.opa.pid)
    assert len(pids) >= 3  # OPA, the BentoML arbiter and its worker
    try:
        assert listening_ports(family(state.service.pid)) == {("127.0.0.1", state.service.port)}
        assert listening_ports(family(state.opa.pid)) == {("127.0.0.1", state.opa.port)}
        (opa,) = [
            psutil.Process(p) for p in family(state.opa.pid) if psutil.Process(p).name() == "opa"
        ]
        environ = opa.environ()  # as the cluster sidecar runs it
        assert (environ.get("GOMAXPROCS"), environ.get("GOGC")) == ("1", "400")
        assert "--optimize-store-for-read-speed" in opa.cmdline()
        answer = run_example(result.stdout)
        assert answer["model"]["digest"] == state.model_digest  # type: ignore[index]
        assert len(answer["predictions"]) == 1  # type: ignore[arg-type]
        assert "audit" in result.stdout and "ledger" in result.stdout
        again = ztml(up_home, "up", "--detach")
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        down = ztml(up_home, "down")
    assert down.returncode == 0, down.stderr
    assert gone(pids)
    assert read_state(up_home) is None
    verify = ztml(up_home, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_second_up_reuses_the_model_and_ctrl_c_stops_cleanly(up_home: Path) -> None:
    first = ztml(up_home, "up", "--detach")
    assert first.returncode == 0, first.stderr
    assert "registered with the trainer key" in first.stdout
    assert ztml(up_home, "down").returncode == 0
    (up_home / "run" / "example-request.sh").unlink()
    proc = subprocess.Popen(
        [ZTML, "up"],
        env={**os.environ, "ZTML_HOME": str(up_home), "COLUMNS": "400"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    example = up_home / "run" / "example-request.sh"
    while not example.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    state = read_state(up_home)
    assert state is not None, proc.stderr.read() if proc.stderr else ""
    pids = family(state.service.pid) + family(state.opa.pid)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert "reused" in stdout and "registered with the trainer key" not in stdout
    assert "stopped." in stdout
    assert gone(pids)


def test_port_in_use_is_a_clear_error(up_home: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = ztml(up_home, "up", "--detach", "--port", str(port))
    assert result.returncode == 1
    assert f"Port {port}" in result.stderr and "Traceback" not in result.stderr
    assert read_state(up_home) is None


def test_missing_opa_is_a_clear_error_with_how_to_install(up_home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    result = subprocess.run(
        [ZTML, "up", "--detach"],
        env={
            **os.environ,
            "ZTML_HOME": str(up_home),
            "ZTML_TOOLS": str(empty),
            "ZTML_OPA": str(empty / "opa"),
            "PATH": "/usr/bin:/bin",
            "COLUMNS": "400",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    assert "OPA" in result.stderr and "install" in result.stderr
    assert "Traceback" not in result.stderr
    assert read_state(up_home) is None


def test_tampered_demo_model_is_refused_not_re_registered(up_home: Path) -> None:
    from service.stack.provision import demo_model_dir

    artifact = demo_model_dir(up_home) / "model.safetensors"
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0x01
    artifact.write_bytes(bytes(data))
    result = ztml(up_home, "up", "--detach")
    assert result.returncode == 1
    assert "digest" in result.stderr and "Traceback" not in result.stderr
    assert read_state(up_home) is None
