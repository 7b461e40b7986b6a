"""Evaluate the provenance policy (``data.ztml.provenance.decision``) with the real OPA.

The deploy gate (:func:`service.gate.check_deploy`) asks this once per check. It runs
``opa eval`` on the project's policies, loaded exactly as the OPA server loads them
(:func:`policy_load_args`), so it works before any OPA server is up and evaluates the
same policy and data the server serves.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.authz.errors import ProvenanceGateError
from service.toolchain.errors import ToolchainError
from service.toolchain.opa import find_opa
from service.toolchain.paths import POLICIES_DIR

PROVENANCE_QUERY = "data.ztml.provenance.decision"
#: What the OPA server and ``opa eval`` skip when loading the policies directory.
POLICY_IGNORES = ("examples", "config", ".*", "*_test.rego")


@dataclass(frozen=True)
class ProvenanceDecision:
    """The deploy gate's answer: allowed, or every reason it is not."""

    allow: bool
    reasons: tuple[str, ...]


def _parse(result: object) -> ProvenanceDecision:
    if not isinstance(result, dict):
        raise ProvenanceGateError(
            f"the provenance policy gave no decision ({PROVENANCE_QUERY} is undefined: "
            "are the policies complete?)"
        )
    allow = result.get("allow")
    reasons = result.get("reasons")
    if not isinstance(allow, bool) or not isinstance(reasons, list):
        raise ProvenanceGateError("the provenance decision is malformed (allow/reasons)")
    if not allow and not reasons:
        reasons = ["denied by the provenance policy"]
    return ProvenanceDecision(allow=allow, reasons=tuple(str(r) for r in reasons))


def policy_load_args(policies_dir: Path) -> list[str]:
    """Return the ``--ignore ... <dir>`` arguments that load the policies like the server."""
    args: list[str] = []
    for pattern in POLICY_IGNORES:
        args += ["--ignore", pattern]
    return [*args, str(policies_dir)]


def evaluate_provenance(
    input: dict[str, Any],
    *,
    opa_binary: Path | None = None,
    policies_dir: Path = POLICIES_DIR,
    timeout_seconds: float = 30.0,
) -> ProvenanceDecision:
    """Evaluate the provenance policy for one model digest.

    Args:
        input: the policy input (digest, ledger, trust, requirements).
        opa_binary: the ``opa`` binary (default: :func:`find_opa`).
        policies_dir: the policies directory (default: the project's ``policies/``).
        timeout_seconds: how long OPA may take.

    Raises:
        ProvenanceGateError: OPA is missing, failed, or its answer is unusable. The
            caller must refuse to deploy.
    """
    try:
        binary = opa_binary or find_opa()
    except ToolchainError as err:
        raise ProvenanceGateError(str(err)) from None
    *ignores, directory = policy_load_args(policies_dir)
    command = [
        str(binary),
        "eval",
        "--format",
        "json",
        "--stdin-input",
        *ignores,
        "--data",
        directory,
        PROVENANCE_QUERY,
    ]
    try:
        proc = subprocess.run(
            command,
            input=json.dumps(input),
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ProvenanceGateError(f"`opa eval` failed to run: {type(err).__name__}") from None
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        raise ProvenanceGateError(f"`opa eval` of the provenance policy failed: {tail}")
    try:
        out = json.loads(proc.stdout)
        value = out["result"][0]["expressions"][0]["value"]
    except (ValueError, KeyError, IndexError, TypeError):
        value = None
    return _parse(value)
