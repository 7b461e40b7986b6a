"""The request path of the model service, one stage after another.

authn -> monitor -> authz (OPA) -> sanitize -> infer -> explain/review -> drift -> audit.

While OPA evaluates a request's query, the input is screened on this thread
(:mod:`service.app.screening`: the squeezer's forward passes, the suspicion scores):
pure computation, used only once OPA allowed and every 403/422 check passed, discarded
unseen otherwise. Reviews, drift and the response happen only after the decision.

The policy's ``flagged_input`` fact is not known when the first question is asked, so
that question states ``false``: the truth for every input the squeezer does not flag.
The fact can only add a denial, so an input the squeezer flags is put to OPA again with
``flagged_input: true``, and that decision is enforced: denied (the "flagged input
rejected" rule), the request ends with 422 ``input_flagged`` and is still queued for
review; allowed (``serve_and_flag``), it is served with its flags. A clean request, by
far the most common, keeps its one overlapped decision; a flagged one pays one more
round trip to OPA.

The monitor stage enforces the policy's own per-minute limit of the caller's roles (asked
of OPA once per set of roles, :meth:`Pipeline._rate_limit`), so the token bucket and the
policy agree: a request the limiter admits is never denied for its rate, and a client
that waits for each 429's ``Retry-After`` never gets a 403 for its rate.

A request that fails a stage stops there with its status code in the stable error shape
(:mod:`service.app.responses`); whatever stage ended it, exactly one ``request`` audit
event is appended before the response is sent, plus one ``policy_decision`` event for
each decision OPA was asked for (or could not give).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from starlette.requests import Request
from starlette.responses import Response

from service.app.config import AppConfig
from service.app.drift_feed import DriftFeed
from service.app.gate import VerifiedModel
from service.app.inputs import explanation_method, parse_body, read_body
from service.app.layers import Layers
from service.app.responses import (
    ApiError,
    audit_unavailable,
    error_response,
    explanation_body,
    forbidden,
    input_flagged,
    internal_error,
    invalid_input,
    json_response,
    layer_unavailable,
    metadata_body,
    outcome_of,
    policy_unavailable,
    prediction_body,
    rate_limited,
    timed_out,
    unauthenticated,
)
from service.app.screening import Screening, Withheld, screen_input
from service.app.tls import CLIENT_CERT_SCOPE_KEY
from service.audit import AuditError, EventKind, build_event, digest_input
from service.authn import AuthenticationError, Claims
from service.authz import Decision, PolicyUnavailableError
from service.explainer import explain
from service.monitor import FloodSignal, MonitorSignals, MonitorStoreError, RateLimited, admit
from service.monitor.metrics import monitor_metrics
from service.review import ReviewStoreError

if TYPE_CHECKING:
    from service.model.package import ServedModel

Action = Literal["predict", "explain", "metadata"]
T = TypeVar("T")
_log = logging.getLogger(__name__)
REALM = 'Bearer realm="ztml-model-api"'
CLAIMS_CACHE_SIZE = 4096
#: Sets of roles whose rate limit a worker remembers.
LIMITS_CACHE_SIZE = 1024
#: A layer's store failed: the request is denied with 503, never served without it.
_LAYER_ERRORS = (MonitorStoreError, ReviewStoreError, AuditError)
#: Answers an allowed, sanitized ``predict`` instead of ztml's own prediction body: called
#: with the request's body and id, it returns the response of a wrapped service's API
#: method (see :mod:`service.app.protect`); an :class:`ApiError` it raises is the answer.
Infer = Callable[[bytes, str], Awaitable[Response]]


def _unavailable_layer(err: Exception) -> Literal["monitor", "review", "audit"]:
    """Name the layer whose store failed (for the 503's code and the log)."""
    if isinstance(err, MonitorStoreError):
        return "monitor"
    return "audit" if isinstance(err, AuditError) else "review"


@dataclass
class Call:
    """What the service knows about one request as it moves through the stages."""

    request_id: str
    action: Action
    client: str
    started: float
    subject: str | None = None
    tenant: str | None = None
    roles: tuple[str, ...] = ()
    input_digest: str | None = None
    client_cert: Mapping[str, object] | None = None
    #: The sanitized instances in the caller's units (what a reviewer sees).
    instances: npt.NDArray[np.float32] | None = None


def model_facts(
    config: AppConfig, info: VerifiedModel, served: ServedModel | None
) -> dict[str, object]:
    """Return ``input.model`` of every policy question about the served model.

    The registration's serving facts (tenant, risk tier, batch limit, explanation
    rights), approved with it, are their only source; the name is the registered one
    (the built-in digits model answers to ``ZTML_MODEL_NAME``). Only a model registered
    before serving facts were recorded takes them from the service's settings
    (``ZTML_TENANT``, ``ZTML_RISK_TIER``, ``ZTML_MAX_BATCH``).
    """
    serving = info.serving
    if serving is None:
        return {
            "name": config.model_name,
            "digest": info.digest,
            "tenant": config.tenant,
            "risk_tier": config.risk_tier,
            "max_batch": config.max_batch,
            "explanations": True,
        }
    builtin = served is None or served.builtin
    return {
        "name": config.model_name if builtin else info.name,
        "digest": info.digest,
        "tenant": str(serving["tenant"]),
        "risk_tier": str(serving["risk_tier"]),
        "max_batch": min(int(serving["max_batch"]), config.max_batch),
        "explanations": bool(serving["explanations"]),
    }


class Pipeline:
    """Serves one action through every layer; one instance per worker process."""

    def __init__(self, layers: Layers) -> None:
        self.layers = layers
        self.config = layers.config
        self._contract = layers.contract
        served = layers.served
        # A package's contract (the built-in digits model keeps its own metadata shape).
        self._declared = None if served is None or served.builtin else served.contract
        self._classes = None if self._declared is None else list(self._declared.labels)
        self._model_facts = model_facts(self.config, layers.model_info, layers.served)
        self._model = {k: self._model_facts[k] for k in ("name", "digest")}
        self._to_unit = layers.served.to_unit if layers.served is not None else None
        self._limits: dict[tuple[str, ...], int] = {}
        self._claims: dict[str, Claims] = {}
        self._metrics = monitor_metrics()
        self._drift = DriftFeed(
            layers.drift, layers.drift_lock, window=self.config.drift_window, metrics=self._metrics
        )

    async def handle(
        self, request: Request, action: Action, *, infer: Infer | None = None
    ) -> Response:
        """Serve one request end to end; never raises.

        Args:
            request: The request.
            action: What it asks for.
            infer: Answers a ``predict`` that passed every stage (default: ztml's own
                prediction body from the verified model).
        """
        call = Call(
            request_id=uuid.uuid4().hex,
            action=action,
            client=request.client.host if request.client else "unknown",
            started=time.perf_counter(),
            client_cert=request.scope.get(CLIENT_CERT_SCOPE_KEY),
        )
        deadline = asyncio.timeout(self.config.request_timeout_seconds)
        try:
            async with deadline:
                response = await self._serve(request, call, infer)
        except ApiError as err:
            response = error_response(err, call.request_id)
        except TimeoutError:
            if not deadline.expired():  # some layer's own timeout, not the deadline
                response = self._failed(call)
            else:
                # A slow body upload or a stuck layer: answer (and audit) before BentoML's
                # own timeout would cut the request off without either.
                seconds = self.config.request_timeout_seconds
                response = error_response(timed_out(seconds), call.request_id)
        except _LAYER_ERRORS as err:
            layer = _unavailable_layer(err)
            _log.error(
                "request %s denied: %s unavailable: %s", call.request_id, layer, type(err).__name__
            )
            response = error_response(layer_unavailable(layer), call.request_id)
        except Exception:
            response = self._failed(call)
        status = response.status_code
        try:
            self._metrics.record_request(outcome_of(status))
            latency_ms = round((time.perf_counter() - call.started) * 1000, 3)
            self._record(call, "request", status=status, latency_ms=latency_ms)
        except Exception:
            # Fail closed: a request that cannot be audited is not answered.
            _log.exception("audit append failed for request %s", call.request_id)
            response = error_response(audit_unavailable(), call.request_id)
        return response

    def _failed(self, call: Call) -> Response:
        """The 500 for an unexpected failure (logged with its traceback, never sent)."""
        _log.exception("request %s failed", call.request_id)
        return error_response(internal_error(), call.request_id)

    async def _serve(self, request: Request, call: Call, infer: Infer | None) -> Response:
        claims = self._authenticate(request, call)
        flood = self._admit(call, await self._rate_limit(call))
        signals = MonitorSignals(flood=flood, drift=self._drift.drifted)
        if call.action == "metadata":
            await self._authorize(call, self._policy_input(call, claims, 0, signals))
            metadata = metadata_body(
                self.config, self.layers.model_info, self._model_facts, self._declared
            )
            return json_response(metadata, request_id=call.request_id)
        raw = await read_body(request, limit=self.config.max_body_bytes)
        call.input_digest = digest_input(raw)
        parsed = parse_body(
            raw,
            explain=call.action == "explain",
            max_batch=self.config.max_batch,
            contract=self._contract,
        )
        raw_x = call.instances = parsed.x
        # Every layer past the sanitizer sees the unit form: each feature scaled to [0, 1]
        # by its declared bounds (the digits model's pixels are already).
        x = raw_x if raw_x is None or self._to_unit is None else self._to_unit(raw_x)
        if x is not None:
            extraction = self.layers.extraction.observe(self._history_key(call), x)
            self._metrics.record_extraction(extraction)
            signals = replace(signals, extraction=extraction)
        policy_input = self._policy_input(call, claims, parsed.claimed_batch(), signals)
        # Screening (the model's forward passes) overlaps OPA's evaluation; its result is
        # used only below, once OPA allowed and every 403/422 check passed.
        screen = None if x is None else partial(screen_input, self.layers.squeezer, x)
        decision, screening_in_flight = await self._authorize(call, policy_input, screen)
        if parsed.problem is not None or x is None or parsed.payload is None:
            raise parsed.problem or invalid_input("body", "has no instances")
        limit = decision.obligations.max_batch_size
        if x.shape[0] > limit:
            raise forbidden([f"batch size exceeds {limit}"])
        method = explanation_method(decision, parsed.payload) if call.action == "explain" else None
        screening = screening_in_flight.release()
        if screening.flagged:
            await self._ask_again_flagged(call, policy_input, signals, x, screening)
        review_id = self._queue_for_review(call, x, screening)
        record_drift = partial(self._record, call, "drift", status=200, action="drift")
        self._drift.add(x, request_id=call.request_id, on_drift=record_drift)
        if method is not None:
            attributions = await asyncio.to_thread(
                explain, self.layers.model, x, method=method, n_features=None
            )
            body = explanation_body(
                request_id=call.request_id,
                model=self._model,
                method=method,
                screening=screening,
                attributions=attributions,
                review_id=review_id,
            )
        elif infer is not None:
            return await infer(raw, call.request_id)
        else:
            body = prediction_body(
                request_id=call.request_id,
                model=self._model,
                screening=screening,
                review_id=review_id,
                classes=self._classes,
            )
        return json_response(body, request_id=call.request_id)

    def record_refusal(self, *, request_id: str, client: str, action: str, status: int) -> None:
        """Audit a request the HTTP layer refused before it reached :meth:`handle`.

        Args:
            request_id: The id of the refusal (sent to the client as ``x-request-id``).
            client: The client's address.
            action: The route's name (never the raw path, which the client chose).
            status: The status it was refused with (431 for oversized headers).

        Raises:
            Exception: the event could not be appended; the caller must not answer as if
                it had been (fail closed).
        """
        self._metrics.record_request(outcome_of(status))
        self.layers.audit.append(
            build_event(
                kind="request",
                request_id=request_id,
                action=action,
                client=client,
                status=status,
                model_digest=self.layers.model_info.digest,
                check=False,
            )
        )

    def record_tls_refusal(self, client: str, status: int, reason: str) -> None:
        """Audit a TLS handshake the service refused (see :mod:`service.app.tls`).

        No request was read (no or untrusted client certificate, plain HTTP sent to the
        TLS port), so the event names no route or subject; its reason says what failed.
        """
        self.layers.audit.append(
            build_event(
                kind="service",
                request_id=f"tls-{uuid.uuid4().hex}",
                action="tls_handshake",
                client=client,
                status=status,
                model_digest=self.layers.model_info.digest,
                decision={"allow": False, "reasons": [reason], "decision_id": None},
                check=False,
            )
        )

    # -- stages ----------------------------------------------------------------------------

    def _authenticate(self, request: Request, call: Call) -> Claims:
        header = request.headers.get("authorization")
        try:
            claims = self._verify(header)
        except AuthenticationError as err:
            challenge = REALM if not header else f'{REALM}, error="invalid_token"'
            raise unauthenticated(str(err), challenge) from None
        call.subject, call.tenant = claims.sub, claims.tenant
        call.roles = tuple(sorted(set(claims.roles)))
        return claims

    def _verify(self, header: str | None) -> Claims:
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

    def _history_key(self, call: Call) -> str:
        """The caller's query history for this model.

        Histories of different models, which may differ in width, are kept apart in the
        stack's shared store.
        """
        if self._to_unit is None or self.layers.served is None or self.layers.served.builtin:
            return self._monitor_key(call)
        return f"{self._model['name']}:{self._monitor_key(call)}"

    async def _rate_limit(self, call: Call) -> float:
        """Return the policy's per-minute limit of the caller's roles (asked once per set).

        The rate limiter enforces exactly the limit the policy checks, so a request it
        admits is never denied (403) for its rate. The limit depends on the roles alone;
        it is refreshed by every allowing decision and forgotten on a denial (one of which
        may be due to changed role data), so it is asked again. A subject with no role the
        policy knows gets the configured rate (the policy denies it anyway).
        """
        limit = self._limits.get(call.roles)
        if limit is None:
            try:
                limit = await self.layers.authorizer.rate_limit(call.roles)
            except PolicyUnavailableError as err:
                _log.warning("request %s denied: %s", call.request_id, err)
                raise policy_unavailable() from None
            self._remember_limit(call.roles, limit)
        return float(limit) if limit > 0 else self.config.rate_per_minute

    def _remember_limit(self, roles: tuple[str, ...], limit: int) -> None:
        if roles not in self._limits and len(self._limits) >= LIMITS_CACHE_SIZE:
            self._limits.pop(next(iter(self._limits)))
        self._limits[roles] = limit

    def _admit(self, call: Call, rate_per_minute: float) -> FloodSignal:
        """Take the subject's rate-limit token and count the request (429 when refused)."""
        key = self._monitor_key(call)
        try:
            # The token, the policy's limit over the window and the flood count in one
            # transaction of the shared database.
            flood = admit(
                self.layers.rate_limiter,
                self.layers.flood,
                key,
                rate_per_minute=rate_per_minute,
                burst=self.config.rate_burst,
            )
        except RateLimited as err:
            self._metrics.record_rate_limited()
            raise rate_limited(max(1, math.ceil(float(err.retry_after_seconds)))) from None
        self._metrics.record_flood(flood)
        return flood

    def _policy_input(
        self, call: Call, claims: Claims, batch_size: int, signals: MonitorSignals
    ) -> dict[str, object]:
        """Return the input of ``data.ztml.authz.decision`` for this request."""
        return {
            "subject": claims.subject(),
            "action": call.action,
            "model": self._model_facts,
            "request": {
                "batch_size": batch_size,
                "client_address": call.client,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "monitor": signals.facts(),
            # The caller's verified TLS client certificate (null without one).
            "client_cert": call.client_cert,
        }

    async def _ask(
        self,
        call: Call,
        policy_input: Mapping[str, object],
        *,
        denied_status: int,
        meanwhile: Callable[[], T] | None = None,
    ) -> tuple[Decision, Withheld[T]]:
        """Ask OPA and audit its decision; 503 (audited) when it cannot give one.

        ``meanwhile`` is pure computation (no I/O, no records) that runs on this thread
        once the query is on its way, so it overlaps OPA's evaluation; it comes back
        withheld, for the caller to release only after an allowing decision.
        """
        withheld: Withheld[T] = Withheld()
        try:
            pending = await self.layers.authorizer.submit(dict(policy_input))
            try:
                withheld.run(meanwhile)
            except BaseException:
                pending.discard()
                raise
            decision = await pending.decision()
        except PolicyUnavailableError as err:
            _log.warning("request %s denied: %s", call.request_id, err)
            self._record(call, "policy_decision", status=503, decision=Decision.unavailable(err))
            raise policy_unavailable() from None
        status = 200 if decision.allow else denied_status
        self._record(call, "policy_decision", status=status, decision=decision)
        return decision, withheld

    async def _authorize(
        self,
        call: Call,
        policy_input: Mapping[str, object],
        meanwhile: Callable[[], T] | None = None,
    ) -> tuple[Decision, Withheld[T]]:
        """Return OPA's allowing decision, or raise 403/503; apply its rate obligation."""
        decision, withheld = await self._ask(
            call, policy_input, denied_status=403, meanwhile=meanwhile
        )
        if not decision.allow:
            self._limits.pop(call.roles, None)
            raise forbidden(list(decision.reasons))
        self._remember_limit(call.roles, decision.obligations.rate_limit_per_minute)
        return decision, withheld

    async def _ask_again_flagged(
        self,
        call: Call,
        policy_input: Mapping[str, object],
        signals: MonitorSignals,
        x: npt.NDArray[np.float32],
        screening: Screening,
    ) -> None:
        """Put a flagged input to OPA with ``flagged_input: true``; 422 when it denies.

        The rejected input is still queued for a human to see.
        """
        flagged_input = {**policy_input, "monitor": replace(signals, flagged_input=True).facts()}
        decision, _ = await self._ask(call, flagged_input, denied_status=422)
        if decision.allow:
            return
        self._queue_for_review(call, x, screening)
        raise input_flagged(screening.flagged_instances(), list(decision.reasons))

    def _queue_for_review(
        self, call: Call, x: npt.NDArray[np.float32], screening: Screening
    ) -> int | None:
        """Queue a flagged or suspicious batch for review; return its id (None: not queued)."""
        reasons = screening.review_reasons(self.config.suspicion_threshold)
        if not reasons:
            return None
        return self.layers.review.add(
            request_id=call.request_id,
            subject=call.subject,
            tenant=call.tenant,
            model_digest=self.layers.model_info.digest,
            reasons=reasons,
            suspicion=float(screening.suspicion.max()),
            input_digest=call.input_digest,
            instances=x if call.instances is None else call.instances,
            layout=self._contract.image_layout,
            features=self._contract.features,
        )

    def _record(
        self,
        call: Call,
        kind: EventKind,
        *,
        status: int,
        decision: Decision | None = None,
        latency_ms: float = 0.0,
        action: str | None = None,
    ) -> int:
        """Append one event about ``call`` to the audit log; return its sequence number."""
        return self.layers.audit.append(
            build_event(
                kind=kind,
                request_id=call.request_id,
                action=action or call.action,
                client=call.client,
                status=status,
                subject=call.subject,
                tenant=call.tenant,
                model_digest=self.layers.model_info.digest,
                input_digest=call.input_digest,
                decision=decision.audit() if decision is not None else None,
                latency_ms=latency_ms,
                check=False,  # the log checks it once, as it appends it
            )
        )
