"""The audit event schema: what may be logged, checked before anything is written.

An event::

    {"time": "2026-11-22T10:00:00.123Z", "kind": "request", "request_id": "r-1",
     "subject": "alice", "tenant": "acme", "model_digest": "sha256:<64 hex>",
     "action": "predict",
     "decision": {"allow": true, "reasons": [], "decision_id": "d-1"},
     "status": 200, "latency_ms": 12.345, "input_digest": "sha256:<64 hex>",
     "client": "10.0.0.7"}

Fields that may be null may be omitted (they are stored as null); ``time`` defaults to
now and ``latency_ms`` to 0. Anything else is refused with
:class:`~service.audit.errors.AuditEventError`: unknown fields, fields that would carry a
raw input or a credential (``token``, ``authorization``, ``input``, ``features``, ...),
strings that look like a JWT or a bearer credential, wrong types, non-finite numbers.
Raw inputs are never logged: log ``input_digest`` (see :func:`digest_input`).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from json.encoder import encode_basestring as _quote
from typing import Any, Final, Literal, NoReturn, get_args

from service.audit.errors import AuditEventError
from service.digests import DIGEST_FORM, DIGEST_RE

EventKind = Literal["request", "policy_decision", "drift", "service"]
KINDS: Final[frozenset[str]] = frozenset(get_args(EventKind))
FIELDS: Final = frozenset(
    {
        "time",
        "kind",
        "request_id",
        "subject",
        "tenant",
        "model_digest",
        "action",
        "decision",
        "status",
        "latency_ms",
        "input_digest",
        "client",
    }
)
DECISION_FIELDS: Final = frozenset({"allow", "reasons", "decision_id"})
#: Field names that would put a raw input or a credential into the log.
FORBIDDEN_FIELDS: Final = frozenset(
    {
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "authorization",
        "auth",
        "bearer",
        "jwt",
        "password",
        "secret",
        "api_key",
        "apikey",
        "cookie",
        "headers",
        "input",
        "inputs",
        "raw_input",
        "features",
        "instances",
        "image",
        "images",
        "tensor",
        "x",
        "data",
        "body",
        "payload",
        "attributions",
        "explanation",
    }
)
MAX_STRING: Final = 1024
MAX_REASONS: Final = 64

_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_CREDENTIAL_RE = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|[Bb]earer\s|-----BEGIN [A-Z ]*PRIVATE KEY"
)


def now_rfc3339() -> str:
    """Return the current UTC time as RFC 3339 with milliseconds (``...T10:00:00.123Z``)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def digest_input(data: bytes) -> str:
    """Return the ``sha256:<hex>`` digest to log instead of a raw input."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _bad(name: str, value: Any, expected: str) -> NoReturn:
    if name in ("request_id", "action", "client") and value is None:
        raise AuditEventError(f"audit event field {name!r} is required ({expected}).")
    if type(value) is str and len(value) > MAX_STRING:
        raise AuditEventError(
            f"audit event field {name!r} is {len(value)} characters long (at most "
            f"{MAX_STRING}); log a digest instead of large values."
        )
    raise AuditEventError(f"audit event field {name!r} must be {expected}, not {value!r:.80}.")


def _decision(value: Any) -> tuple[bool, str | None, list[str]] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise AuditEventError("audit event field 'decision' must be an object or null.")
    if len(value) > 3 or not DECISION_FIELDS.issuperset(value):
        raise AuditEventError(
            f"audit event decision has unknown field(s) {sorted(set(value) - DECISION_FIELDS)}; "
            f"allowed: {sorted(DECISION_FIELDS)}."
        )
    allow = value.get("allow")
    if type(allow) is not bool:
        raise AuditEventError("audit event decision.allow must be true or false.")
    reasons = value.get("reasons", [])
    if type(reasons) is not list or len(reasons) > MAX_REASONS:
        raise AuditEventError(
            f"audit event decision.reasons must be a list of at most {MAX_REASONS} strings."
        )
    for reason in reasons:
        if type(reason) is not str or len(reason) > MAX_STRING:
            raise AuditEventError(
                f"audit event decision.reasons must hold strings of at most {MAX_STRING} "
                "characters."
            )
    decision_id = value.get("decision_id")
    if decision_id is not None and (type(decision_id) is not str or len(decision_id) > MAX_STRING):
        raise AuditEventError(
            f"audit event decision.decision_id must be null or a string of at most {MAX_STRING} "
            "characters."
        )
    return allow, decision_id, list(reasons)


def _refuse_unknown(event: Mapping[str, Any]) -> None:
    for name in event:
        if name in FIELDS:
            continue
        if type(name) is str and name.lower() in FORBIDDEN_FIELDS:
            raise AuditEventError(
                f"audit event field {name!r} is forbidden: the audit log never holds raw "
                "inputs or credentials; log 'input_digest' (sha256 of the input) instead."
            )
        raise AuditEventError(
            f"audit event field {name!r} is not part of the audit event schema; allowed: "
            f"{sorted(FIELDS)}."
        )


_Fields = tuple[
    str,  # action
    str,  # client
    tuple[bool, str | None, list[str]] | None,  # decision
    str | None,  # input_digest
    str,  # kind
    float,  # latency_ms
    str | None,  # model_digest
    str,  # request_id
    int,  # status
    str | None,  # subject
    str | None,  # tenant
    str,  # time
]


_time_ok = _TIME_RE.fullmatch
_digest_match = DIGEST_RE.fullmatch
_good_digests: dict[str, bool] = {}


def _digest_ok(value: str) -> bool:
    """Check a digest's form, remembering recent good ones (the model digest repeats)."""
    if value in _good_digests:
        return True
    if _digest_match(value) is None:
        return False
    if len(_good_digests) >= 1024:
        _good_digests.clear()
    _good_digests[value] = True
    return True


