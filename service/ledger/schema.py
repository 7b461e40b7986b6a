"""The shape of ledger records and their payloads.

Validators return nothing or raise :class:`RecordSchemaError` naming the bad field. They
are used both when a record is appended and when stored or exported records are verified.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from service.chain.tlog import LogCheckpoint
from service.digests import DIGEST_RE, KEY_ID_RE
from service.ledger.errors import RecordSchemaError

RecordType = Literal["register", "evaluate", "approve", "revoke", "anchor"]
RECORD_TYPES: frozenset[str] = frozenset(get_args(RecordType))
MODEL_EVENTS: frozenset[str] = frozenset({"register", "evaluate", "approve", "revoke"})

RECORD_FIELDS = frozenset(
    {"seq", "type", "time", "model_digest", "signer", "payload", "prev_hash", "hash", "signature"}
)
PAYLOAD_FIELDS: dict[str, frozenset[str]] = {
    "register": frozenset(
        {
            "name",
            "version",
            "artifact",
            "training_data_digest",
            "code_revision",
            "hyperparameters",
            "evaluation",
        }
    ),
    "evaluate": frozenset({"evaluation"}),
    "approve": frozenset({"comment"}),
    "revoke": frozenset({"reason"}),
    "anchor": frozenset({"log", "seq", "head", "time", "key_id", "signature"}),
}
# Fields a payload may carry in addition (records written before them still verify):
# ``oms_bundle`` is the digest and signer key hint of the OMS bundle checked at registration;
# ``contract`` the model contract (``ztml-model.json``) and its RFC 8785 digest;
# ``calibration`` the adversarial-input detector's calibration on the validation data;
# ``serving`` who serves the model and how (tenant, risk tier, batch limit, explanations).
OPTIONAL_PAYLOAD_FIELDS: dict[str, frozenset[str]] = {
    "register": frozenset({"oms_bundle", "contract", "calibration", "serving"})
}
CONTRACT_FIELDS = frozenset({"digest", "document"})
CALIBRATION_FIELDS = frozenset(
    {"detector", "parameters", "threshold", "fpr_target", "fpr_measured", "n", "data_digest"}
)
SERVING_FIELDS = frozenset({"tenant", "risk_tier", "max_batch", "explanations"})
RISK_TIERS = ("low", "medium", "high")
MAX_SERVING_BATCH = 1024
TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

#: An anchored audit checkpoint in the C2SP note form (see ``service.chain.tlog``).
TREE_ANCHOR_FIELDS = frozenset({"log", "note"})

HEX64_RE = re.compile(r"[0-9a-f]{64}")
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")


def _fail(where: str, problem: str) -> RecordSchemaError:
    return RecordSchemaError(f"{where}: {problem}")


def check_str(value: Any, where: str, *, nonempty: bool = True) -> str:
    """Return ``value`` if it is a (non-empty) string."""
    if not isinstance(value, str) or (nonempty and not value):
        raise _fail(where, "must be a non-empty string" if nonempty else "must be a string")
    return value


def check_int(value: Any, where: str, *, minimum: int = 0) -> int:
    """Return ``value`` if it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(where, f"must be an integer >= {minimum}")
    return value


def check_number(value: Any, where: str, *, low: float = 0.0, high: float | None = None) -> float:
    """Return ``value`` if it is a finite number within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, "must be a number")
    if not (value >= low and (high is None or value <= high)):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise _fail(where, f"must be within {bound}, got {value}")
    return float(value)


def check_digest(value: Any, where: str) -> str:
    """Return ``value`` if it is ``sha256:`` and 64 lowercase hex digits."""
    if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
        raise _fail(where, "must be 'sha256:' followed by 64 lowercase hex digits")
    return value


def check_time(value: Any, where: str) -> str:
    """Return ``value`` if it is an RFC 3339 UTC time ending in ``Z``."""
    if not isinstance(value, str) or not TIME_RE.fullmatch(value):
        raise _fail(where, "must be an RFC 3339 UTC time like 2026-11-22T10:00:00Z")
    return value


def check_object(value: Any, where: str, fields: frozenset[str] | None = None) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object (with exactly ``fields``, if given)."""
    if not isinstance(value, dict):
        raise _fail(where, "must be a JSON object")
    if fields is not None and set(value) != fields:
        missing = sorted(fields - set(value))
        extra = sorted(set(value) - fields)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise _fail(where, "; ".join(parts))
    return value


