"""``python -m service.app.serve``: ``bentoml serve`` without TCP control ports.

BentoML supervises its workers with circus, whose control and pub/sub endpoints it binds
to ``tcp://127.0.0.1:<random port>``. Anyone on the host (or, in a pod, any container
sharing its network namespace) can reach those ports, and circus's control protocol can
start and stop processes. ztml moves both endpoints to ``ipc://`` Unix sockets in a 0700
directory owned by the service user, so the only TCP port the service opens is its API.

Usage is that of ``bentoml serve``; the socket directory is ``$ZTML_HOME/run/circus``
unless ``ZTML_CONTROL_DIR`` names another.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def _control_dir() -> Path:
    if explicit := os.environ.get("ZTML_CONTROL_DIR"):
        base = Path(explicit)
    else:
        from service.toolchain.paths import ztml_home

        base = ztml_home() / "run" / "circus"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    # A fresh directory per server keeps two servers of one home apart; short, because a
    # Unix socket path is limited to about 100 bytes.
    return Path(tempfile.mkdtemp(prefix="s", dir=base))


def use_unix_control_sockets() -> Path:
    """Make BentoML's circus arbiter listen on Unix sockets instead of loopback TCP."""
    from bentoml._internal.utils import circus

    directory = _control_dir()

    def create(watchers: list[Any], *, threaded: bool = False, **kwargs: Any) -> Any:
        # Mirrors BentoML's own factory, with Unix-socket endpoints.
        arbiter_cls = circus.ThreadedArbiter if threaded else circus.Arbiter
        return arbiter_cls(
            watchers,
            endpoint=f"ipc://{directory}/control",
            pubsub_endpoint=f"ipc://{directory}/pubsub",
            check_delay=kwargs.pop("check_delay", 10),
            **kwargs,
        )

    circus.create_standalone_arbiter = create
    return directory


def main() -> None:
    """Run ``bentoml serve`` with the arguments given, control sockets on Unix sockets."""
    use_unix_control_sockets()
    from bentoml_cli.cli import cli

    sys.argv = ["bentoml", "serve", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