def _check(event: Mapping[str, Any]) -> _Fields:
    """Validate an event's types and forms; return its values in sorted field-name order.

    One combined test covers the common, valid case; anything it rejects goes through
    :func:`_explain`, which names the fault. String lengths are left to the caller:
    :func:`encode_event` runs :func:`_explain` when the encoded event is longer than
    ``MAX_STRING``, since only then can a single string be too long.
    """
    if type(event) is not dict or len(event) > 12 or not FIELDS.issuperset(event):
        return _explain(event)
    get = event.get
    kind = get("kind")
    when = get("time")
    status = get("status")
    latency = get("latency_ms", 0.0)
    request_id = get("request_id")
    action = get("action")
    client = get("client")
    subject = get("subject")
    tenant = get("tenant")
    model_digest = get("model_digest")
    input_digest = get("input_digest")
    decision = get("decision")
    if (
        kind not in KINDS
        or type(status) is not int
        or not 0 <= status <= 999
        or (type(latency) is not float and type(latency) is not int)
        or not 0 <= latency <= 1e12
        or type(request_id) is not str
        or type(action) is not str
        or type(client) is not str
        or not request_id
        or not action
        or (subject is not None and type(subject) is not str)
        or (tenant is not None and type(tenant) is not str)
        or (
            model_digest is not None
            and (type(model_digest) is not str or not _digest_ok(model_digest))
        )
        or (
            input_digest is not None
            and (type(input_digest) is not str or not _digest_ok(input_digest))
        )
        or (when is not None and (type(when) is not str or not _time_ok(when)))
    ):
        return _explain(event)
    if decision is not None:
        if (
            type(decision) is dict
            and len(decision) == 3
            and DECISION_FIELDS.issuperset(decision)
            and type(decision.get("allow")) is bool
            and type(reasons := decision.get("reasons")) is list
            and len(reasons) <= MAX_REASONS
            and (not reasons or all(type(r) is str for r in reasons))
            and ((decision_id := decision.get("decision_id")) is None or type(decision_id) is str)
        ):
            decision = (decision["allow"], decision_id, list(reasons))
        else:
            decision = _decision(decision)
    return (
        action,
        client,
        decision,
        input_digest,
        kind,
        round(float(latency), 3),
        model_digest,
        request_id,
        status,
        subject,
        tenant,
        now_rfc3339() if when is None else when,
    )


