"""The request path of the model service, one stage after another.

authn -> monitor -> authz (OPA) -> sanitize -> infer -> explain/review -> drift -> audit.

While OPA evaluates a request's query, the squeezer (the model's forward passes) and the
suspicion scores run on this thread (:meth:`Pipeline._authorize`, ``meanwhile``): pure
computation, used only once OPA allowed and every 403/422 check passed, discarded
unseen otherwise. Reviews, drift and the response happen only after the decision.

A request that fails a stage stops there with its status code in the stable error shape
(:mod:`service.app.responses`); whatever stage ended it, exactly one ``request`` audit
event is appended before the response is sent, plus one ``policy_decision`` event for
each decision OPA was asked for (or could not give).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from starlette.requests import Request
from starlette.responses import Response

from service.app.layers import Layers
from service.app.overlap import Early
from service.app.responses import ApiError, error_response, json_response

Action = Literal["predict", "explain", "metadata"]
T = TypeVar("T")
_log = logging.getLogger(__name__)
REALM = 'Bearer realm="ztml-model-api"'
DECIMALS = 6
CLAIMS_CACHE_SIZE = 4096
_OUTCOMES: dict[int, Any] = {
    200: "ok",
    401: "unauthenticated",
    403: "denied",
    413: "invalid_input",
    422: "invalid_input",
    429: "rate_limited",
    503: "policy_unavailable",
}


def _dependency_errors() -> tuple[type[Exception], ...]:
    from service.audit import AuditError
    from service.monitor import MonitorStoreError
    from service.review import ReviewStoreError

    return (MonitorStoreError, ReviewStoreError, AuditError)


def _what(err: Exception) -> tuple[str, str]:
    from service.audit import AuditError
    from service.monitor import MonitorStoreError

    if isinstance(err, MonitorStoreError):
        return "monitor", type(err).__name__
    if isinstance(err, AuditError):
        return "audit", type(err).__name__
    return "review", type(err).__name__


@dataclass
class Call:
    """What the service knows about one request as it moves through the stages."""

    request_id: str
    action: Action
    client: str
    started: float
    subject: str | None = None
    tenant: str | None = None
    input_digest: str | None = None
    decisions: int = 0


@dataclass(frozen=True)
class Screening:
    """The squeezer's results for a batch and each instance's suspicion score."""

    result: Any
    suspicion: npt.NDArray[np.float64]


def _round(values: npt.NDArray[np.floating[Any]]) -> list[Any]:
    return np.round(values.astype(np.float64), DECIMALS).tolist()


class Pipeline:
    """Serves one action through every layer; one instance per worker process."""

    def __init__(self, layers: Layers) -> None:
        self.layers = layers
        self.config = layers.config
        self._rates: dict[str, float] = {}
        self._claims: dict[str, Any] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._drift_rows: list[npt.NDArray[np.float32]] = []
        self._drift_count = 0
        self._drift = False
        from service.monitor.metrics import monitor_metrics

        self._metrics = monitor_metrics()

    # -- entry point ---------------------------------------------------------------------

    async def handle(self, request: Request, action: Action) -> Response:
        """Serve one request end to end; never raises."""
        call = Call(
            request_id=uuid.uuid4().hex,
            action=action,
            client=request.client.host if request.client else "unknown",
            started=time.perf_counter(),
        )
        deadline = asyncio.timeout(self.config.request_timeout_seconds)
        try:
            async with deadline:
                response = await self._serve(request, call)
        except ApiError as err:
            response = error_response(err, call.request_id)
        except TimeoutError:
            if not deadline.expired():  # some layer's own timeout, not the deadline
                response = self._failed(call)
            else:
                # A slow body upload or a stuck layer: answer (and audit) before BentoML's
                # own timeout would cut the request off without either.
                response = error_response(
                    ApiError(
                        504,
                        "timeout",
                        f"The request did not finish within "
                        f"{self.config.request_timeout_seconds:g} s; send the body at once "
                        "and smaller batches.",
                    ),
                    call.request_id,
                )
        except _dependency_errors() as err:
            # A layer's store failed (monitor, review queue, audit): deny, never serve
            # without it.
            _log.error("request %s denied: %s unavailable: %s", call.request_id, *_what(err))
            response = error_response(
                ApiError(
                    503,
                    f"{_what(err)[0]}_unavailable",
                    "A security layer of the service is unavailable; the request is denied. "
                    "Try later.",
                    headers={"retry-after": "5"},
                ),
                call.request_id,
            )
        except Exception:
            response = self._failed(call)
        try:
            self._audit(call, status=response.status_code)
        except Exception:
            # Fail closed: a request that cannot be audited is not answered.
            _log.exception("audit append failed for request %s", call.request_id)
            response = error_response(
                ApiError(503, "audit_unavailable", "The audit log is unavailable; try later."),
                call.request_id,
            )
        return response

    def _failed(self, call: Call) -> Response:
        """The 500 for an unexpected failure (logged with its traceback, never sent)."""
        _log.exception("request %s failed", call.request_id)
        return error_response(
            ApiError(500, "internal_error", "The service failed to answer; try again."),
            call.request_id,
        )

    # -- stages ----------------------------------------------------------------------------

    def _authenticate(self, request: Request, call: Call) -> Any:
        from service.authn import AuthenticationError

        header = request.headers.get("authorization")
        try:
            claims = self._verify(header)
        except AuthenticationError as err:
            challenge = REALM if not header else f'{REALM}, error="invalid_token"'
            raise ApiError(
                401, "unauthenticated", str(err), headers={"www-authenticate": challenge}
            ) from None
        call.subject, call.tenant = claims.sub, claims.tenant
        return claims

    def _verify(self, header: str | None) -> Any:
        """Verify a bearer header, reusing the result for a token already verified.

        The cache is keyed by the exact header bytes, holds only tokens whose signature
        and claims verified, and drops an entry once its ``exp`` has passed (stricter than
        the verifier's leeway), so it never accepts what the verifier would refuse.
        """
        now = time.time()
        if header is not None:
            cached = self._claims.get(header)
            if cached is not None:
                if cached.exp > now:
                    return cached
                del self._claims[header]
        claims = self.layers.verifier.verify(header)
        if header is not None and claims.exp > now:
            if len(self._claims) >= CLAIMS_CACHE_SIZE:
                self._claims.pop(next(iter(self._claims)))
            self._claims[header] = claims
        return claims

    def _monitor_key(self, call: Call) -> str:
        return f"{call.tenant}/{call.subject}"

    def _rate_limit(self, call: Call) -> Any:
        from service.monitor import RateLimited, admit

        key = self._monitor_key(call)
        rate = self._rates.get(key, self.config.rate_per_minute)
        try:
            # The token and the flood count in one transaction of the shared database.
            signal = admit(
                self.layers.rate_limiter,
                self.layers.flood,
                key,
                rate_per_minute=rate,
                burst=self.config.rate_burst,
            )
        except RateLimited as err:
            self._metrics.record_rate_limited()
            retry = max(1, math.ceil(float(err.retry_after_seconds)))
            raise ApiError(
                429,
                "rate_limited",
                f"Too many requests; retry after {retry} s.",
                headers={"retry-after": str(retry)},
            ) from None
        self._metrics.record_flood(signal)
        return signal

    async def _read_body(self, request: Request, call: Call) -> bytes:
        from service.audit import digest_input
        from service.sanitizer import PayloadTooLargeError, check_body_size

        limit = self.config.max_body_bytes
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
        body = b"".join(chunks)
        call.input_digest = digest_input(body)
        return body

    def _decode(self, body: bytes) -> tuple[Any, ApiError | None]:
        if not body:
            return None, self._invalid("body", 'is empty; send {"instances": [...]}')
        try:
            return json.loads(body), None
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None, self._invalid("body", "is not valid JSON")

    @staticmethod
    def _invalid(field_name: str, message: str) -> ApiError:
        return ApiError(
            422, "invalid_input", f"{field_name}: {message}", extra={"field": field_name}
        )

    def _parse(
        self, payload: Any, action: Action
    ) -> tuple[npt.NDArray[np.float32] | None, ApiError | None]:
        from service.sanitizer import InputValidationError, parse_instances

        if not isinstance(payload, dict):
            return None, self._invalid("body", 'must be a JSON object {"instances": [...]}')
        known = {"instances", "method"} if action == "explain" else {"instances"}
        unknown = sorted(set(payload) - known)
        if unknown:
            return None, self._invalid(unknown[0][:64], "is not a known field")
        try:
            return parse_instances(payload, max_batch=self.config.max_batch), None
        except InputValidationError as err:
            return None, self._invalid(err.field, err.message)

    @staticmethod
    def _claimed_batch(payload: Any) -> int:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        return len(instances) if isinstance(instances, list) and instances else 1

    def _policy_input(
        self, call: Call, claims: Any, *, batch_size: int, flood: Any, extraction: Any
    ) -> dict[str, Any]:
        info = self.layers.model_info
        return {
            "subject": {
                "sub": claims.sub,
                "roles": list(claims.roles),
                "tenant": claims.tenant,
                "scopes": list(claims.scopes),
            },
            "action": call.action,
            "model": {
                "name": self.config.model_name,
                "digest": info.digest,
                "tenant": self.config.tenant,
                "risk_tier": self.config.risk_tier,
            },
            "request": {
                "batch_size": batch_size,
                "client_address": call.client,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "monitor": {
                "rate_per_minute": float(flood.rate_per_minute),
                "extraction_suspicion": float(extraction.suspicion) if extraction else 0.0,
                "extraction_flagged": bool(extraction.flagged) if extraction else False,
                "flood": bool(flood.flood),
                "drift": self._drift,
                "flagged_input": False,
            },
        }

    async def _authorize(
        self,
        call: Call,
        claims: Any,
        *,
        batch_size: int,
        flood: Any,
        extraction: Any,
        meanwhile: Callable[[], T] | None = None,
    ) -> tuple[Any, Early[T]]:
        """Ask OPA; return its allowing decision or raise 403/503 (audited either way).

        ``meanwhile`` is pure computation (no I/O, no records) that runs on this thread
        once the query is on its way, so it overlaps OPA's evaluation. Its result (or
        error) comes back only with an allowing decision; on a denial or an unavailable
        policy it is discarded unseen.
        """
        from service.authz import PolicyUnavailableError

        policy_input = self._policy_input(
            call, claims, batch_size=batch_size, flood=flood, extraction=extraction
        )
        early: Early[T] = Early()
        try:
            pending = await self.layers.authorizer.submit(policy_input)
            try:
                early.run(meanwhile)
            except BaseException:
                pending.discard()
                raise
            decision = await pending.decision()
        except PolicyUnavailableError as err:
            _log.warning("request %s denied: %s", call.request_id, err)
            self._audit_decision(
                call, {"allow": False, "reasons": [str(err)], "decision_id": None}, status=503
            )
            raise ApiError(
                503,
                "policy_unavailable",
                "The authorization service is unavailable; the request is denied. Try later.",
                headers={"retry-after": "5"},
            ) from None
        self._audit_decision(call, decision.audit(), status=200 if decision.allow else 403)
        if not decision.allow:
            raise ApiError(
                403,
                "forbidden",
                "The request is denied by policy.",
                extra={"reasons": list(decision.reasons)},
            )
        if decision.obligations.rate_limit_per_minute > 0:
            self._rates[self._monitor_key(call)] = float(decision.obligations.rate_limit_per_minute)
        return decision, early

    def _drift_in_background(self, call: Call, x: npt.NDArray[np.float32]) -> None:
        """Feed the drift monitor off the request path.

        A full window runs per-feature KS tests (tens of ms); they run in a thread so
        neither this response nor other requests wait for them. The drift fact reaches
        the policy for later requests; a drift is audited as its own event.
        """
        self._drift_rows.append(x)
        self._drift_count += x.shape[0]
        if self._drift_count < self.config.drift_window:
            return  # buffered; the monitor gets whole windows
        rows = np.concatenate(self._drift_rows)
        self._drift_rows, self._drift_count = [], 0
        task = asyncio.create_task(asyncio.to_thread(self._observe_drift, call, rows))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _observe_drift(self, call: Call, x: npt.NDArray[np.float32]) -> None:
        try:
            self._test_drift(call, x)
        except Exception:  # a monitoring failure must not go unnoticed, nor kill the loop
            _log.exception("drift monitoring failed for request %s", call.request_id)

    def _test_drift(self, call: Call, x: npt.NDArray[np.float32]) -> None:
        with self.layers.drift_lock:
            result = self.layers.drift.observe(x)
        if result is None:
            return
        drifted = bool(result.drifted)
        self._drift = drifted
        self._metrics.record_drift(result)
        if drifted:
            self._append(
                {
                    "kind": "drift",
                    "request_id": call.request_id,
                    "subject": call.subject,
                    "tenant": call.tenant,
                    "model_digest": self.layers.model_info.digest,
                    "action": "drift",
                    "decision": None,
                    "status": 200,
                    "latency_ms": 0.0,
                    "input_digest": call.input_digest,
                    "client": call.client,
                }
            )

    # -- the actions -----------------------------------------------------------------------

    async def _serve(self, request: Request, call: Call) -> Response:
        claims = self._authenticate(request, call)
        flood = self._rate_limit(call)
        if call.action == "metadata":
            await self._authorize(call, claims, batch_size=0, flood=flood, extraction=None)
            return json_response(self.metadata(), request_id=call.request_id)
        body = await self._read_body(request, call)
        payload, problem = self._decode(body)
        x: npt.NDArray[np.float32] | None = None
        if problem is None:
            x, problem = self._parse(payload, call.action)
        batch = int(x.shape[0]) if x is not None else self._claimed_batch(payload)
        extraction = None
        if x is not None:
            extraction = self.layers.extraction.observe(self._monitor_key(call), x)
            self._metrics.record_extraction(extraction)
        decision, early = await self._authorize(
            call,
            claims,
            batch_size=batch,
            flood=flood,
            extraction=extraction,
            # Squeezing (the model's forward passes) overlaps OPA's evaluation; its result
            # is used only below, once OPA allowed and every 403/422 check passed.
            meanwhile=None if x is None else partial(self._screen_input, x),
        )
        if problem is not None or x is None:
            raise problem or self._invalid("body", "has no instances")
        if x.shape[0] > decision.obligations.max_batch_size:
            raise ApiError(
                403,
                "forbidden",
                "The batch is larger than the policy allows.",
                extra={"reasons": [f"batch size exceeds {decision.obligations.max_batch_size}"]},
            )
        if call.action == "explain":
            return await self._explain(call, x, payload, decision, early)
        return self._predict(call, x, decision, early.value())

    def _screen_input(self, x: npt.NDArray[np.float32]) -> Screening:
        """Squeeze ``x`` and score each instance's suspicion (pure computation)."""
        from service.explainer import suspicion_score

        result = self.layers.squeezer.analyze(x)
        threshold = max(self.layers.squeezer.threshold, 1e-6)
        suspicion = np.array(
            [
                suspicion_score(
                    result.probs[i], float(result.scores[i]), squeeze_threshold=threshold
                )
                for i in range(x.shape[0])
            ]
        )
        return Screening(result=result, suspicion=suspicion)

    def _screen(
        self, call: Call, x: npt.NDArray[np.float32], screened: Screening, decision: Any
    ) -> None:
        """Apply the policy's ``flagged_input`` obligation (after OPA allowed)."""
        result = screened.result
        if bool(result.flagged.any()) and decision.obligations.flagged_input == "reject":
            self._review(call, x, screened)  # rejected, and still queued for a human to see
            flagged = [int(i) for i in np.flatnonzero(result.flagged)]
            raise ApiError(
                422,
                "input_flagged",
                f"{len(flagged)} instance(s) look adversarially perturbed and the policy "
                "rejects flagged inputs; send unmodified inputs.",
                extra={"field": f"instances[{flagged[0]}]", "flagged": flagged},
            )

    def _review(self, call: Call, x: npt.NDArray[np.float32], screened: Screening) -> Any:
        suspicion = screened.suspicion
        flagged = bool(screened.result.flagged.any())
        top = float(suspicion.max())
        if not flagged and top <= self.config.suspicion_threshold:
            return None
        reasons = []
        if flagged:
            reasons.append("feature squeezing flagged the input")
        if top > self.config.suspicion_threshold:
            reasons.append(f"suspicion {top:.3f} above {self.config.suspicion_threshold}")
        return self.layers.review.add(
            request_id=call.request_id,
            subject=call.subject,
            tenant=call.tenant,
            model_digest=self.layers.model_info.digest,
            reasons=reasons,
            suspicion=top,
            input_digest=call.input_digest,
            instances=x,
        )

    def _accept(
        self, call: Call, x: npt.NDArray[np.float32], screened: Screening, decision: Any
    ) -> Any:
        """After OPA allowed: screen, queue for review if suspicious, feed drift.

        Applies the ``flagged_input`` obligation (raising 422 on reject) and returns the
        review id, None when the input was not queued.
        """
        self._screen(call, x, screened, decision)
        review_id = self._review(call, x, screened)
        self._drift_in_background(call, x)
        return review_id

    def _predict(
        self, call: Call, x: npt.NDArray[np.float32], decision: Any, screened: Screening
    ) -> Response:
        review_id = self._accept(call, x, screened, decision)
        result, suspicion = screened.result, screened.suspicion
        probs = np.asarray(result.probs)
        labels = probs.argmax(axis=1)
        body = {
            "request_id": call.request_id,
            "model": {"name": self.config.model_name, "digest": self.layers.model_info.digest},
            "predictions": [
                {
                    "label": int(labels[i]),
                    "probabilities": _round(probs[i]),
                    "suspicion": round(float(suspicion[i]), DECIMALS),
                    "flagged": bool(result.flagged[i]),
                }
                for i in range(x.shape[0])
            ],
            "flagged": bool(result.flagged.any()),
            "review_id": review_id,
        }
        return json_response(body, request_id=call.request_id)

    async def _explain(
        self,
        call: Call,
        x: npt.NDArray[np.float32],
        payload: Any,
        decision: Any,
        early: Early[Screening],
    ) -> Response:
        from service.explainer import explain

        if not decision.obligations.explanations_allowed:
            raise ApiError(
                403,
                "forbidden",
                "The request is denied by policy.",
                extra={"reasons": ["the policy does not allow explanations for this subject"]},
            )
        method = payload.get("method", "integrated_gradients")
        if method not in ("integrated_gradients", "saliency"):
            raise self._invalid("method", "must be 'integrated_gradients' or 'saliency'")
        screened = early.value()
        review_id = self._accept(call, x, screened, decision)
        result, suspicion = screened.result, screened.suspicion
        probs = np.asarray(result.probs)
        labels = probs.argmax(axis=1)
        attributions = await asyncio.to_thread(explain, self.layers.model, x, method=method)
        body = {
            "request_id": call.request_id,
            "model": {"name": self.config.model_name, "digest": self.layers.model_info.digest},
            "method": method,
            "explanations": [
                {
                    "label": int(labels[i]),
                    "attributions": _round(np.asarray(attributions[i])),
                    "suspicion": round(float(suspicion[i]), DECIMALS),
                    "flagged": bool(result.flagged[i]),
                }
                for i in range(x.shape[0])
            ],
            "review_id": review_id,
        }
        return json_response(body, request_id=call.request_id)

    def metadata(self) -> dict[str, Any]:
        """Return what a client may know about the served model."""
        info = self.layers.model_info
        return {
            "model": {
                "name": self.config.model_name,
                "registered_name": info.name,
                "version": info.version,
                "digest": info.digest,
                "tenant": self.config.tenant,
                "risk_tier": self.config.risk_tier,
            },
            "input": {
                "shape": [None, 64],
                "dtype": "float32",
                "range": [0.0, 1.0],
                "max_batch": self.config.max_batch,
            },
            "classes": list(range(10)),
        }

    # -- audit -------------------------------------------------------------------------

    def _append(self, event: dict[str, Any]) -> int:
        event["time"] = None
        event = {k: v for k, v in event.items() if v is not None or k == "decision"}
        return self.layers.audit.append(event)

    def _audit_decision(self, call: Call, decision: dict[str, Any], *, status: int) -> None:
        call.decisions += 1
        self._append(
            {
                "kind": "policy_decision",
                "request_id": call.request_id,
                "subject": call.subject,
                "tenant": call.tenant,
                "model_digest": self.layers.model_info.digest,
                "action": call.action,
                "decision": decision,
                "status": status,
                "latency_ms": 0.0,
                "input_digest": call.input_digest,
                "client": call.client,
            }
        )

    def _audit(self, call: Call, *, status: int) -> None:
        self._metrics.record_request(_OUTCOMES.get(status, "error" if status >= 500 else "ok"))
        self._append(
            {
                "kind": "request",
                "request_id": call.request_id,
                "subject": call.subject,
                "tenant": call.tenant,
                "model_digest": self.layers.model_info.digest,
                "action": call.action,
                "decision": None,
                "status": status,
                "latency_ms": round((time.perf_counter() - call.started) * 1000, 3),
                "input_digest": call.input_digest,
                "client": call.client,
            }
        )
