import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from service.cli.main import app
from service.keys.errors import KeyFileError, KeyPermissionError, SignatureError, UntrustedKeyError
from service.keys.store import (
    Signer,
    TrustStore,
    init_keys,
    key_id,
    load_private_key,
    write_private_pem,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_private_keys_0600_in_a_0700_directory(tmp_path: Path):
    infos = init_keys(tmp_path / "keys", ["trainer", "approver"])
    assert _mode(tmp_path / "keys") == 0o700
    for info in infos:
        assert _mode(info.private_path) == 0o600
        assert info.key_id.startswith("ed25519:") and len(info.key_id) == len("ed25519:") + 16


def test_init_never_overwrites_an_existing_key(tmp_path: Path):
    first = init_keys(tmp_path / "keys", ["trainer"])[0]
    before = first.private_path.read_bytes()
    again = init_keys(tmp_path / "keys", ["trainer"])[0]
    assert not again.created
    assert again.key_id == first.key_id
    assert first.private_path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_private_key_readable_by_others_is_refused(tmp_path: Path, mode: int):
    info = init_keys(tmp_path / "keys", ["trainer"])[0]
    os.chmod(info.private_path, mode)
    with pytest.raises(KeyPermissionError, match="chmod 600"):
        load_private_key(info.private_path)


def test_a_key_directory_open_to_others_is_refused(tmp_path: Path):
    info = init_keys(tmp_path / "keys", ["trainer"])[0]
    os.chmod(tmp_path / "keys", 0o755)
    with pytest.raises(KeyPermissionError, match="chmod 700"):
        load_private_key(info.private_path)


def test_a_missing_key_names_the_command_that_creates_it(tmp_path: Path):
    with pytest.raises(KeyFileError, match="ztml keys init"):
        load_private_key(tmp_path / "nope.key")


def test_a_garbage_key_file_is_rejected_without_echoing_it(tmp_path: Path):
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    bad = directory / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFileError) as excinfo:
        load_private_key(bad)
    assert "c2VjcmV0" not in str(excinfo.value)


def test_trust_store_accepts_the_signer_and_rejects_forgeries(tmp_path: Path):
    info = init_keys(tmp_path / "keys", ["trainer"])[0]
    signer = Signer.from_file(info.private_path, "trainer@test")
    trust = TrustStore.from_directory(tmp_path / "keys")
    signature = signer.sign(b"record")
    trust.verify(signer.key_id, signature, b"record")
    with pytest.raises(SignatureError):
        trust.verify(signer.key_id, signature, b"recorD")
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(UntrustedKeyError):
        trust.verify(key_id(stranger.public_key()), stranger.sign(b"record"), b"record")
    with pytest.raises(SignatureError):
        trust.verify_b64(signer.key_id, "not base64!", b"record")


def test_keys_init_cli_prints_key_ids_but_never_private_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["keys", "init"])
    assert result.exit_code == 0, result.output
    assert "PRIVATE KEY" not in result.output
    for name in ("trainer", "approver", "audit", "issuer"):
        assert name in result.output
        assert (tmp_path / "keys" / f"{name}.key").exists()


def test_keys_init_cli_refuses_loose_permissions_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    init_keys(tmp_path / "keys", ["trainer"])
    os.chmod(tmp_path / "keys" / "trainer.key", 0o644)
    result = CliRunner().invoke(app, ["keys", "init", "--name", "trainer"])
    assert result.exit_code == 1
    assert "chmod 600" in result.output


def test_a_trust_directory_without_public_keys_is_refused(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    for directory in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(KeyFileError, match=r"No trusted public keys .*audit\.pub"):
            TrustStore.from_trust_directory(directory, needed="the audit key (audit.pub)")


def test_a_trust_directory_trusts_exactly_its_public_keys(tmp_path: Path):
    infos = init_keys(tmp_path / "keys", ["trainer", "approver"])
    trust = TrustStore.from_trust_directory(tmp_path / "keys")
    assert set(trust.keys) == {info.key_id for info in infos}


def test_a_private_pem_is_written_0600_and_never_over_an_existing_file(tmp_path: Path):
    path = tmp_path / "k.key"
    write_private_pem(path, Ed25519PrivateKey.generate())
    assert _mode(path) == 0o600
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_private_pem(path, Ed25519PrivateKey.generate())
    assert path.read_bytes() == before


def test_a_role_signer_defaults_to_the_home_key_and_the_host_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    info = init_keys(tmp_path / "keys", ["approver"])[0]
    signer = Signer.for_role("approver")
    assert signer.key_id == info.key_id
    assert signer.identity.startswith("approver@")
    other = init_keys(tmp_path / "elsewhere", ["x"])[0]
    chosen = Signer.for_role("approver", key=other.private_path, identity="bob@example")
    assert (chosen.key_id, chosen.identity) == (other.key_id, "bob@example")


def test_a_role_without_a_key_names_the_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    with pytest.raises(KeyFileError, match=r"trainer\.key"):
        Signer.for_role("trainer")
