"""The signed, hash-chained model provenance ledger."""

from service.ledger.artifact import hash_artifact
from service.ledger.errors import (
    AnchorError,
    BackendError,
    DuplicateRegistrationError,
    LedgerError,
    LedgerExistsError,
    LedgerIntegrityError,
    LedgerNotFoundError,
    NotRegisteredError,
    RecordSchemaError,
    RevokedError,
    SeparationOfDutiesError,
)
from service.ledger.factory import default_ledger_url, init_ledger, open_ledger
from service.ledger.ledger import Ledger
from service.ledger.records import Record
from service.ledger.rules import ModelState
from service.ledger.verify import (
    LEDGER_LOG,
    ExpectedHead,
    Export,
    SignatureCache,
    VerifyReport,
    parse_export,
    parse_export_document,
    verified_export,
    verified_export_records,
    verify_export,
    verify_export_text,
    verify_records,
)

__all__ = [
    "LEDGER_LOG",
    "AnchorError",
    "BackendError",
    "DuplicateRegistrationError",
    "ExpectedHead",
    "Export",
    "Ledger",
    "LedgerError",
    "LedgerExistsError",
    "LedgerIntegrityError",
    "LedgerNotFoundError",
    "ModelState",
    "NotRegisteredError",
    "Record",
    "RecordSchemaError",
    "RevokedError",
    "SeparationOfDutiesError",
    "SignatureCache",
    "VerifyReport",
    "default_ledger_url",
    "hash_artifact",
    "init_ledger",
    "open_ledger",
    "parse_export",
    "parse_export_document",
    "verified_export",
    "verified_export_records",
    "verify_export",
    "verify_export_text",
    "verify_records",
]