def check_evaluation(value: Any, where: str = "evaluation") -> None:
    """Check an evaluation: clean accuracy plus robust accuracy per attack, eps and steps.

    Known fields are type-checked; extra fields (e.g. per-class results) are allowed.
    """
    evaluation = check_object(value, where)
    for required in ("clean_accuracy", "robust"):
        if required not in evaluation:
            raise _fail(where, f"missing {required}")
    if "dataset" in evaluation:
        check_str(evaluation["dataset"], f"{where}.dataset")
    check_number(evaluation["clean_accuracy"], f"{where}.clean_accuracy", high=1.0)
    robust = evaluation["robust"]
    if not isinstance(robust, list):
        raise _fail(f"{where}.robust", "must be a list of attack results")
    for i, entry in enumerate(robust):
        at = f"{where}.robust[{i}]"
        check_object(entry, at)
        for required in ("attack", "epsilon", "steps", "accuracy"):
            if required not in entry:
                raise _fail(at, f"missing {required}")
        check_str(entry["attack"], f"{at}.attack")
        check_number(entry["epsilon"], f"{at}.epsilon")
        check_int(entry["steps"], f"{at}.steps")
        check_number(entry["accuracy"], f"{at}.accuracy", high=1.0)
        if "norm" in entry:
            check_str(entry["norm"], f"{at}.norm")
        if "restarts" in entry:
            check_int(entry["restarts"], f"{at}.restarts")


def check_contract(value: Any, where: str = "contract") -> None:
    """Check a model contract entry ``{"digest", "document"}``.

    The digest must be the sha256 of the RFC 8785 canonical form of the document (the
    document's own schema is checked where it is parsed, ``service.model.contract``).
    """
    import hashlib

    import rfc8785

    contract = check_object(value, where, CONTRACT_FIELDS)
    check_digest(contract["digest"], f"{where}.digest")
    document = check_object(contract["document"], f"{where}.document")
    try:
        canonical = rfc8785.dumps(document)
    except (ValueError, TypeError) as err:
        raise _fail(f"{where}.document", f"is not canonical JSON: {err}") from None
    actual = f"sha256:{hashlib.sha256(canonical).hexdigest()}"
    if actual != contract["digest"]:
        raise _fail(
            f"{where}.digest",
            f"is {contract['digest']} but the document's RFC 8785 digest is {actual}",
        )


