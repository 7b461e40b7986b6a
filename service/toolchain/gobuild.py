"""Pinned Go programs built from the Go module proxy into a cache outside the checkout.

Every binary is built once per name and version into ``$ZTML_CACHE/tools/<name>-<version>/``
(default ``~/.cache/ztml``), so a fresh clone on a machine that built it once finds it at
once. A build goes through a small wrapper module that requires the pinned module, so
modules whose own go.mod has replace directives (which ``go install module@version``
refuses) build from the same published versions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.toolchain.errors import ToolInstallError


def cache_root() -> Path:
    """Return the cache that outlives checkouts (``$ZTML_CACHE``, default ``~/.cache/ztml``)."""
    return Path(os.environ.get("ZTML_CACHE", Path.home() / ".cache" / "ztml")).expanduser()


def go_env() -> dict[str, str]:
    """Return the environment of every build: static binaries, modules resolved as needed."""
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}


def run_go(command: list[str], *, cwd: Path | None = None, what: str) -> None:
    """Run a ``go ...`` command in ``cwd``.

    Raises:
        ToolInstallError: Go is missing or the command failed (with Go's last words).
    """
    go = shutil.which("go")
    if go is None:
        raise ToolInstallError(
            f"{what} must be built with Go, which is not installed: install Go 1.24 or newer."
        )
    proc = subprocess.run(
        [go, *command[1:]] if command[0] == "go" else command,
        cwd=cwd,
        env=go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise ToolInstallError(f"building {what} failed:\n{tail}")


@dataclass(frozen=True)
class PinnedBuild:
    """One pinned build: a set of binaries that one Go build produces.

    Attributes:
        name: The cache key's name part (``kubernetes``, ``etcd``).
        version: The pinned version (the cache key's version part).
        binaries: The binaries the build leaves in its cache directory.
        build: Builds ``binaries`` into the directory it is given.
    """

    name: str
    version: str
    binaries: tuple[str, ...]
    build: Callable[[Path], None]

    @property
    def directory(self) -> Path:
        """Return the cache directory of this name and version."""
        return cache_root() / "tools" / f"{self.name}-{self.version}"

    def path(self, binary: str) -> Path:
        """Return where ``binary`` of this build lives (it may not exist yet)."""
        return self.directory / binary

    def present(self) -> bool:
        """Return True when every binary of the build is in the cache."""
        return all(os.access(self.path(b), os.X_OK) for b in self.binaries)

    def ensure(self) -> Path:
        """Build the binaries unless cached; return the cache directory.

        Raises:
            ToolInstallError: Go is missing or the build failed (the message has Go's words).
        """
        if self.present():
            return self.directory
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.directory.parent))
        try:
            self.build(staging)
            for binary in self.binaries:
                if not (staging / binary).is_file():
                    raise ToolInstallError(f"building {self.name} left no {binary}")
            if self.directory.exists():
                shutil.rmtree(self.directory)
            staging.rename(self.directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.directory


def wrapper_build(module: str, version: str, package: str, binary: str) -> Callable[[Path], None]:
    """Return a build of ``package`` through a wrapper module that requires ``module``.

    ``go install module@version`` refuses modules whose go.mod has replace directives
    (etcd's server does); a wrapper module builds the same package from the same
    published versions.
    """

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=f"ztml-{binary}-") as tmp:
            workdir = Path(tmp)
            (workdir / "go.mod").write_text(
                f"module ztml.local/{binary}\n\ngo 1.24.0\n\nrequire {module} {version}\n"
            )
            (workdir / "tools.go").write_text(
                f'//go:build tools\n\npackage tools\n\nimport _ "{package}"\n'
            )
            run_go(["go", "mod", "tidy"], cwd=workdir, what=f"{module}@{version}")
            run_go(
                ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / binary), package],
                cwd=workdir,
                what=f"{module}@{version}",
            )

    return build
