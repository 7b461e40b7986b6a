"""OMS signer keys: ztml's signing key is private, the trusted set fails closed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.keys.store import public_pem
from service.oms import (
    OmsKeyError,
    OmsTrustError,
    TrustedSigners,
    init_signing_key,
    key_hint,
    signers_dir,
)
from service.oms.signers import load_signing_key


def test_init_writes_a_private_key_and_trusts_its_public_key(tmp_path: Path) -> None:
    info = init_signing_key(tmp_path / "keys")
    assert stat.S_IMODE(info.private_path.stat().st_mode) == 0o600
    assert info.public_path == tmp_path / "keys" / "oms_signers" / "oms-signer.pub"
    trusted = TrustedSigners.from_directory(info.public_path.parent)
    assert trusted.keys == {info.hint: info.public_path}


def test_init_keeps_an_existing_key(tmp_path: Path) -> None:
    first = init_signing_key(tmp_path / "keys")
    again = init_signing_key(tmp_path / "keys")
    assert (first.created, again.created) == (True, False)
    assert again.hint == first.hint


def test_the_hint_is_the_librarys_key_identifier(tmp_path: Path) -> None:
    import hashlib

    info = init_signing_key(tmp_path / "keys")
    public = load_signing_key(info.private_path).public_key()
    assert key_hint(public) == hashlib.sha256(info.public_path.read_bytes()).hexdigest()


def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    info = init_signing_key(tmp_path / "keys")
    info.private_path.chmod(0o644)
    with pytest.raises(OmsKeyError, match="chmod 600"):
        load_signing_key(info.private_path)


def test_an_empty_signers_directory_trusts_nobody(tmp_path: Path) -> None:
    (tmp_path / "oms_signers").mkdir()
    with pytest.raises(OmsTrustError, match="No trusted OMS signer keys"):
        TrustedSigners.from_directory(tmp_path / "oms_signers")


def test_a_missing_signers_directory_trusts_nobody(tmp_path: Path) -> None:
    with pytest.raises(OmsTrustError, match="ztml keys init"):
        TrustedSigners.from_directory(tmp_path / "absent")


def test_a_non_ec_key_among_the_signers_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "oms_signers"
    directory.mkdir()
    (directory / "ed.pub").write_text(public_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(OmsTrustError, match="not an elliptic-curve public key"):
        TrustedSigners.from_directory(directory)


def test_the_signers_directory_follows_the_trust_directory(tmp_path: Path) -> None:
    assert signers_dir(tmp_path, env={}) == tmp_path / "oms_signers"
    moved = tmp_path / "elsewhere"
    assert signers_dir(tmp_path, env={"ZTML_OMS_SIGNERS_DIR": str(moved)}) == moved
