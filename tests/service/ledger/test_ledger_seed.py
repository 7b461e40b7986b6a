"""The pod's ledger seeding: verified records only, never over a divergent ledger."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.keys.store import Signer, TrustStore, public_pem
from service.ledger import Ledger, hash_artifact, open_ledger
from service.ledger.errors import SeedError
from service.ledger.seed import main, seed_ledger
from service.oms import OmsBundle, sign_model
from tests.service.ledger.conftest import Register, digest_of
from tests.service.oms.tampering import ATTACKS, REFUSALS, OmsKeys, attack, make_keys


@dataclass(frozen=True)
class PodModel:
    """The model file baked into the pod, its digest and its OMS bundle."""

    path: Path
    digest: str
    bundle: OmsBundle


@pytest.fixture
def oms(tmp_path: Path) -> OmsKeys:
    return make_keys(tmp_path / "oms")


@pytest.fixture
def pod_model(oms: OmsKeys, tmp_path: Path) -> PodModel:
    """A signed model directory: weights and their contract (metrics.json)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = model_dir / "model.safetensors"
    path.write_bytes(os.urandom(4096))
    (model_dir / "metrics.json").write_text(json.dumps({"model": {"version": "3"}}))
    bundle = sign_model(model_dir, key=oms.key)
    return PodModel(path, hash_artifact(path)[0], bundle)


@pytest.fixture
def export_path(
    ledger: Ledger,
    register: Register,
    approver: Signer,
    trust: TrustStore,
    tmp_path: Path,
    pod_model: PodModel,
) -> Path:
    """An export of a ledger with an approved and a revoked model, and the pod's, approved."""
    register(1)
    ledger.approve(digest_of(1), signer=approver, comment="ok")
    register(2)
    ledger.revoke(digest_of(2), signer=approver, reason="data leak")
    register(
        3,
        artifact={"digest": pod_model.digest, "format": "safetensors", "size": 4096},
        oms_bundle=pod_model.bundle.ledger_entry(),
    )
    ledger.approve(pod_model.digest, signer=approver, comment="ok")
    path = tmp_path / "export" / "ledger-export.json"
    path.parent.mkdir()
    path.write_text(json.dumps(ledger.export(trust), indent=1))
    return path


@pytest.fixture
def trust_dir(
    trainer: Signer, approver: Signer, auditor: Signer, oms: OmsKeys, tmp_path: Path
) -> Path:
    directory = tmp_path / "trust"
    directory.mkdir()
    for name, signer in (("trainer", trainer), ("approver", approver), ("audit", auditor)):
        (directory / f"{name}.pub").write_text(public_pem(signer.public_key))
    shutil.copytree(oms.signers, directory / "oms_signers")
    return directory


def _records(export_path: Path) -> list[dict[str, object]]:
    data = json.loads(export_path.read_text())
    return list(data["records"] if isinstance(data, dict) else data)


def test_seeded_ledger_verifies_with_the_same_records(
    export_path: Path, trust_dir: Path, tmp_path: Path
) -> None:
    url = str(tmp_path / "home" / "ledger.db")
    (tmp_path / "home").mkdir()
    appended = seed_ledger(export_path=export_path, ledger_url=url, trust_dir=trust_dir)
    assert appended == len(_records(export_path))
    with open_ledger(url, create=False) as book:
        export = book.export(TrustStore.from_directory(trust_dir))
    assert export["verified"] is True
    assert export["records"] == _records(export_path)


def test_seeding_twice_appends_nothing(export_path: Path, trust_dir: Path, tmp_path: Path) -> None:
    url = str(tmp_path / "seeded.db")
    seed_ledger(export_path=export_path, ledger_url=url, trust_dir=trust_dir)
    assert seed_ledger(export_path=export_path, ledger_url=url, trust_dir=trust_dir) == 0


def test_tampered_export_is_not_seeded(export_path: Path, trust_dir: Path, tmp_path: Path) -> None:
    data = json.loads(export_path.read_text())
    records = data["records"] if isinstance(data, dict) else data
    records[0]["payload"]["version"] = "forged"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    url = tmp_path / "seeded.db"
    with pytest.raises(SeedError, match="does not verify"):
        seed_ledger(export_path=forged, ledger_url=str(url), trust_dir=trust_dir)
    assert not url.exists()


