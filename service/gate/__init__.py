"""The deploy gate: one function decides whether a model may be deployed."""

from service.gate.deploy import ApprovedModel, GateTrust, check_deploy
from service.gate.errors import (
    GateArtifactError,
    GateError,
    GateEvidenceError,
    GateTrustError,
    GateUnavailableError,
    ModelDeniedError,
)
from service.gate.requirements import Requirements, load_requirements

__all__ = [
    "ApprovedModel",
    "GateArtifactError",
    "GateError",
    "GateEvidenceError",
    "GateTrust",
    "GateTrustError",
    "GateUnavailableError",
    "ModelDeniedError",
    "Requirements",
    "check_deploy",
    "load_requirements",
]
