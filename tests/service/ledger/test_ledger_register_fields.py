"""The register record's optional contract, calibration and serving fields."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from service.keys.store import TrustStore
from service.ledger import Ledger
from service.ledger.errors import RecordSchemaError
from service.ledger.schema import check_payload
from service.ledger.verify import verified_export_records
from service.model.contract import DIGITS_CONTRACT

CONTRACT = {"digest": DIGITS_CONTRACT.digest(), "document": DIGITS_CONTRACT.document()}
CALIBRATION: dict[str, Any] = {
    "detector": "feature-squeezing",
    "parameters": {"bit_depth": 4, "median": 2},
    "threshold": 0.42,
    "fpr_target": 0.05,
    "fpr_measured": 0.048,
    "n": 360,
    "data_digest": "sha256:" + "e" * 64,
}
SERVING: dict[str, Any] = {
    "tenant": "acme",
    "risk_tier": "medium",
    "max_batch": 64,
    "explanations": True,
}


def test_a_record_with_all_new_fields_verifies_and_exports(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    record = register(1, contract=CONTRACT, calibration=CALIBRATION, serving=SERVING)
    assert record.payload["contract"] == CONTRACT
    assert record.payload["calibration"] == CALIBRATION
    assert record.payload["serving"] == SERVING
    ledger.verify(trust)
    (exported,) = verified_export_records(json.dumps(ledger.export(trust)), trust)
    assert exported.payload["serving"] == SERVING


def test_older_records_without_the_fields_still_verify(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    plain = register(1)
    assert not {"contract", "calibration", "serving"} & set(plain.payload)
    register(2, serving=SERVING)
    assert ledger.verify(trust).count == 2


def _with(base: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(base)
    if value is _DROP:
        del changed[key]
    else:
        changed[key] = value
    return changed


_DROP = object()


@pytest.mark.parametrize(
    ("contract", "field"),
    [
        ({**CONTRACT, "digest": "sha256:" + "0" * 64}, "payload.contract.digest: is sha256:000"),
        ({**CONTRACT, "digest": "md5:1"}, "payload.contract.digest: must be 'sha256:'"),
        ({**CONTRACT, "document": []}, "payload.contract.document: must be a JSON object"),
        ({"digest": CONTRACT["digest"]}, "payload.contract: missing document"),
        ({**CONTRACT, "extra": 1}, "payload.contract: unexpected extra"),
        (
            {**CONTRACT, "document": {**CONTRACT["document"], "name": "other"}},
            "payload.contract.digest: is sha256:",
        ),
    ],
)
def test_a_bad_contract_is_refused_by_field(register: Any, contract: Any, field: str) -> None:
    with pytest.raises(RecordSchemaError, match=field):
        register(1, contract=contract)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("detector", "", "payload.calibration.detector: must be a non-empty string"),
        ("parameters", [1], "payload.calibration.parameters: must be a JSON object"),
        ("threshold", "0.4", "payload.calibration.threshold: must be a number"),
        ("threshold", True, "payload.calibration.threshold: must be a number"),
        ("fpr_target", 0.0, r"payload.calibration.fpr_target: must be within \(0, 1\)"),
        ("fpr_target", 1.0, r"payload.calibration.fpr_target: must be within \(0, 1\)"),
        ("fpr_measured", 1.5, r"payload.calibration.fpr_measured: must be within \[0.0, 1.0\]"),
        ("n", 0, "payload.calibration.n: must be an integer >= 1"),
        ("n", 2.5, "payload.calibration.n: must be an integer >= 1"),
        ("data_digest", "abc", "payload.calibration.data_digest: must be 'sha256:'"),
        ("detector", _DROP, "payload.calibration: missing detector"),
        ("extra", 1, "payload.calibration: unexpected extra"),
    ],
)
def test_a_bad_calibration_is_refused_by_field(
    register: Any, key: str, value: Any, field: str
) -> None:
    with pytest.raises(RecordSchemaError, match=field):
        register(1, calibration=_with(CALIBRATION, key, value))


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("tenant", "", "payload.serving.tenant: must be 1-63"),
        ("tenant", "a/b", "payload.serving.tenant: must be 1-63"),
        ("risk_tier", "extreme", "payload.serving.risk_tier: must be one of low, medium, high"),
        ("max_batch", 0, r"payload.serving.max_batch: must be an integer within 1..1024"),
        ("max_batch", 1025, r"payload.serving.max_batch: must be an integer within 1..1024"),
        ("max_batch", True, r"payload.serving.max_batch: must be an integer within 1..1024"),
        ("explanations", "yes", "payload.serving.explanations: must be true or false"),
        ("tenant", _DROP, "payload.serving: missing tenant"),
    ],
)
def test_bad_serving_settings_are_refused_by_field(
    register: Any, key: str, value: Any, field: str
) -> None:
    with pytest.raises(RecordSchemaError, match=field):
        register(1, serving=_with(SERVING, key, value))


def test_the_new_fields_are_only_for_register_records(digest_of: Any) -> None:
    with pytest.raises(RecordSchemaError, match="unexpected serving"):
        check_payload("approve", digest_of(1), {"comment": "ok", "serving": SERVING})
