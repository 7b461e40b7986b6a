"""Run the ztml program under the real Pulumi engine through the Automation API.

``python -m infra.automation preview|up|destroy --stack NAME --backend DIR --config FILE``

The program is inline: the engine calls the same :func:`infra.__main__.main` that
``pulumi up`` runs for users of the official CLI, so machines without Pulumi's Python
language host (it is not published as a Go module) still run the real engine. The CLI and
the Kubernetes provider are the pinned builds of :mod:`service.toolchain.pulumi`; state
lives in a file backend (``--backend``) and secrets are encrypted with a passphrase
(``PULUMI_CONFIG_PASSPHRASE``, required). ``--config`` is a JSON object of ``ztml:*``
keys; values that are not strings are stored as JSON, and the keys the program treats as
secrets are stored as Pulumi secrets.

The exit code is 0 on success and 1 when the engine reports an error, whose text (for a
refused model: one line naming every reason) is printed on standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from service.toolchain.errors import ToolchainError
from service.toolchain.pulumi import PULUMI_CLI, engine_path

PROJECT = "ztml"
SECRET_KEYS = frozenset(
    {
        "ztml:trustedIssuers",
        "ztml:ledgerTrustKeys",
        "ztml:omsSignerKeys",
        "ztml:postgresPassword",
        "ztml:admissionTlsKey",
        "ztml:serviceTlsKey",
    }
)
ACTIONS = ("preview", "up", "destroy")


def _program() -> None:
    # Imported here: the engine's language runtime must be set up before the program
    # module (and pulumi_kubernetes) load.
    from infra.__main__ import main

    main()


def open_stack(
    stack: str, backend: Path, config: Mapping[str, Any], *, program: Callable[[], None] = _program
) -> auto.Stack:
    """Create or select ``stack`` in the file backend ``backend`` with ``config`` set.

    Raises:
        ToolchainError: the pinned CLI or provider is missing and does not build.
        KeyError: ``PULUMI_CONFIG_PASSPHRASE`` is not set.
    """
    path = engine_path()
    backend.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": path,
        "PULUMI_CONFIG_PASSPHRASE": os.environ["PULUMI_CONFIG_PASSPHRASE"],
        "PULUMI_HOME": str(backend / ".pulumi"),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
    }
    os.environ["PATH"] = path  # the provider is found on PATH by the engine
    settings = auto.ProjectSettings(
        name=PROJECT,
        runtime="python",
        backend=auto.ProjectBackend(url=f"file://{backend}"),
    )
    workspace = auto.LocalWorkspaceOptions(
        project_settings=settings,
        env_vars=env,
        pulumi_command=auto.PulumiCommand(root=str(PULUMI_CLI.directory), skip_version_check=True),
    )
    selected = auto.create_or_select_stack(
        stack_name=stack, project_name=PROJECT, program=program, opts=workspace
    )
    selected.set_all_config(
        {
            key: auto.ConfigValue(
                value=value if isinstance(value, str) else json.dumps(value),
                secret=key in SECRET_KEYS,
            )
            for key, value in config.items()
        }
    )
    return selected


def main(argv: list[str] | None = None) -> int:
    """Run one engine action; return the exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--stack", required=True, help="stack name")
    parser.add_argument("--backend", type=Path, required=True, help="file backend directory")
    parser.add_argument("--config", type=Path, required=True, help="JSON object of ztml:* keys")
    args = parser.parse_args(argv)
    if "PULUMI_CONFIG_PASSPHRASE" not in os.environ:
        print(
            "error: set PULUMI_CONFIG_PASSPHRASE (it encrypts the stack's secrets)", file=sys.stderr
        )
        return 2
    try:
        config = json.loads(args.config.read_text())
    except (OSError, ValueError) as err:
        print(
            f"error: --config {args.config} is not a readable JSON object: {err}", file=sys.stderr
        )
        return 2
    try:
        stack = open_stack(args.stack, args.backend.resolve(), config)
        if args.action == "preview":
            result: Any = stack.preview(diff=False)
            print(json.dumps({"changes": result.change_summary}))
        elif args.action == "up":
            result = stack.up()
            print(json.dumps({"changes": result.summary.resource_changes}))
        else:
            result = stack.destroy()
            print(json.dumps({"changes": result.summary.resource_changes}))
    except auto.CommandError as err:
        print(str(err), file=sys.stderr)
        return 1
    except ToolchainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
