"""The local PostgreSQL image's entrypoint, run with this machine's PostgreSQL binaries.

The script keeps the official image's contract, which the Pulumi program relies on: an
empty ``PGDATA`` is initialised with ``POSTGRES_USER``, the password from
``POSTGRES_PASSWORD_FILE`` (SCRAM, also over TCP) and ``POSTGRES_DB``; a second start
keeps the data. It runs here as the unprivileged ``postgres`` user, as in the pod.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from service.cluster.imagebuild import POSTGRES_ENTRYPOINT
from service.stack.processes import free_port
from service.toolchain.postgres import OS_USER, find_postgres_bin

BIN = find_postgres_bin()
pytestmark = pytest.mark.skipif(
    BIN is None or os.geteuid() != 0, reason="needs root and Debian's PostgreSQL binaries"
)
PASSWORD = "a-password-long-enough-42"


class Server:
    """The entrypoint started as ``postgres`` on a loopback port."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        environ = {
            "PATH": f"{BIN}:/usr/bin:/bin",
            "PGDATA": str(self.root / "data" / "pgdata"),
            "POSTGRES_USER": "ztml",
            "POSTGRES_DB": "ztml",
            "POSTGRES_PASSWORD_FILE": str(self.root / "password"),
            **(env or {}),
        }
        command = [str(POSTGRES_ENTRYPOINT), *args]
        self.process = subprocess.Popen(
            ["runuser", "-u", OS_USER, "--", "env", "-i", *_pairs(environ), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return self.process

    def serve(self) -> None:
        self.start(
            "postgres",
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.root / "s"),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode() if self.process.stdout else ""
                pytest.fail(f"the entrypoint exited {self.process.returncode}: {out}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                # Listening is not accepting yet: a loaded host shows "starting up" for a while.
                self.connect().close()
                return
            except OSError:
                time.sleep(0.2)
            except psycopg.OperationalError as err:
                if "starting up" not in str(err):
                    return  # accepting connections; the test decides what it expects
                time.sleep(0.2)
        pytest.fail("PostgreSQL did not accept connections within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def connect(self, password: str | None = PASSWORD) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="ztml",
            dbname="ztml",
            password=password,
            connect_timeout=5,
            autocommit=True,
        )


def _pairs(env: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in env.items()]


@pytest.fixture
def server() -> Iterator[Server]:
    # Under /tmp itself: pytest's tmp_path sits in a 0700 directory of root's.
    root = Path(tempfile.mkdtemp(prefix="ztml-pg-entrypoint-"))
    (root / "data").mkdir()
    (root / "s").mkdir()
    (root / "password").write_text(PASSWORD)
    for path in (root, root / "data", root / "s", root / "password"):
        shutil.chown(path, user=OS_USER, group=OS_USER)
    srv = Server(root, free_port())
    yield srv
    srv.stop()
    shutil.rmtree(root)


def test_an_empty_data_directory_is_initialised_with_the_users_password_and_database(
    server: Server,
) -> None:
    server.serve()
    with server.connect() as conn:
        row = conn.execute("select current_user, current_database(), 6 * 7").fetchone()
        encoding = conn.execute("show server_encoding").fetchone()
    assert row == ("ztml", "ztml", 42)
    assert encoding == ("UTF8",)
    assert (server.root / "data" / "pgdata").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_tcp_connections_need_the_password(server: Server, password: str | None) -> None:
    server.serve()
    with pytest.raises(psycopg.OperationalError, match="password"):
        server.connect(password)


def test_a_restart_keeps_the_data_and_does_not_initialise_again(server: Server) -> None:
    server.serve()
    with server.connect() as conn:
        conn.execute("create table kept (n int)")
        conn.execute("insert into kept values (7)")
    server.stop()
    (server.root / "password").write_text("")  # a second start must not need it
    server.serve()
    with server.connect() as conn:
        assert conn.execute("select n from kept").fetchall() == [(7,)]


def test_a_missing_password_file_stops_the_first_start_with_a_reason(server: Server) -> None:
    (server.root / "password").unlink()
    process = server.start("postgres")
    out, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert b"is empty or missing" in out
    assert not (server.root / "data" / "pgdata").exists()


def test_another_command_runs_unchanged(server: Server) -> None:
    process = server.start("sh", "-c", "echo ran as $(id -un)")
    out, _ = process.communicate(timeout=30)
    assert (process.returncode, out.decode().strip()) == (0, f"ran as {OS_USER}")
