"""The register record's optional ``oms_bundle``: recorded, verified, and never required."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.keys.store import TrustStore
from service.ledger import Ledger
from service.ledger.errors import RecordSchemaError
from service.ledger.schema import check_payload
from service.ledger.verify import verified_export_records

BUNDLE = {"digest": "sha256:" + "b" * 64, "key_hint": "c" * 64}


def test_a_register_record_carries_the_bundle_digest_and_verifies(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    record = register(1, oms_bundle=BUNDLE)
    assert record.payload["oms_bundle"] == BUNDLE
    ledger.verify(trust)
    (exported,) = verified_export_records(json.dumps(ledger.export(trust)), trust)
    assert exported.payload["oms_bundle"] == BUNDLE


def test_records_without_a_bundle_digest_still_verify(
    ledger: Ledger, register: Any, trust: TrustStore
) -> None:
    assert "oms_bundle" not in register(1).payload
    register(2, oms_bundle=BUNDLE)
    assert ledger.verify(trust).count == 2


@pytest.mark.parametrize(
    ("bundle", "field"),
    [
        ({"digest": "md5:abc", "key_hint": "c" * 64}, "payload.oms_bundle.digest"),
        ({"digest": BUNDLE["digest"], "key_hint": "XYZ"}, "payload.oms_bundle.key_hint"),
        ({"digest": BUNDLE["digest"]}, "missing key_hint"),
        ("sha256:" + "b" * 64, "payload.oms_bundle: must be a JSON object"),
    ],
)
def test_a_malformed_bundle_digest_is_refused(register: Any, bundle: Any, field: str) -> None:
    with pytest.raises(RecordSchemaError, match=field):
        register(1, oms_bundle=bundle)


def test_the_bundle_digest_is_only_for_register_records(digest_of: Any) -> None:
    with pytest.raises(RecordSchemaError, match="unexpected oms_bundle"):
        check_payload("approve", digest_of(1), {"comment": "ok", "oms_bundle": BUNDLE})
