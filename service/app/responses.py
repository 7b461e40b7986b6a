"""HTTP responses of the model service: the bodies, one stable error shape, the headers.

A prediction and an explanation share their shape: the request id, the model, one entry
per instance (its label, its probabilities or attributions, its suspicion and whether it
was flagged) and the review id. Every 4xx/5xx body is ``{"error": {"code", "message",
"request_id"}}`` (plus ``reasons`` on a policy denial, ``field`` on a validation error
and ``flagged`` on a rejected flagged input). Messages never carry stack traces, file
paths or credentials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from starlette.responses import Response

from service.app.config import AppConfig
from service.app.gate import VerifiedModel
from service.app.screening import Screening
from service.monitor.metrics import Outcome

if TYPE_CHECKING:
    from service.model.contract import ModelContract

#: Added to every response the service sends (including BentoML's own endpoints).
SECURITY_HEADERS: dict[str, str] = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}
REQUEST_ID_HEADER = "x-request-id"
#: Decimals of the probabilities, attributions and suspicions in a response.
DECIMALS = 6
_OUTCOMES: dict[int, Outcome] = {
    200: "ok",
    401: "unauthenticated",
    403: "denied",
    413: "invalid_input",
    422: "invalid_input",
    431: "invalid_input",
    429: "rate_limited",
    503: "policy_unavailable",
}


class ApiError(Exception):
    """A request ended with an HTTP error; the message is safe to show the client.

    Attributes:
        status: the HTTP status code.
        code: a stable machine-readable error code.
        message: a human-readable explanation and how to fix it.
        headers: extra response headers (``WWW-Authenticate``, ``Retry-After``).
        extra: extra fields of the error object (``reasons``, ``field``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def outcome_of(status: int) -> Outcome:
    """Return the ``ztml_requests_total`` outcome of a response's status code."""
    return _OUTCOMES.get(status, "error" if status >= 500 else "ok")


def invalid_input(field_name: str, message: str) -> ApiError:
    """Return the 422 for a field of the request that is not valid (``field`` names it)."""
    return ApiError(422, "invalid_input", f"{field_name}: {message}", extra={"field": field_name})


def input_flagged(flagged: list[int], reasons: list[str]) -> ApiError:
    """Return the 422 for a flagged input the policy rejects (``flagged`` lists them)."""
    return ApiError(
        422,
        "input_flagged",
        f"{len(flagged)} instance(s) look adversarially perturbed and the policy rejects "
        "flagged inputs; send unmodified inputs.",
        extra={"field": f"instances[{flagged[0]}]", "flagged": flagged, "reasons": reasons},
    )


def unauthenticated(reason: str, challenge: str) -> ApiError:
    """Return the 401 for a missing or refused bearer token, with its challenge."""
    return ApiError(401, "unauthenticated", reason, headers={"www-authenticate": challenge})


def forbidden(reasons: list[str]) -> ApiError:
    """Return the 403 of a policy denial (``reasons`` says why)."""
    return ApiError(
        403, "forbidden", "The request is denied by policy.", extra={"reasons": reasons}
    )


def rate_limited(retry_after_seconds: int) -> ApiError:
    """Return the 429 of an empty token bucket, with its Retry-After."""
    return ApiError(
        429,
        "rate_limited",
        f"Too many requests; retry after {retry_after_seconds} s.",
        headers={"retry-after": str(retry_after_seconds)},
    )


def internal_error() -> ApiError:
    """Return the 500 of an unexpected failure (its details are logged, never sent)."""
    return ApiError(500, "internal_error", "The service failed to answer; try again.")


def layer_unavailable(layer: Literal["monitor", "review", "audit"]) -> ApiError:
    """Return the 503 ``<layer>_unavailable``: a layer's store failed, the request is denied."""
    return ApiError(
        503,
        f"{layer}_unavailable",
        "A security layer of the service is unavailable; the request is denied. Try later.",
        headers={"retry-after": "5"},
    )


def policy_unavailable() -> ApiError:
    """Return the 503 of a request OPA could not decide (denied: fail closed)."""
    return ApiError(
        503,
        "policy_unavailable",
        "The authorization service is unavailable; the request is denied. Try later.",
        headers={"retry-after": "5"},
    )


def audit_unavailable() -> ApiError:
    """Return the 503 of a request whose audit event could not be written (not answered)."""
    return ApiError(503, "audit_unavailable", "The audit log is unavailable; try later.")


def timed_out(seconds: float) -> ApiError:
    """Return the 504 of a request that missed the service's deadline."""
    return ApiError(
        504,
        "timeout",
        f"The request did not finish within {seconds:g} s; send the body at once and "
        "smaller batches.",
    )


def json_response(
    body: Any,
    *,
    status: int = 200,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return a JSON response (compact, no NaN) with the request id header."""
    content = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    response = Response(content, status_code=status, media_type="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def error_body(code: str, message: str, request_id: str, **extra: Any) -> dict[str, Any]:
    """Return the stable error body."""
    return {"error": {"code": code, "message": message, "request_id": request_id, **extra}}


def error_response(err: ApiError, request_id: str) -> Response:
    """Turn an :class:`ApiError` into its JSON response."""
    return json_response(
        error_body(err.code, err.message, request_id, **err.extra),
        status=err.status,
        request_id=request_id,
        headers=err.headers,
    )


def _rounded(values: npt.NDArray[np.floating[Any]]) -> list[float]:
    rounded: list[float] = np.round(values.astype(np.float64), DECIMALS).tolist()
    return rounded


def _instances(
    screening: Screening,
    values: npt.NDArray[np.floating[Any]],
    name: str,
    classes: Sequence[str] | None = None,
) -> list[dict[str, object]]:
    """One entry per instance: its label, ``values[i]`` under ``name``, suspicion, flag.

    The label is the class index; given ``classes``, the class name follows as ``class``.
    """
    squeeze = screening.squeeze
    labels = np.asarray(squeeze.probs).argmax(axis=1)
    return [
        {
            "label": int(labels[i]),
            **({"class": classes[int(labels[i])]} if classes is not None else {}),
            name: _rounded(np.asarray(values[i])),
            "suspicion": round(float(screening.suspicion[i]), DECIMALS),
            "flagged": bool(squeeze.flagged[i]),
        }
        for i in range(len(labels))
    ]


def prediction_body(
    *,
    request_id: str,
    model: Mapping[str, object],
    screening: Screening,
    review_id: int | None,
    classes: Sequence[str] | None = None,
) -> dict[str, object]:
    """Return the body of a served prediction.

    Args:
        request_id: The request's id.
        model: ``{"name", "digest"}`` of the served model.
        screening: The batch's screening (its probabilities are the prediction).
        review_id: The review queue item, None when the batch was not queued.
        classes: The model's class labels (each prediction then names its class).
    """
    probs = np.asarray(screening.squeeze.probs)
    return {
        "request_id": request_id,
        "model": dict(model),
        "predictions": _instances(screening, probs, "probabilities", classes),
        "flagged": screening.flagged,
        "review_id": review_id,
    }


def explanation_body(
    *,
    request_id: str,
    model: Mapping[str, object],
    method: str,
    screening: Screening,
    attributions: npt.NDArray[np.floating[Any]],
    review_id: int | None,
) -> dict[str, object]:
    """Return the body of a served explanation (see :func:`prediction_body`).

    Args:
        request_id: The request's id.
        model: ``{"name", "digest"}`` of the served model.
        method: The attribution method.
        screening: The batch's screening (labels, suspicion, flags).
        attributions: Per-feature attributions, shape (N, 64).
        review_id: The review queue item, None when the batch was not queued.
    """
    return {
        "request_id": request_id,
        "model": dict(model),
        "method": method,
        "explanations": _instances(screening, attributions, "attributions"),
        "review_id": review_id,
    }


def metadata_body(
    config: AppConfig,
    info: VerifiedModel,
    facts: Mapping[str, object] | None = None,
    contract: ModelContract | None = None,
) -> dict[str, object]:
    """Return what a client may know about the served model.

    Args:
        config: The service's settings.
        info: The verified model.
        facts: The model facts the policy sees (name, tenant, risk tier, batch limit,
            explanation rights); default: the settings'.
        contract: A package's declared contract (None: the built-in digits model).
    """
    facts = facts or {
        "name": config.model_name,
        "tenant": config.tenant,
        "risk_tier": config.risk_tier,
        "max_batch": config.max_batch,
        "explanations": True,
    }
    model: dict[str, object] = {
        "name": facts["name"],
        "registered_name": info.name,
        "version": info.version,
        "digest": info.digest,
        "tenant": facts["tenant"],
        "risk_tier": facts["risk_tier"],
    }
    if contract is None:
        return {
            "model": model,
            "input": {
                "shape": [None, 64],
                "dtype": "float32",
                "range": [0.0, 1.0],
                "max_batch": facts["max_batch"],
            },
            "classes": list(range(10)),
        }
    model["explanations"] = facts["explanations"]
    return {
        "model": model,
        "input": {
            "modality": contract.modality,
            "shape": [None, *contract.shape],
            "dtype": contract.dtype,
            "bounds": {"min": contract.lower.tolist(), "max": contract.upper.tolist()},
            "features": list(contract.features) if contract.features is not None else None,
            "image_layout": list(contract.image_layout) if contract.image_layout else None,
            "max_batch": facts["max_batch"],
        },
        "classes": list(range(contract.n_classes)),
        "labels": list(contract.labels),
    }
