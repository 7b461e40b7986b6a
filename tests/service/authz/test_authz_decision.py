"""The authorization decision: what stands for a decision OPA could not give."""

from __future__ import annotations

from service.authz import Decision, PolicyUnavailableError
from service.authz.decision import DENY_OBLIGATIONS


def test_unavailable_decision_denies_with_the_reason_and_the_strictest_obligations() -> None:
    decision = Decision.unavailable(PolicyUnavailableError("OPA did not answer in time"))
    assert decision.allow is False
    assert decision.reasons == ("OPA did not answer in time",)
    assert decision.obligations == DENY_OBLIGATIONS
    assert decision.audit() == {
        "allow": False,
        "reasons": ["OPA did not answer in time"],
        "decision_id": None,
    }
