"""Errors of the deploy gate: one base type carrying every reason, one subclass per area."""

from __future__ import annotations

from collections.abc import Sequence


class GateError(Exception):
    """The deploy gate refused the model; ``reasons`` lists every reason it knows.

    Attributes:
        reasons: What is wrong, one line each (for a policy denial: every policy reason).
    """

    def __init__(self, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reasons: tuple[str, ...] = tuple(reasons) or (message,)


class GateArtifactError(GateError):
    """The model artifact cannot be read for hashing."""


class GateTrustError(GateError):
    """The trusted keys are missing or unusable, so nothing could be verified."""


class GateEvidenceError(GateError):
    """The ledger or its export cannot be read, or is not a list of records."""


class GateUnavailableError(GateError):
    """The provenance policy cannot be evaluated (no OPA, bad policy, unusable answer)."""


class ModelDeniedError(GateError):
    """The model may not be deployed: its evidence does not verify or the policy denied it."""
