"""The authorization decision returned by ``data.ztml.authz.decision``.

The answer is checked strictly: anything missing, of the wrong type or unknown makes it
malformed, and a malformed answer is treated like an unreachable OPA (deny with 503).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.authz.errors import PolicyUnavailableError

FlaggedInput = Literal["reject", "serve_and_flag"]


@dataclass(frozen=True)
class Obligations:
    """What the service must enforce on an allowed call."""

    max_batch_size: int
    explanations_allowed: bool
    flagged_input: FlaggedInput
    rate_limit_per_minute: int


#: The most restrictive obligations (used for denials).
DENY_OBLIGATIONS = Obligations(
    max_batch_size=0, explanations_allowed=False, flagged_input="reject", rate_limit_per_minute=0
)


@dataclass(frozen=True)
class Decision:
    """One authorization decision.

    Attributes:
        allow: whether the call may proceed.
        reasons: why it was denied (empty when allowed).
        obligations: what the service must enforce.
        decision_id: OPA's decision id (ties the call to OPA's decision log).
    """

    allow: bool
    reasons: tuple[str, ...]
    obligations: Obligations
    decision_id: str | None

    @classmethod
    def unavailable(cls, err: PolicyUnavailableError) -> Decision:
        """Return the denial that stands for a decision OPA could not give (fail closed).

        Args:
            err: Why there is no decision (unreachable, timed out, malformed answer).
        """
        return cls(allow=False, reasons=(str(err),), obligations=DENY_OBLIGATIONS, decision_id=None)

    def audit(self) -> dict[str, bool | str | list[str] | None]:
        """Return the ``decision`` object of an audit event."""
        return {
            "allow": self.allow,
            "reasons": list(self.reasons),
            "decision_id": self.decision_id,
        }


def _malformed(what: str) -> PolicyUnavailableError:
    return PolicyUnavailableError(f"OPA returned a malformed authorization decision: {what}")


def _obligations(value: object) -> Obligations:
    if not isinstance(value, dict):
        raise _malformed("obligations is not an object")
    batch = value.get("max_batch_size")
    explain = value.get("explanations_allowed")
    flagged = value.get("flagged_input")
    rate = value.get("rate_limit_per_minute")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0:
        raise _malformed("obligations.max_batch_size is not a non-negative integer")
    if not isinstance(explain, bool):
        raise _malformed("obligations.explanations_allowed is not a boolean")
    if flagged not in ("reject", "serve_and_flag"):
        raise _malformed("obligations.flagged_input is not 'reject' or 'serve_and_flag'")
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 0:
        raise _malformed("obligations.rate_limit_per_minute is not a non-negative integer")
    return Obligations(
        max_batch_size=batch,
        explanations_allowed=explain,
        flagged_input=flagged,
        rate_limit_per_minute=rate,
    )


def parse_decision(response: object) -> Decision:
    """Check OPA's response to ``POST /v1/data/ztml/authz/decision`` and build a Decision.

    Args:
        response: the parsed JSON body (``{"result": {...}, "decision_id": "..."}``).

    Raises:
        PolicyUnavailableError: the decision is undefined (no ``result``) or malformed.
    """
    if not isinstance(response, dict):
        raise _malformed("the response is not a JSON object")
    if "result" not in response:
        raise PolicyUnavailableError(
            "OPA has no authorization decision (data.ztml.authz.decision is undefined: "
            "are the policies loaded?)"
        )
    result = response["result"]
    if not isinstance(result, dict):
        raise _malformed("result is not an object")
    allow = result.get("allow")
    reasons = result.get("reasons")
    if not isinstance(allow, bool):
        raise _malformed("allow is not a boolean")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise _malformed("reasons is not a list of strings")
    obligations = _obligations(result.get("obligations"))
    if not allow and not reasons:
        reasons = ["denied by policy"]
    if allow and reasons:
        raise _malformed("allow is true but reasons are given")
    decision_id = response.get("decision_id")
    return Decision(
        allow=allow,
        reasons=tuple(reasons),
        obligations=obligations if allow else DENY_OBLIGATIONS,
        decision_id=decision_id if isinstance(decision_id, str) else None,
    )
