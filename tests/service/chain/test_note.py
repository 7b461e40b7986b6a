"""Signed notes: Go's published vector, vkeys, cosignatures and rejection rules."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.chain.errors import NoteError
from service.chain.note import COSIGNATURE_V1, ED25519, SignedNote, Verifier, cosign, sign
from service.chain.tlog import TreeCheckpoint, witness_verifier
from service.keys.store import Signer, TrustStore

# The example of golang.org/x/mod/sumdb/note (its documentation), used as data only.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb"
    "6KE6RyyBwJnAM=\n"
)


def _go_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return Ed25519PrivateKey.from_private_bytes(seed)


def test_signing_reproduces_gos_published_note() -> None:
    signature = sign(GO_TEXT, name="PeterNeumann", private_key=_go_key())
    assert SignedNote(GO_TEXT, (signature,)).render() == GO_TEXT + "\n" + GO_SIG


def test_gos_vkey_parses_and_verifies_gos_note() -> None:
    verifier = Verifier.parse(GO_VKEY)
    assert verifier.vkey() == GO_VKEY and verifier.signature_type == ED25519
    verified = SignedNote.parse(GO_TEXT + "\n" + GO_SIG).verify([verifier])
    assert list(verified) == [verifier]


def test_a_vkey_whose_id_does_not_match_is_refused() -> None:
    with pytest.raises(NoteError, match="key id"):
        Verifier.parse(GO_VKEY.replace("c74f20a3", "c74f20a4"))


def test_unknown_signers_are_ignored_but_a_bad_known_one_rejects() -> None:
    note = SignedNote.parse(GO_TEXT + "\n" + GO_SIG)
    other = Verifier("Other", ED25519, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(NoteError, match="not trusted"):
        note.verify([other])
    tampered = SignedNote.parse(GO_TEXT.replace("problem,", "problem;") + "\n" + GO_SIG)
    with pytest.raises(NoteError, match="does not verify"):
        tampered.verify([Verifier.parse(GO_VKEY)])


def test_cosignature_verifies_with_its_timestamp_and_not_as_a_plain_signature() -> None:
    key = Ed25519PrivateKey.generate()
    text = "example.com/log\n5\n" + base64.b64encode(b"\x01" * 32).decode() + "\n"
    signature = cosign(text, name="w.example/1", private_key=key, timestamp=1_700_000_000)
    note = SignedNote(text, (signature,))
    verifier = Verifier("w.example/1", COSIGNATURE_V1, key.public_key())
    assert SignedNote.parse(note.render()).verify([verifier]) == {verifier: 1_700_000_000}
    with pytest.raises(NoteError):
        note.verify([Verifier("w.example/1", ED25519, key.public_key())])


def test_checkpoint_needs_a_trusted_log_key_and_every_witness() -> None:
    log, witness = (
        Signer("log", Ed25519PrivateKey.generate()),
        Signer("w", Ed25519PrivateKey.generate()),
    )
    trust = TrustStore.from_public_keys([log.public_key])
    checkpoint = TreeCheckpoint.create(
        origin="ztml.local/ledger/x", size=3, root=b"\x02" * 32, signer=log
    )
    parsed = TreeCheckpoint.parse(checkpoint.text)
    assert (parsed.origin, parsed.size, parsed.root) == ("ztml.local/ledger/x", 3, b"\x02" * 32)
    parsed.verify(trust)
    wv = witness_verifier("w.example/1", witness.public_key)
    with pytest.raises(NoteError, match="not cosigned"):
        parsed.verify(trust, witnesses=[wv])
    cosigned = parsed.cosigned(name="w.example/1", signer=witness, timestamp=5)
    TreeCheckpoint.parse(cosigned.text).verify(trust, witnesses=[wv])
    with pytest.raises(NoteError, match="not trusted"):
        parsed.verify(TrustStore.from_public_keys([witness.public_key]))


def test_checkpoint_with_extension_lines_or_bad_root_is_refused() -> None:
    log = Signer("log", Ed25519PrivateKey.generate())
    good = TreeCheckpoint.create(origin="o", size=1, root=b"\x00" * 32, signer=log).text
    text, sigs = good.split("\n\n")
    for body in (text + "\nextra", text.replace("\n1\n", "\n01\n"), "o\n1\nAAAA"):
        with pytest.raises(NoteError):
            TreeCheckpoint.parse(body + "\n\n" + sigs)