def _explain(event: Mapping[str, Any]) -> _Fields:
    """Validate an event field by field, raising an error that names the first fault."""
    if not isinstance(event, Mapping):
        raise AuditEventError(f"an audit event must be a dict, not {type(event).__name__}.")
    if len(event) > len(FIELDS) or not FIELDS.issuperset(event):
        _refuse_unknown(event)
    get = event.get
    kind = get("kind")
    if kind not in KINDS:
        raise AuditEventError(f"audit event kind {kind!r} is not one of {sorted(KINDS)}.")
    when = get("time")
    if when is None:
        when = now_rfc3339()
    elif type(when) is not str or not _TIME_RE.fullmatch(when):
        raise AuditEventError(
            f"audit event time {when!r:.80} must be RFC 3339 UTC, like '2026-11-22T10:00:00.123Z'."
        )
    status = get("status")
    if type(status) is not int or not 0 <= status <= 999:
        raise AuditEventError(f"audit event status {status!r:.80} must be an integer in 0..999.")
    latency = get("latency_ms", 0.0)
    if type(latency) not in (int, float) or not 0 <= latency <= 1e12:
        raise AuditEventError(
            f"audit event latency_ms {latency!r:.80} must be a finite number of "
            "milliseconds in 0..1e12."
        )
    request_id = get("request_id")
    if type(request_id) is not str or not 0 < len(request_id) <= MAX_STRING:
        _bad("request_id", request_id, "a non-empty string")
    action = get("action")
    if type(action) is not str or not 0 < len(action) <= MAX_STRING:
        _bad("action", action, "a non-empty string")
    client = get("client")
    if type(client) is not str or len(client) > MAX_STRING:
        _bad("client", client, "a string")
    subject = get("subject")
    if subject is not None and (type(subject) is not str or len(subject) > MAX_STRING):
        _bad("subject", subject, "a string or null")
    tenant = get("tenant")
    if tenant is not None and (type(tenant) is not str or len(tenant) > MAX_STRING):
        _bad("tenant", tenant, "a string or null")
    model_digest = get("model_digest")
    if model_digest is not None and (
        type(model_digest) is not str or not DIGEST_RE.fullmatch(model_digest)
    ):
        _bad("model_digest", model_digest, f"null or '{DIGEST_FORM}'")
    input_digest = get("input_digest")
    if input_digest is not None and (
        type(input_digest) is not str or not DIGEST_RE.fullmatch(input_digest)
    ):
        _bad("input_digest", input_digest, f"null or '{DIGEST_FORM}'")
    return (
        action,
        client,
        _decision(get("decision")),
        input_digest,
        kind,
        round(float(latency), 3),
        model_digest,
        request_id,
        status,
        subject,
        tenant,
        when,
    )


def normalize_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``event`` against the schema and return it normalised, keys in sorted order.

    Omitted nullable fields become null, ``time`` defaults to now, ``latency_ms`` is
    rounded to 3 decimals.

    Raises:
        AuditEventError: the event is not a valid audit event (nothing is logged).
    """
    values = _check(event)
    decision = values[2]
    return {
        "action": values[0],
        "client": values[1],
        "decision": None
        if decision is None
        else {"allow": decision[0], "decision_id": decision[1], "reasons": decision[2]},
        "input_digest": values[3],
        "kind": values[4],
        "latency_ms": values[5],
        "model_digest": values[6],
        "request_id": values[7],
        "status": values[8],
        "subject": values[9],
        "tenant": values[10],
        "time": values[11],
    }


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Validate an event and return its encoding: ``fast_encode(normalize_event(event))``.

    The bytes are formatted directly (the hot path); a test checks they equal
    :func:`~service.audit.encoding.fast_encode` of the normalised event.

    Raises:
        AuditEventError: the event is invalid or a value looks like a credential.
    """
    values = _check(event)
    text = _format(values)
    if len(text) > MAX_STRING:
        _explain(event)  # only a long event can hold a string that is too long
    action, client, decision, _, _, _, _, request_id, _, subject, tenant, _ = values
    free = "\0".join(
        (action, client, request_id, subject or "", tenant or "")
        if decision is None
        else (
            action,
            client,
            request_id,
            subject or "",
            tenant or "",
            decision[1] or "",
            *decision[2],
        )
    )
    if ("eyJ" in free or "earer" in free or "PRIVATE KEY" in free) and _CREDENTIAL_RE.search(free):
        raise AuditEventError(
            "audit event holds a value that looks like a token or key (a JWT, 'Bearer ...' "
            "or a PEM private key); credentials are never logged."
        )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise AuditEventError(f"audit event cannot be encoded as UTF-8: {err.reason}") from None


