"""The forms of ztml's identifiers: ``sha256:`` digests and signing-key ids.

A digest names a model artifact, training data or a request's input. One definition
serves every package (ledger records, audit events, metrics files, the service and the
Pulumi configuration); the module imports nothing of ztml, so any module can use it.
"""

from __future__ import annotations

import re

#: The digest form, unanchored, for embedding in larger patterns (an image reference).
DIGEST_PATTERN = r"sha256:[0-9a-f]{64}"
#: Match a whole digest with ``DIGEST_RE.fullmatch(value)``.
DIGEST_RE = re.compile(DIGEST_PATTERN)
#: How a digest is described in error messages.
DIGEST_FORM = "sha256:<64 lowercase hex>"

#: A signing key's id: ``ed25519:`` and the first 16 hex digits of the sha256 of its raw
#: public key (see ``service.keys.store.key_id``). Match with ``KEY_ID_RE.fullmatch``.
KEY_ID_RE = re.compile(r"ed25519:[0-9a-f]{16}")
