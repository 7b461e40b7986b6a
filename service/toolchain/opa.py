"""Locate (and, when asked, install) the pinned OPA binary.

OPA is a Go program, not a Python package. ztml pins one 1.x version and installs it
with ``go install`` into a project-local bin directory when no ``opa`` of that version
is found, so that policy tests and the local stack always run the same engine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from service.toolchain.errors import ToolInstallError, ToolMissingError
from service.toolchain.gotool import GoTool
from service.toolchain.paths import tools_bin

OPA_VERSION = "1.22.2"
OPA_MODULE = "github.com/open-policy-agent/opa"

INSTALL_HINT = (
    f"Install Go (https://go.dev/dl/) and run `scripts/run setup`, or run "
    f"`GOBIN=$PWD/.tools/bin go install {OPA_MODULE}@v{OPA_VERSION}`; without Go, download "
    f"the OPA {OPA_VERSION} release binary for your platform, make it executable and set "
    f"ZTML_OPA=/path/to/opa."
)


# How ztml runs OPA's server, under `ztml up` and as the cluster sidecar alike.
#
# One Go scheduler thread (GOMAXPROCS=1): a decision is one short request on one
# connection; with a second scheduler thread Go hands the request between its network
# poller and worker threads, which on a small machine costs more than it saves (about
# 0.2 ms of a 1.1 ms round trip measured here). The sidecar has a 500m CPU limit, and on
# a node with two or more CPUs Go would derive at least two threads from it.
#
# A less eager collector (GOGC=400, GOMEMLIMIT=192MiB): a decision allocates about 30 KB,
# so with Go's default the collector shares the one thread with decisions every few
# hundred requests. Measured with `opa bench` on the authz examples: p50 -7%, mean -27%,
# p99 -40%; the server's resident memory under load grows from about 50 to 73 MiB. The
# soft limit makes Go collect harder before the sidecar's 256Mi limit is reached.
OPA_SERVER_ENV = {"GOMAXPROCS": "1", "GOGC": "400", "GOMEMLIMIT": "192MiB"}
# OPA keeps its static, read-only data (policies/data) as evaluation values, so a
# decision's reads of data.data.roles are not converted on every request. Nothing
# writes to OPA's store at run time.
OPA_STORE_FLAG = "--optimize-store-for-read-speed"


OPA = GoTool(
    name="opa",
    version=OPA_VERSION,
    env_var="ZTML_OPA",
    install_hint=INSTALL_HINT,
)


def opa_version(binary: Path) -> str | None:
    """Return the version an ``opa`` binary reports, or None if it does not run."""
    return OPA.reported_version(binary)


def find_opa() -> Path:
    """Return the path of an ``opa`` binary of the pinned version.

    Raises:
        ToolMissingError: no binary of the pinned version was found; the message
            says how to install it.
    """
    return OPA.find()


def install_opa() -> Path:
    """Return the pinned OPA, installing it with ``go install`` when it is missing.

    Installing twice is harmless: an existing binary of the right version is reused.

    Raises:
        ToolMissingError: Go is not available to build OPA.
        ToolInstallError: ``go install`` failed.
    """
    try:
        return find_opa()
    except ToolMissingError:
        pass
    go = OPA.go()
    target = tools_bin()
    target.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(target)}
    result = subprocess.run(
        [go, "install", f"{OPA_MODULE}@v{OPA_VERSION}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise ToolInstallError(f"`go install {OPA_MODULE}@v{OPA_VERSION}` failed:\n{tail}")
    return find_opa()
