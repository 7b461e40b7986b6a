"""Fixtures for the policy tests: the pinned OPA binary, the example inputs and a real OPA server.

The OPA server is started the way the service runs it: ``opa run --server`` on a free
loopback port with ``policies/config/opa-config.yaml`` and the ``policies`` tree (without
examples, tests and tool configuration), with decision logs written to a file.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.stack.processes import free_port
from service.toolchain.errors import ToolMissingError
from service.toolchain.opa import find_opa
from service.toolchain.paths import POLICIES_DIR

EXAMPLES_DIR = POLICIES_DIR / "examples"
CONFIG_FILE = POLICIES_DIR / "config" / "opa-config.yaml"
# What the server must not load: example inputs, tests, tool configuration.
SERVER_IGNORES = ("examples", "config", ".*", "*_test.rego")


@dataclass(frozen=True)
class Example:
    """One example input with its expected decision (from policies/examples/expected.json)."""

    case: str
    input_path: Path
    data_path: Path | None
    query: str
    allow: bool
    count: int
    mentions: list[str]

    @property
    def package(self) -> str:
        """The policy package path, e.g. ``ztml.authz``."""
        return self.query.removeprefix("data.").rpartition(".")[0]

    @property
    def rule(self) -> str:
        """The queried rule, e.g. ``decision``."""
        return self.query.rpartition(".")[2]

    def load_input(self) -> Any:
        """The input document."""
        return json.loads(self.input_path.read_text())

    def load_data(self) -> dict[str, Any]:
        """The extra data document (e.g. Gatekeeper's inventory), empty when there is none."""
        return json.loads(self.data_path.read_text()) if self.data_path else {}


def load_examples() -> list[Example]:
    """All examples listed in policies/examples/expected.json."""
    manifest = json.loads((EXAMPLES_DIR / "expected.json").read_text())
    examples = []
    for case, entry in sorted(manifest["examples"].items()):
        data = entry.get("data")
        examples.append(
            Example(
                case=case,
                input_path=EXAMPLES_DIR / entry["input"],
                data_path=EXAMPLES_DIR / data if data else None,
                query=entry["query"],
                allow=entry["allow"],
                count=entry["count"],
                mentions=list(entry["mentions"]),
            )
        )
    return examples


EXAMPLES = load_examples()


@pytest.fixture(scope="session")
def opa_bin() -> Path:
    """The pinned OPA binary; fails (never skips) when it is missing."""
    try:
        return find_opa()
    except ToolMissingError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def opa_eval(opa_bin: Path) -> Callable[[Example], Any]:
    """Evaluate an example's query with ``opa eval -d policies`` and return the value."""
    cache: dict[str, Any] = {}

    def evaluate(example: Example) -> Any:
        if example.case in cache:
            return cache[example.case]
        command = [str(opa_bin), "eval", "--format", "json", "-d", str(POLICIES_DIR)]
        if example.data_path:
            command += ["-d", str(example.data_path)]
        command += ["-i", str(example.input_path), example.query]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"opa eval failed for {example.case}:\n{result.stderr}"
        value = json.loads(result.stdout)["result"][0]["expressions"][0]["value"]
        cache[example.case] = value
        return value

    return evaluate


@dataclass
class OpaServer:
    """A running ``opa run --server`` process."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON log line OPA has written so far."""
        lines = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def decision_logs(self) -> list[dict[str, Any]]:
        """The decision log events OPA has written so far."""
        return [line for line in self.log_lines() if line.get("msg") == "Decision Log"]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_opa_server(
    opa_bin: Path, log_path: Path, *, config_file: Path = CONFIG_FILE
) -> OpaServer:
    """Start OPA on a free loopback port and wait until it reports healthy.

    Retries on another port when the chosen one was taken in the meantime.
    """
    last_log = ""
    for _attempt in range(3):
        port = free_port()
        command = [
            str(opa_bin),
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{port}",
            "--config-file",
            str(config_file),
            "--log-format",
            "json",
            "--log-level",
            "info",
        ]
        for pattern in SERVER_IGNORES:
            command += ["--ignore", pattern]
        command.append(str(POLICIES_DIR))
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        server = OpaServer(process=process, port=port, log_path=log_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if _healthy(server.url):
                return server
            time.sleep(0.1)
        stop_opa_server(server)
        last_log = log_path.read_text()
    raise RuntimeError(f"OPA server did not start:\n{last_log}")


def stop_opa_server(server: OpaServer) -> None:
    """Stop the server process started by start_opa_server."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def opa_server_factory(
    opa_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[Path], OpaServer]]:
    """Start extra OPA servers with another config file; all are stopped at the end."""
    started: list[OpaServer] = []

    def start(config_file: Path) -> OpaServer:
        log_path = tmp_path_factory.mktemp("opa") / "opa.log"
        server = start_opa_server(opa_bin, log_path, config_file=config_file)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            stop_opa_server(server)


@pytest.fixture(scope="module")
def opa_server(opa_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaServer]:
    """A real OPA server with the policies loaded, stopped after the module's tests."""
    log_path = tmp_path_factory.mktemp("opa") / "opa.log"
    server = start_opa_server(opa_bin, log_path)
    try:
        yield server
    finally:
        stop_opa_server(server)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes an ``example`` once per example in expected.json."""
    if "example" in metafunc.fixturenames:
        metafunc.parametrize("example", EXAMPLES, ids=[example.case for example in EXAMPLES])


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """policies/examples."""
    return EXAMPLES_DIR