def check_calibration(value: Any, where: str = "calibration") -> None:
    """Check a detector calibration (detector, parameters, threshold, FPRs, n, data)."""
    calibration = check_object(value, where, CALIBRATION_FIELDS)
    check_str(calibration["detector"], f"{where}.detector")
    check_object(calibration["parameters"], f"{where}.parameters")
    threshold = calibration["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise _fail(f"{where}.threshold", "must be a number")
    if threshold != threshold or threshold in (float("inf"), float("-inf")):
        raise _fail(f"{where}.threshold", "must be a finite number")
    target = check_number(calibration["fpr_target"], f"{where}.fpr_target", high=1.0)
    if not 0.0 < target < 1.0:
        raise _fail(f"{where}.fpr_target", f"must be within (0, 1), got {target}")
    check_number(calibration["fpr_measured"], f"{where}.fpr_measured", high=1.0)
    check_int(calibration["n"], f"{where}.n", minimum=1)
    check_digest(calibration["data_digest"], f"{where}.data_digest")


def check_serving(value: Any, where: str = "serving") -> None:
    """Check serving settings ``{"tenant", "risk_tier", "max_batch", "explanations"}``."""
    serving = check_object(value, where, SERVING_FIELDS)
    tenant = serving["tenant"]
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise _fail(
            f"{where}.tenant",
            "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    if serving["risk_tier"] not in RISK_TIERS:
        raise _fail(f"{where}.risk_tier", f"must be one of {', '.join(RISK_TIERS)}")
    batch = serving["max_batch"]
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_SERVING_BATCH:
        raise _fail(f"{where}.max_batch", f"must be an integer within 1..{MAX_SERVING_BATCH}")
    if not isinstance(serving["explanations"], bool):
        raise _fail(f"{where}.explanations", "must be true or false")


def check_signer(value: Any, where: str = "signer") -> None:
    """Check a signer reference ``{"identity", "key_id"}``."""
    signer = check_object(value, where, frozenset({"identity", "key_id"}))
    check_str(signer["identity"], f"{where}.identity")
    if not isinstance(signer["key_id"], str) or not KEY_ID_RE.fullmatch(signer["key_id"]):
        raise _fail(f"{where}.key_id", "must be 'ed25519:' followed by 16 lowercase hex digits")


def check_tree_anchor(model_digest: Any, payload: Any) -> None:
    """Check an anchor of an audit tree checkpoint: ``{"log", "note"}``.

    The note must be a C2SP checkpoint of that audit log (its signature is checked by
    the verifier against the trust store).
    """
    if model_digest is not None:
        raise _fail("model_digest", "must be null for an anchor record")
    check_object(payload, "payload", TREE_ANCHOR_FIELDS)
    check_str(payload["log"], "payload.log")
    try:
        LogCheckpoint.from_dict(payload)
    except ValueError as err:
        raise _fail("payload.note", str(err)) from None


def check_payload(record_type: str, model_digest: Any, payload: Any) -> None:
    """Check the payload of a record of ``record_type`` (and its model digest)."""
    if record_type not in RECORD_TYPES:
        raise _fail("type", f"unknown record type {record_type!r}")
    if record_type == "anchor" and isinstance(payload, dict) and "note" in payload:
        check_tree_anchor(model_digest, payload)
        return
    optional = OPTIONAL_PAYLOAD_FIELDS.get(record_type, frozenset())
    present = optional & set(check_object(payload, "payload"))
    check_object(payload, "payload", PAYLOAD_FIELDS[record_type] | present)
    if record_type == "anchor":
        if model_digest is not None:
            raise _fail("model_digest", "must be null for an anchor record")
        check_str(payload["log"], "payload.log")
        check_int(payload["seq"], "payload.seq")
        if not isinstance(payload["head"], str) or not HEX64_RE.fullmatch(payload["head"]):
            raise _fail("payload.head", "must be 64 lowercase hex digits")
        check_time(payload["time"], "payload.time")
        check_str(payload["key_id"], "payload.key_id")
        check_str(payload["signature"], "payload.signature")
        return
    check_digest(model_digest, "model_digest")
    if record_type == "register":
        check_str(payload["name"], "payload.name")
        check_str(payload["version"], "payload.version")
        artifact = check_object(
            payload["artifact"], "payload.artifact", frozenset({"digest", "format", "size"})
        )
        check_digest(artifact["digest"], "payload.artifact.digest")
        if artifact["digest"] != model_digest:
            raise _fail("payload.artifact.digest", "must equal the record's model_digest")
        check_str(artifact["format"], "payload.artifact.format")
        check_int(artifact["size"], "payload.artifact.size")
        check_digest(payload["training_data_digest"], "payload.training_data_digest")
        check_str(payload["code_revision"], "payload.code_revision")
        check_object(payload["hyperparameters"], "payload.hyperparameters")
        check_evaluation(payload["evaluation"], "payload.evaluation")
        if "oms_bundle" in payload:
            bundle = check_object(
                payload["oms_bundle"], "payload.oms_bundle", frozenset({"digest", "key_hint"})
            )
            check_digest(bundle["digest"], "payload.oms_bundle.digest")
            if not isinstance(bundle["key_hint"], str) or not HEX64_RE.fullmatch(
                bundle["key_hint"]
            ):
                raise _fail("payload.oms_bundle.key_hint", "must be 64 lowercase hex digits")
        if "contract" in payload:
            check_contract(payload["contract"], "payload.contract")
        if "calibration" in payload:
            check_calibration(payload["calibration"], "payload.calibration")
        if "serving" in payload:
            check_serving(payload["serving"], "payload.serving")
    elif record_type == "evaluate":
        check_evaluation(payload["evaluation"], "payload.evaluation")
    elif record_type == "approve":
        check_str(payload["comment"], "payload.comment", nonempty=False)
    else:
        check_str(payload["reason"], "payload.reason")
