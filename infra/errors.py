"""Errors raised while building the ztml Pulumi program.

Every error message names what is wrong and how to fix it; raising one of them fails
``pulumi preview`` and ``pulumi up`` before anything is created.
"""

from __future__ import annotations


class InfraError(Exception):
    """Base error of the ztml Pulumi program."""


class ConfigError(InfraError):
    """A stack configuration value is missing or invalid; the message names the key."""


class HardeningError(InfraError):
    """A workload was described in a way the shared hardening builder refuses."""


class PolicyBundleError(InfraError):
    """The repository's policies/ directory cannot be packaged for OPA."""


class LedgerExportError(InfraError):
    """The ledger export file is missing, unreadable, malformed or fails verification."""


class PolicyEvaluationError(InfraError):
    """OPA could not evaluate a policy (missing binary, bad policy, bad output)."""


class DeployDeniedError(InfraError):
    """The deploy gate refused the configured model digest.

    Attributes:
        reasons: Every reason: the policy's, in the order OPA returned them, or why the
            ledger export did not verify.
    """

    def __init__(self, digest: str, reasons: list[str]) -> None:
        self.digest = digest
        self.reasons = list(reasons)
        listed = "\n".join(f"  - {reason}" for reason in self.reasons) or "  - (no reason given)"
        super().__init__(
            f"Deploy gate refused model {digest}:\n{listed}\n"
            "Register, evaluate and approve the model in the ledger, export it with "
            "`ztml ledger export`, and point `ztml:ledgerExport` at the export."
        )
