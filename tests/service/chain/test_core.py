from pathlib import Path

import pytest

from service.chain.core import GENESIS_HASH, Checkpoint, link_hash, verify_checkpoint
from service.chain.errors import ChainVerificationError
from service.keys.store import Signer, TrustStore, init_keys


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    info = init_keys(tmp_path / "keys", ["audit"])[0]
    return Signer.from_file(info.private_path, "auditor")


def test_link_hash_commits_to_sequence_previous_hash_and_body():
    base = link_hash(0, GENESIS_HASH, {"a": 1})
    assert base != link_hash(1, GENESIS_HASH, {"a": 1})
    assert base != link_hash(0, "1" * 64, {"a": 1})
    assert base != link_hash(0, GENESIS_HASH, {"a": 2})
    assert base == link_hash(0, GENESIS_HASH, {"a": 1})


def test_link_hash_is_independent_of_key_order():
    assert link_hash(3, GENESIS_HASH, {"a": 1, "b": 2}) == link_hash(
        3, GENESIS_HASH, {"b": 2, "a": 1}
    )


def test_checkpoint_round_trips_and_verifies(signer: Signer):
    cp = Checkpoint.create(
        log="L", seq=9, head="ab" * 32, time="2026-01-01T00:00:00Z", signer=signer
    )
    trust = TrustStore.from_public_keys([signer.public_key])
    Checkpoint.from_dict(cp.to_dict()).verify(trust)


@pytest.mark.parametrize("field", ["seq", "head", "log", "time"])
def test_a_changed_checkpoint_field_breaks_its_signature(signer: Signer, field: str):
    cp = Checkpoint.create(
        log="L", seq=9, head="ab" * 32, time="2026-01-01T00:00:00Z", signer=signer
    )
    data = cp.to_dict()
    data[field] = 10 if field == "seq" else "x"
    trust = TrustStore.from_public_keys([signer.public_key])
    with pytest.raises(ChainVerificationError, match="checkpoint"):
        verify_checkpoint(Checkpoint.from_dict(data), trust, "checkpoint 1")


def test_a_malformed_checkpoint_is_rejected():
    with pytest.raises(ValueError, match="malformed checkpoint"):
        Checkpoint.from_dict({"seq": "nine"})
