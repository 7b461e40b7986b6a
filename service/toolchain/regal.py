"""Locate (and, when asked, build) the pinned Regal linter for Rego.

Regal is a Go program. ``go install github.com/styrainc/regal@v0.35.1`` fails through
the Go module proxy even though the proxy serves that version: ``go install`` also asks
the proxy for the module's version list (to look for a deprecation notice), and the
proxy refuses that list for Regal. So ztml downloads the pinned version with
``go mod download`` (checked against the Go checksum database like any module) and
builds it with ``go build`` in the downloaded module, with the module's own ``go.sum``
and the version stamped in as Regal's release builds do.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from service.toolchain.errors import ToolInstallError, ToolMissingError
from service.toolchain.gotool import GoTool
from service.toolchain.paths import tools_bin

REGAL_VERSION = "v0.35.1"
REGAL_MODULE = "github.com/styrainc/regal"

INSTALL_HINT = (
    "Install Go (https://go.dev/dl/) and run `scripts/run setup`, or download the Regal "
    f"{REGAL_VERSION} release binary for your platform, make it executable and set "
    "ZTML_REGAL=/path/to/regal."
)

REGAL = GoTool(
    name="regal",
    version=REGAL_VERSION,
    env_var="ZTML_REGAL",
    install_hint=INSTALL_HINT,
)


def find_regal() -> Path:
    """Return the path of a ``regal`` binary of the pinned version.

    Raises:
        ToolMissingError: no binary of the pinned version was found; the message
            says how to install it.
    """
    return REGAL.find()


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str]) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env=env, timeout=1800, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise ToolInstallError(f"`{' '.join(command[:3])} …` failed:\n{tail}")
    return result.stdout


def install_regal() -> Path:
    """Return the pinned Regal, building it from the Go module proxy when it is missing.

    Installing twice is harmless: an existing binary of the right version is reused.

    Raises:
        ToolMissingError: Go is not available to build Regal.
        ToolInstallError: downloading or building the module failed.
    """
    try:
        return find_regal()
    except ToolMissingError:
        pass
    go = REGAL.go()
    env = {**os.environ, "GOFLAGS": "-mod=readonly"}
    info = json.loads(
        _run([go, "mod", "download", "-json", f"{REGAL_MODULE}@{REGAL_VERSION}"], env=env)
    )
    if info.get("Error") or not info.get("Dir"):
        raise ToolInstallError(
            f"`go mod download {REGAL_MODULE}@{REGAL_VERSION}` failed: {info.get('Error')}"
        )
    target = tools_bin()
    target.mkdir(parents=True, exist_ok=True)
    stamp = f"-X {REGAL_MODULE}/pkg/version.Version={REGAL_VERSION}"
    _run(
        [go, "build", "-trimpath", "-ldflags", stamp, "-o", str(target / "regal"), "."],
        cwd=Path(info["Dir"]),
        env=env,
    )
    return find_regal()
