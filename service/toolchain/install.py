"""``python -m service.toolchain.install opa|regal|postgres``: install or check external tools.

Used by ``scripts/run``; prints where the tool is, or a message that says how to get it
and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys

from service.toolchain.errors import ToolchainError
from service.toolchain.opa import find_opa, install_opa
from service.toolchain.postgres import find_postgres_bin
from service.toolchain.regal import find_regal, install_regal


def main(argv: list[str] | None = None) -> int:
    """Install (or with ``--check`` only look for) one tool; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tool", choices=["opa", "regal", "postgres"])
    parser.add_argument("--check", action="store_true", help="only look, never install")
    args = parser.parse_args(argv)
    try:
        if args.tool == "opa":
            path = find_opa() if args.check else install_opa()
            print(path)
            return 0
        if args.tool == "regal":
            path = find_regal() if args.check else install_regal()
            print(path)
            return 0
        bin_dir = find_postgres_bin()
        if bin_dir is None:
            print(
                "PostgreSQL server binaries not found (apt-get install postgresql)", file=sys.stderr
            )
            return 1
        print(bin_dir)
        return 0
    except ToolchainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
