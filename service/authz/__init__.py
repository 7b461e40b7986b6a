"""Authorization by OPA: per-request decisions and the provenance deploy gate."""

from service.authz.decision import Decision, Obligations, parse_decision
from service.authz.errors import AuthzError, PolicyUnavailableError, ProvenanceGateError
from service.authz.opa import OpaAuthorizer
from service.authz.provenance import ProvenanceDecision, evaluate_provenance

__all__ = [
    "AuthzError",
    "Decision",
    "Obligations",
    "OpaAuthorizer",
    "PolicyUnavailableError",
    "ProvenanceDecision",
    "ProvenanceGateError",
    "evaluate_provenance",
    "parse_decision",
]
