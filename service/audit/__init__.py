"""The hash-chained, signed audit log of every request and policy decision."""

from service.audit.anchors import (
    AnchorSink,
    FileAnchorSink,
    LedgerAnchorSink,
    default_anchors_path,
)
from service.audit.encoding import fast_encode
from service.audit.errors import (
    AnchorError,
    AuditDirError,
    AuditError,
    AuditEventError,
    AuditRecoverError,
    AuditTrustError,
    AuditVerificationError,
    AuditWriteError,
)
from service.audit.events import (
    EventKind,
    build_event,
    digest_input,
    normalize_event,
    now_rfc3339,
)
from service.audit.log import AuditLog, FsyncMode, open_audit_log
from service.audit.verify import AuditReport, LogSummary, verify_audit_dir

__all__ = [
    "AnchorError",
    "AnchorSink",
    "AuditDirError",
    "AuditError",
    "AuditEventError",
    "AuditLog",
    "AuditRecoverError",
    "AuditReport",
    "AuditTrustError",
    "AuditVerificationError",
    "AuditWriteError",
    "EventKind",
    "FileAnchorSink",
    "FsyncMode",
    "LedgerAnchorSink",
    "LogSummary",
    "build_event",
    "default_anchors_path",
    "digest_input",
    "fast_encode",
    "normalize_event",
    "now_rfc3339",
    "open_audit_log",
    "verify_audit_dir",
]
