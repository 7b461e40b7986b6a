"""Find PostgreSQL's server binaries, and run a throwaway local server.

Debian installs the binaries under ``/usr/lib/postgresql``. :func:`postgres_server` runs
them as the ``postgres`` OS user (initdb refuses root) in a fresh temporary directory owned
by that user, listening on 127.0.0.1 and a free port only, with trust authentication for
loopback only; it is stopped (``pg_ctl stop -m fast``) and deleted at the end. The tests
and the ledger benchmark use it for a real PostgreSQL ledger::

    with postgres_server() as url:          # "postgresql://postgres@127.0.0.1:PORT/ztml"
        db_url = fresh_database(url, "t1")  # an empty database on the same server
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
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="ztml-pg-"))
    os.chmod(root, 0o700)
    _own(root)
    data, sockets, log = root / "data", root / "s", root / "server.log"
    sockets.mkdir()
    _own(sockets)
    started = False
    try:
        _as_postgres(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                OS_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        (data / "pg_hba.conf").write_text(
            "# loopback only, no password (a throwaway test server)\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        _own(data / "pg_hba.conf")
        last_error = ""
        for _attempt in range(3):
            port = free_port()
            options = (
                f"-k {sockets} -p {port} -c listen_addresses=127.0.0.1 "
                "-c shared_buffers=32MB -c max_connections=50"
            )
            result = _as_postgres(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                    "start",
                ],
                check=False,
            )
            if result.returncode == 0:
                started = True
                break
            last_error = log.read_text() if log.exists() else result.stderr
        if not started:
            raise PostgresServerError(f"PostgreSQL did not start: {last_error.strip()[-2000:]}")
        _as_postgres(
            [
                str(bin_dir / "createdb"),
                "-h",
                str(sockets),
                "-p",
                str(port),
                "-U",
                OS_USER,
                database,
            ]
        )
        yield f"postgresql://{OS_USER}@127.0.0.1:{port}/{database}"
    finally:
        if started:
            _as_postgres(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(url: str, name: str) -> str:
    """Create an empty database ``name`` on the server of ``url``; return its URL."""
    # psycopg takes a quarter of a second to import; only callers of this function need it.
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name