def test_divergent_ledger_is_not_overwritten(
    export_path: Path, trust_dir: Path, tmp_path: Path
) -> None:
    url = str(tmp_path / "seeded.db")
    with open_ledger(url) as book:
        book.register(
            signer=Signer("intruder@example", Ed25519PrivateKey.generate()),
            name="other",
            version="1",
            artifact={"digest": "sha256:" + "7" * 64, "format": "safetensors", "size": 1},
            training_data_digest="sha256:" + "8" * 64,
            code_revision="x",
            hyperparameters={},
            evaluation={"clean_accuracy": 0.5, "robust": []},
        )
    with pytest.raises(SeedError, match="diverges"):
        seed_ledger(export_path=export_path, ledger_url=url, trust_dir=trust_dir)


def test_seed_without_trusted_keys_is_refused(export_path: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SeedError, match="No trusted"):
        seed_ledger(export_path=export_path, ledger_url=str(tmp_path / "l.db"), trust_dir=empty)


def test_command_line_reports_failure_with_exit_code(
    export_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(
        [
            "--export",
            str(export_path),
            "--ledger",
            str(tmp_path / "l.db"),
            "--trust-dir",
            str(empty),
        ]
    )
    assert code == 1
    assert "ledger seed failed" in capsys.readouterr().err


def test_command_line_seeds_and_reports_the_count(
    export_path: Path,
    trust_dir: Path,
    tmp_path: Path,
    pod_model: PodModel,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = str(tmp_path / "l.db")
    command = ["--export", str(export_path), "--ledger", url, "--trust-dir", str(trust_dir)]
    code = main([*command, "--model-digest", pod_model.digest, "--model-path", str(pod_model.path)])
    assert code == 0
    assert f"{len(_records(export_path))} record(s) appended" in capsys.readouterr().out


def test_the_pods_audit_key_is_made_once_in_a_private_directory(
    export_path: Path,
    trust_dir: Path,
    tmp_path: Path,
    pod_model: PodModel,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = tmp_path / "home" / "keys"
    command = [
        "--export",
        str(export_path),
        "--ledger",
        str(tmp_path / "l.db"),
        "--trust-dir",
        str(trust_dir),
        "--model-digest",
        pod_model.digest,
        "--model-path",
        str(pod_model.path),
        "--audit-keys",
        str(keys),
    ]
    assert main(command) == 0
    first = (keys / "audit.key").read_bytes()
    said = capsys.readouterr().out
    assert main(command) == 0  # a restarted pod keeps its key
    assert (keys / "audit.key").read_bytes() == first
    assert keys.stat().st_mode & 0o777 == 0o700
    assert (keys / "audit.key").stat().st_mode & 0o777 == 0o600
    public = Signer.from_file(keys / "audit.key", "pod").key_id
    assert f"audit signing key: {public}" in said


def test_command_line_without_a_model_digest_seeds_nothing(
    export_path: Path,
    trust_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ZTML_MODEL_DIGEST", raising=False)
    url = tmp_path / "l.db"
    code = main(["--export", str(export_path), "--ledger", str(url), "--trust-dir", str(trust_dir)])
    assert code == 1
    assert "no model digest to gate" in capsys.readouterr().err
    assert not url.exists()


def test_command_line_without_a_model_file_seeds_nothing(
    export_path: Path,
    trust_dir: Path,
    tmp_path: Path,
    pod_model: PodModel,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ZTML_MODEL_PATH", raising=False)
    url = tmp_path / "l.db"
    command = ["--export", str(export_path), "--ledger", str(url), "--trust-dir", str(trust_dir)]
    assert main([*command, "--model-digest", pod_model.digest]) == 1
    assert "no model file to verify" in capsys.readouterr().err
    assert not url.exists()


def test_an_export_that_does_not_approve_the_pods_model_is_not_seeded(
    export_path: Path, trust_dir: Path, tmp_path: Path
) -> None:
    url = tmp_path / "l.db"
    with pytest.raises(SeedError, match="deploy gate refuses to seed") as refused:
        seed_ledger(
            export_path=export_path,
            ledger_url=str(url),
            trust_dir=trust_dir,
            model_digest=digest_of(2),  # revoked in the export
        )
    assert "revoked" in str(refused.value)
    assert not url.exists()


def test_the_pods_model_is_read_from_its_environment(
    export_path: Path,
    trust_dir: Path,
    tmp_path: Path,
    pod_model: PodModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZTML_MODEL_PATH", str(pod_model.path))
    monkeypatch.setenv("ZTML_MODEL_DIGEST", digest_of(2))
    url = tmp_path / "l.db"
    command = ["--export", str(export_path), "--ledger", str(url), "--trust-dir", str(trust_dir)]
    assert main(command) == 1
    assert not url.exists()
    monkeypatch.setenv("ZTML_MODEL_DIGEST", pod_model.digest)
    assert main(command) == 0


@pytest.mark.parametrize("given", ["weights", "directory"])
def test_the_pods_signed_model_is_seeded(
    given: str, export_path: Path, trust_dir: Path, tmp_path: Path, pod_model: PodModel
) -> None:
    # A directory without a contract holds the digits model; a package's directory names
    # its weights in its contract (service.model.contract.weights_path): as the service.
    url = str(tmp_path / "l.db")
    appended = seed_ledger(
        export_path=export_path,
        ledger_url=url,
        trust_dir=trust_dir,
        model_digest=pod_model.digest,
        model_path=pod_model.path if given == "weights" else pod_model.path.parent,
    )
    assert appended == len(_records(export_path))


def test_a_package_whose_contract_cannot_be_read_is_not_seeded(
    export_path: Path, trust_dir: Path, tmp_path: Path, pod_model: PodModel
) -> None:
    (pod_model.path.parent / "ztml-model.json").write_text("{not json")
    url = tmp_path / "l.db"
    with pytest.raises(SeedError, match=r"deploy gate refuses to seed.*not valid JSON"):
        seed_ledger(
            export_path=export_path,
            ledger_url=str(url),
            trust_dir=trust_dir,
            model_digest=pod_model.digest,
            model_path=pod_model.path.parent,
        )
    assert not url.exists()


@pytest.mark.parametrize("name", ATTACKS)
def test_each_oms_attack_on_the_pods_model_is_not_seeded(
    name: str, export_path: Path, trust_dir: Path, tmp_path: Path, pod_model: PodModel
) -> None:
    attack(name, pod_model.path.parent, scratch=tmp_path)
    url = tmp_path / "l.db"
    with pytest.raises(SeedError, match="deploy gate refuses to seed") as refused:
        seed_ledger(
            export_path=export_path,
            ledger_url=str(url),
            trust_dir=trust_dir,
            model_digest=pod_model.digest,
            model_path=pod_model.path,
        )
    assert "OMS signature refused" in str(refused.value)
    assert REFUSALS[name] in str(refused.value)
    assert not url.exists()


def test_a_pod_without_trusted_oms_signers_seeds_nothing(
    export_path: Path, trust_dir: Path, tmp_path: Path, pod_model: PodModel
) -> None:
    shutil.rmtree(trust_dir / "oms_signers")
    url = tmp_path / "l.db"
    with pytest.raises(SeedError, match="No trusted OMS signer keys"):
        seed_ledger(
            export_path=export_path,
            ledger_url=str(url),
            trust_dir=trust_dir,
            model_digest=pod_model.digest,
            model_path=pod_model.path,
        )
    assert not url.exists()


def test_the_services_home_is_made_private(tmp_path: Path) -> None:
    from service.ledger.seed import make_private_home

    root = tmp_path / "volume"
    root.mkdir()
    root.chmod(0o777)  # as a provisioner leaves a volume's root
    home = root / "home"
    make_private_home(home)
    make_private_home(home)  # a restarted pod finds it
    assert home.stat().st_mode & 0o777 == 0o700


def test_a_home_of_another_user_is_refused(tmp_path: Path) -> None:
    import os

    from service.ledger.seed import make_private_home

    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory away")
    home = tmp_path / "theirs"
    home.mkdir()
    os.chown(home, 65534, 65534)
    with pytest.raises(SeedError, match="belongs to uid 65534"):
        make_private_home(home)


def test_an_export_the_required_witness_did_not_cosign_is_not_seeded(
    export_path: Path,
    trust_dir: Path,
    tmp_path: Path,
    pod_model: PodModel,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.chain.tlog import witness_verifier

    vkey = witness_verifier("w.example/1", Ed25519PrivateKey.generate().public_key()).vkey()
    url = tmp_path / "l.db"
    command = ["--export", str(export_path), "--ledger", str(url), "--trust-dir", str(trust_dir)]
    command += ["--model-digest", pod_model.digest, "--model-path", str(pod_model.path)]
    assert main([*command, "--witness", vkey]) == 1
    assert "not cosigned by the witness(es) w.example/1" in capsys.readouterr().err
    monkeypatch.setenv("ZTML_LEDGER_WITNESS_KEYS", vkey)
    assert main(command) == 1
    assert "w.example/1" in capsys.readouterr().err
    assert not url.exists()