def _format(values: _Fields) -> str:
    """Return the JSON text of checked event values (``fast_encode`` of the event)."""
    (
        action,
        client,
        decision,
        input_digest,
        kind,
        latency,
        model_digest,
        request_id,
        status,
        subject,
        tenant,
        when,
    ) = values
    # Digests, kind and time were checked against patterns that need no JSON escaping.
    if decision is None:
        decision_json = "null"
    else:
        decision_json = (
            f'{{"allow":{"true" if decision[0] else "false"},"decision_id":'
            f"{'null' if decision[1] is None else _quote(decision[1])},"
            f'"reasons":[{",".join([_quote(r) for r in decision[2]])}]}}'
        )
    input_json = "null" if input_digest is None else '"' + input_digest + '"'
    model_json = "null" if model_digest is None else '"' + model_digest + '"'
    return (
        f'{{"action":{_quote(action)},"client":{_quote(client)},"decision":{decision_json},'
        f'"input_digest":{input_json},'
        f'"kind":"{kind}","latency_ms":{latency!r},'
        f'"model_digest":{model_json},'
        f'"request_id":{_quote(request_id)},"status":{status},'
        f'"subject":{"null" if subject is None else _quote(subject)},'
        f'"tenant":{"null" if tenant is None else _quote(tenant)},"time":"{when}"}}'
    )


def build_event(
    *,
    kind: EventKind,
    request_id: str,
    action: str,
    status: int,
    client: str,
    subject: str | None = None,
    tenant: str | None = None,
    model_digest: str | None = None,
    decision: Mapping[str, object] | None = None,
    latency_ms: float = 0.0,
    input_digest: str | None = None,
    time: str | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Build an audit event from keyword arguments (see the module docs).

    Args:
        kind: ``request`` (one per request, with its final status and latency),
            ``policy_decision`` (one per decision OPA was asked for), ``drift`` or
            ``service``.
        request_id: The service's request id.
        action: The requested action (``predict``, ``explain``, ``metadata``, ``drift``).
        status: The HTTP status the request (or the decision) ended with.
        client: The client's address.
        subject: The authenticated subject, None before authentication.
        tenant: The subject's tenant, None before authentication.
        model_digest: ``sha256:...`` of the served model.
        decision: ``{"allow", "reasons", "decision_id"}`` of a ``policy_decision`` event.
        latency_ms: The request's latency (``request`` events).
        input_digest: ``sha256:...`` of the request body, None before it was read.
        time: RFC 3339 UTC; None: now (or, unchecked, the time of the append).
        check: False returns the event as built, for
            :meth:`~service.audit.log.AuditLog.append`, which checks every event as it
            encodes it (the request path pays for one check, not two).

    Returns:
        The normalised event (see :func:`normalize_event`), or with ``check=False`` the
        event as built.

    Raises:
        AuditEventError: a value does not fit the schema (when checked).
    """
    event = {
        "kind": kind,
        "request_id": request_id,
        "action": action,
        "status": status,
        "client": client,
        "subject": subject,
        "tenant": tenant,
        "model_digest": model_digest,
        "decision": dict(decision) if decision is not None else None,
        "latency_ms": latency_ms,
        "input_digest": input_digest,
        "time": time,
    }
    return normalize_event(event) if check else event
