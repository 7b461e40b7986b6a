"""Find pinned Go tools (OPA, Regal) by the version they report.

ztml pins one version of each Go tool it runs and builds it into the project-local bin
directory (``.tools/bin``) when no binary of that version is found, so that policy checks
and the local stack always run the same engine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from service.toolchain.errors import ToolMissingError
from service.toolchain.paths import tools_bin


@dataclass(frozen=True)
class GoTool:
    """A Go program ztml pins.

    Attributes:
        name: The binary's name (``opa``, ``regal``).
        version: The pinned version as the binary reports it (``1.22.2``, ``v0.35.1``).
        env_var: An environment variable that may point at a binary to use instead.
        install_hint: How to get the tool by hand, for error messages.
    """

    name: str
    version: str
    env_var: str
    install_hint: str

    def reported_version(self, binary: Path) -> str | None:
        """Return the version ``binary version`` prints, or None if it does not run."""
        try:
            out = subprocess.run(
                [str(binary), "version"], capture_output=True, text=True, timeout=20, check=False
            ).stdout
        except OSError:
            return None
        match = re.search(r"^Version:\s*(\S+)", out, re.MULTILINE)
        return match.group(1) if match else None

    def candidates(self) -> list[Path]:
        """Return where to look, in order: the environment variable, .tools/bin, PATH."""
        found: list[Path] = []
        if env := os.environ.get(self.env_var):
            found.append(Path(env))
        found.append(tools_bin() / self.name)
        if on_path := shutil.which(self.name):
            found.append(Path(on_path))
        return found

    def find(self) -> Path:
        """Return the path of a binary of the pinned version.

        Raises:
            ToolMissingError: no binary of the pinned version was found; the message
                says how to install it.
        """
        seen: list[str] = []
        for candidate in self.candidates():
            if candidate.is_file() and os.access(candidate, os.X_OK):
                version = self.reported_version(candidate)
                if version == self.version:
                    return candidate
                seen.append(f"{candidate} (version {version or 'unknown'})")
        where = f" Found only: {', '.join(seen)}." if seen else ""
        raise ToolMissingError(
            f"{self.name} {self.version} is not installed.{where} {self.install_hint}"
        )

    def go(self) -> str:
        """Return the ``go`` command, or raise with this tool's install hint.

        Raises:
            ToolMissingError: Go is not installed.
        """
        go = shutil.which("go")
        if go is None:
            raise ToolMissingError(
                f"{self.name} {self.version} is missing and Go is not installed. "
                f"{self.install_hint}"
            )
        return go
