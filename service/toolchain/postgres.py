"""Find PostgreSQL's server binaries, and run a throwaway local server.

Debian installs the binaries under ``/usr/lib/postgresql``. :func:`postgres_server` runs
them as the ``postgres`` OS user (initdb refuses root) in a fresh temporary directory owned
by that user, listening on 127.0.0.1 and a free port only, with trust authentication for
loopback only; it is stopped (``pg_ctl stop -m fast``) and deleted at the end. The tests
and the ledger benchmark use it for a real PostgreSQL ledger::

    with postgres_server() as url:          # "postgresql://postgres@127.0.0.1:PORT/ztml"
        db_url = fresh_database(url, "t1")  # an empty database on the same server

:func:`local_postgres` yields the server itself, which a test can stop and start again
(an outage of the shared monitor store, say).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.stack.processes import free_port
from service.toolchain.errors import PostgresServerError, ToolMissingError

#: The OS user the server runs as, and the superuser of its cluster.
OS_USER = "postgres"
#: The database :func:`postgres_server` creates.
DATABASE = "ztml"


def find_postgres_bin() -> Path | None:
    """Return the directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.insert(0, Path(initdb).resolve().parent)
    for directory in candidates:
        if all((directory / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _as_postgres(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = args if os.geteuid() != 0 else ["runuser", "-u", OS_USER, "--", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise PostgresServerError(
            f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def _bin_dir() -> Path:
    found = find_postgres_bin()
    if found is None:
        raise ToolMissingError(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed. Run "
            "`scripts/run setup` (it installs Debian's postgresql package), then try again."
        )
    return found


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=OS_USER, group=OS_USER)


class LocalPostgres:
    """A throwaway server in a temporary directory that a test may stop and start again.

    Use :func:`local_postgres`; ``url`` stays the same across :meth:`stop` and
    :meth:`start` (same port, same data).
    """

    def __init__(self, root: Path, bin_dir: Path, database: str) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.database = database
        self.data, self.sockets, self.log = root / "data", root / "s", root / "server.log"
        self.port = 0
        self.running = False

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<database>``."""
        return f"postgresql://{OS_USER}@127.0.0.1:{self.port}/{self.database}"

    def init(self) -> None:
        """Make the cluster (loopback-only trust authentication)."""
        _as_postgres(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                OS_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        (self.data / "pg_hba.conf").write_text(
            "# loopback only, no password (a throwaway test server)\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        _own(self.data / "pg_hba.conf")

    def _pg_ctl_start(self, port: int) -> subprocess.CompletedProcess[str]:
        options = (
            f"-k {self.sockets} -p {port} -c listen_addresses=127.0.0.1 "
            "-c shared_buffers=32MB -c max_connections=50"
        )
        return _as_postgres(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            check=False,
        )

    def start(self) -> None:
        """Start the server (on a free port the first time, on the same port again after).

        Raises:
            PostgresServerError: the server does not start.
        """
        last_error = ""
        for _attempt in range(1 if self.port else 3):
            port = self.port or free_port()
            result = self._pg_ctl_start(port)
            if result.returncode == 0:
                self.port, self.running = port, True
                return
            last_error = self.log.read_text() if self.log.exists() else result.stderr
        raise PostgresServerError(f"PostgreSQL did not start: {last_error.strip()[-2000:]}")

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed)."""
        if self.running:
            _as_postgres(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                check=False,
            )
            self.running = False

    def create_database(self) -> None:
        """Create :attr:`database` on the running server."""
        _as_postgres(
            [
                str(self.bin_dir / "createdb"),
                "-h",
                str(self.sockets),
                "-p",
                str(self.port),
                "-U",
                OS_USER,
                self.database,
            ]
        )


@contextmanager
def local_postgres(*, database: str = DATABASE) -> Iterator[LocalPostgres]:
    """Run a throwaway PostgreSQL server for the duration of the block.

    Args:
        database: the name of the database created on it.

    Yields:
        The running server (its ``url``, ``stop()`` and ``start()``).

    Raises:
        ToolMissingError: the server binaries are not installed.
        PostgresServerError: the server does not start.
    """
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="ztml-pg-"))
    os.chmod(root, 0o700)
    _own(root)
    server = LocalPostgres(root, bin_dir, database)
    server.sockets.mkdir()
    _own(server.sockets)
    try:
        server.init()
        server.start()
        server.create_database()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server(*, database: str = DATABASE) -> Iterator[str]:
    """Run a throwaway PostgreSQL server for the duration of the block; yield its URL.

    Args:
        database: the name of the database created on it.

    Yields:
        ``postgresql://postgres@127.0.0.1:<port>/<database>``.

    Raises:
        ToolMissingError: the server binaries are not installed.
        PostgresServerError: the server does not start.
    """
    with local_postgres(database=database) as server:
        yield server.url


def fresh_database(url: str, name: str) -> str:
    """Create an empty database ``name`` on the server of ``url``; return its URL."""
    # psycopg takes a quarter of a second to import; only callers of this function need it.
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name
