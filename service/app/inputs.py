"""The request body: read within its size limit, decoded and sanitized.

A body that is too large ends the request at once (413): it is never read whole. A body
that does not decode or sanitize is kept as a :class:`Parsed` with its problem, which the
request path raises only after the policy decided (so a denial still names the policy's
reasons and every request is decided and audited the same way).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from starlette.requests import Request

from service.app.responses import ApiError, forbidden, invalid_input
from service.authz import Decision
from service.explainer import METHODS, Method
from service.model.contract import DIGITS_CONTRACT, ModelContract
from service.sanitizer import (
    InputValidationError,
    PayloadTooLargeError,
    check_body_size,
    check_json_depth,
    max_json_depth,
    parse_instances,
)


@dataclass(frozen=True)
class Parsed:
    """A request body after the sanitizer: its instances, or why it has none.

    Attributes:
        payload: The decoded JSON object; None when the body is not one.
        x: The sanitized instances in raw units, shape (N, d); None when there is a problem.
        problem: Why the body cannot be served (a 422), None when it can.
    """

    payload: dict[str, object] | None
    x: npt.NDArray[np.float32] | None
    problem: ApiError | None

    def claimed_batch(self) -> int:
        """The batch size to ask the policy about (the payload's, when it did not parse)."""
        if self.x is not None:
            return int(self.x.shape[0])
        instances = self.payload.get("instances") if self.payload is not None else None
        return len(instances) if isinstance(instances, list) and instances else 1


async def read_body(request: Request, *, limit: int) -> bytes:
    """Read the body, refusing it as soon as it (or its Content-Length) exceeds ``limit``.

    Raises:
        ApiError: 400 for a Content-Length that is not a number, 413 for a body too large.
    """
    declared = request.headers.get("content-length")
    try:
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "bad_request", "Content-Length is not a number.")
            check_body_size(int(declared), limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            check_body_size(size, limit)
            chunks.append(chunk)
    except PayloadTooLargeError as err:
        raise ApiError(413, "payload_too_large", str(err)) from None
    return b"".join(chunks)


def _invalid(err: InputValidationError) -> ApiError:
    """The 422 of a validation error; a named feature follows its field in the message."""
    problem = invalid_input(err.field, err.message)
    if err.feature is not None:
        problem.message = f"{err.field} ({err.feature}): {err.message}"
        problem.extra["feature"] = err.feature
    return problem


def parse_body(
    body: bytes, *, explain: bool, max_batch: int, contract: ModelContract = DIGITS_CONTRACT
) -> Parsed:
    """Decode and sanitize a predict (or, with ``explain``, an explain) request body.

    Args:
        body: The raw body.
        explain: Whether it is an explain request (which may name a ``method``).
        max_batch: The most instances accepted.
        contract: The served model's declared input contract.
    """
    if not body:
        return Parsed(None, None, invalid_input("body", 'is empty; send {"instances": [...]}'))
    try:
        check_json_depth(body, max_json_depth(contract))
    except InputValidationError as err:
        return Parsed(None, None, invalid_input(err.field, err.message))
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Parsed(None, None, invalid_input("body", "is not valid JSON"))
    if not isinstance(payload, dict):
        problem = invalid_input("body", 'must be a JSON object {"instances": [...]}')
        return Parsed(None, None, problem)
    known = {"instances", "method"} if explain else {"instances"}
    unknown = sorted(set(payload) - known)
    if unknown:
        return Parsed(payload, None, invalid_input(unknown[0][:64], "is not a known field"))
    try:
        x = parse_instances(payload, max_batch=max_batch, contract=contract)
    except InputValidationError as err:
        return Parsed(payload, None, _invalid(err))
    return Parsed(payload, x, None)


def explanation_method(decision: Decision, payload: Mapping[str, object]) -> Method:
    """Return the requested attribution method, once the policy allows explanations.

    Raises:
        ApiError: 403 when the decision's obligations allow no explanation, 422 for an
            unknown method.
    """
    if not decision.obligations.explanations_allowed:
        raise forbidden(["the policy does not allow explanations for this subject"])
    requested = payload.get("method", "integrated_gradients")
    for method in METHODS:
        if requested == method:
            return method
    raise invalid_input("method", "must be 'integrated_gradients' or 'saliency'")
