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


class ModelNameError(InfraError):
    """An extra model's ``ztml:models`` name is not the name its digest is registered as.

    The name is the model's Deployment, Service and directory in the image, and the
    service refuses a package whose contract names another model: caught here, before
    anything is declared, rather than when the pods start.
    """

    def __init__(self, name: str, digest: str, registered: str) -> None:
        self.name, self.digest, self.registered = name, digest, registered
        super().__init__(
            f"the ledger registers {digest} as model {registered!r}, not {name!r}; in "
            f"ztml:models name it {registered!r} (its contract's name), or pin the digest "
            f"registered as {name!r}"
        )


class ModelsDeniedError(InfraError):
    """The deploy gate refused one or more of the stack's extra models (``ztml:models``).

    Attributes:
        refusals: Each refused model's name and the gate's error for it, in config order.
    """

    def __init__(self, refusals: list[tuple[str, InfraError]]) -> None:
        self.refusals = list(refusals)
        listed = "\n".join(f"model {name!r} (ztml:models): {err}" for name, err in self.refusals)
        super().__init__(listed)
