"""Ed25519 keys with key ids, kept with strict file permissions, and canonical JSON."""

from service.keys.store import (
    Signer,
    TrustStore,
    init_keys,
    key_id,
    load_private_key,
    load_public_key,
)

__all__ = ["Signer", "TrustStore", "init_keys", "key_id", "load_private_key", "load_public_key"]
