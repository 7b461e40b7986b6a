"""The gate holds each model to the requirements of its input modality.

A tabular package registered from its contract is held to the tabular requirements
(epsilon 0.05 of each feature's range, as policies/data/provenance.json sets); the
digits model, registered without a contract, is held to the image ones (epsilon 0.1).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from service.gate import GateTrust, ModelDeniedError, check_deploy, load_requirements
from service.keys.store import Signer, init_keys
from service.ledger import open_ledger
from service.model.metrics import evaluation_document, robust_entry
from service.model.package import open_model
from service.model.register import register_package
from service.oms import sign_model
from tests.service.gate.conftest import registered_model
from tests.service.model.packages import write_package
from tests.service.oms.tampering import make_keys

SERVING = {"tenant": "acme", "risk_tier": "medium", "max_batch": 32, "explanations": False}


@dataclass(frozen=True)
class Package:
    weights: Path
    ledger_url: str
    trust: GateTrust


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_package(tmp_path_factory.mktemp("built") / "tiny")


def worst_case(epsilon: float, accuracy: float) -> dict[str, object]:
    return robust_entry(
        attack="worst-case", epsilon=epsilon, steps=100, restarts=10, accuracy=accuracy
    )


def registered_package(built: Path, home: Path, robust: list[dict[str, object]]) -> Package:
    """The tiny tabular package, signed, registered with these results and approved."""
    oms = make_keys(home / "oms")
    package = Path(shutil.copytree(built, home / "tiny"))
    sign_model(package, key=oms.key)
    served = open_model(package)
    evaluation = evaluation_document(
        dataset="tiny-tabular/test", clean_accuracy=0.97, robust=robust
    )
    evaluation["model_digest"] = served.weights_digest
    (home / "eval.json").write_text(json.dumps(evaluation))
    keys = home / "keys"
    init_keys(keys, ["trainer", "approver"])
    url = str(home / "ledger.db")
    register_package(
        package,
        evaluation_path=home / "eval.json",
        serving=SERVING,
        ledger_url=url,
        key_path=keys / "trainer.key",
        identity="trainer@example",
        oms_signers=oms.signers,
    )
    with open_ledger(url) as ledger:
        approver = Signer.from_file(keys / "approver.key", "approver@example")
        ledger.approve(served.weights_digest, signer=approver, comment="ok")
    trust = GateTrust.from_directory(keys, oms_signers=oms.signers)
    return Package(package / "model.safetensors", url, trust)


def refusal(model: Package) -> tuple[str, ...]:
    with pytest.raises(ModelDeniedError) as denied:
        check_deploy(trust=model.trust, artifact=model.weights, ledger_url=model.ledger_url)
    return denied.value.reasons


def test_the_shipped_requirements_hold_tabular_models_to_a_smaller_epsilon() -> None:
    required = load_requirements()
    assert required.for_modality("image").epsilon == 0.1
    assert required.for_modality("tabular").epsilon == 0.05
    assert required.for_modality("tabular").min_robust_accuracy == 0.8


def test_a_tabular_package_robust_at_its_epsilon_is_deployed(built: Path, tmp_path: Path) -> None:
    model = registered_package(built, tmp_path, [worst_case(0.05, 0.851), worst_case(0.1, 0.728)])
    approved = check_deploy(trust=model.trust, artifact=model.weights, ledger_url=model.ledger_url)
    assert approved.name == "tiny-tabular"


def test_a_tabular_package_below_the_accuracy_at_its_epsilon_is_refused(
    built: Path, tmp_path: Path
) -> None:
    (reason,) = refusal(registered_package(built, tmp_path, [worst_case(0.05, 0.73)]))
    assert reason == (
        "no trusted evaluation reaches robust accuracy >= 0.8 under worst-case at epsilon >= "
        "0.05 with >= 100 steps and >= 10 restarts, as tabular models require (found: "
        '["worst-case eps=0.05 steps=100 restarts=10 acc=0.73"])'
    )


def test_stack_requirements_for_tabular_reach_the_policy(built: Path, tmp_path: Path) -> None:
    model = registered_package(built, tmp_path, [worst_case(0.05, 0.851)])
    stricter = replace(load_requirements(), by_modality={"tabular": {"epsilon": 0.08}})
    with pytest.raises(ModelDeniedError) as denied:
        check_deploy(
            trust=model.trust,
            artifact=model.weights,
            ledger_url=model.ledger_url,
            requirements=stricter,
        )
    assert any("epsilon >= 0.08" in r and "tabular models" in r for r in denied.value.reasons)


def test_an_image_model_robust_only_at_the_tabular_epsilon_is_refused(tmp_path: Path) -> None:
    model = registered_model(tmp_path, [worst_case(0.05, 0.95)])
    with pytest.raises(ModelDeniedError) as denied:
        check_deploy(trust=model.trust, artifact=model.artifact, ledger_url=model.ledger_url)
    (reason,) = denied.value.reasons
    assert "at epsilon >= 0.1 with >= 100 steps and >= 10 restarts, as image models" in reason
