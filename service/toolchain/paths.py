"""Where ztml keeps its state and its project-local tools.

State lives under ``$ZTML_HOME`` (default ``~/.ztml``, or ``/var/lib/ztml`` for root);
tools that are not Python packages (the OPA binary) are installed into ``$ZTML_TOOLS``
(default ``.tools/bin`` in the project checkout, next to ``pyproject.toml``).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The Rego policies and their data; an installed service (the image) ships them elsewhere
# and names them with ZTML_POLICIES_DIR.
POLICIES_DIR = Path(os.environ.get("ZTML_POLICIES_DIR") or PROJECT_ROOT / "policies").expanduser()


def ztml_home() -> Path:
    """Return the state directory (keys, ledger, audit log, models, review queue).

    ``$ZTML_HOME`` if set; otherwise ``~/.ztml``, or ``/var/lib/ztml`` for root, whose
    servers run as an unprivileged user that cannot enter root's home directory.
    """
    if explicit := os.environ.get("ZTML_HOME"):
        return Path(explicit).expanduser()
    return Path("/var/lib/ztml") if os.geteuid() == 0 else Path.home() / ".ztml"


def tools_bin() -> Path:
    """Return the project-local directory that holds installed tool binaries."""
    return Path(os.environ.get("ZTML_TOOLS", PROJECT_ROOT / ".tools" / "bin")).expanduser()
