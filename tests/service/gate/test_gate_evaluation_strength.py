"""Ledgers whose evaluation is weaker than the gate requires are refused, naming the gap."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.gate import ModelDeniedError, check_deploy
from service.ledger import open_ledger
from service.model.metrics import evaluation_document, robust_entry
from tests.service.gate.conftest import STRONG_EVALUATION, registered_model

# What `ztml model train` recorded before the gate required 100 steps, 10 restarts and the
# worst case over PGD and AutoAttack: PGD-20 with 2 restarts, robust accuracy high enough.
OLD_EVALUATION = [
    robust_entry(attack=attack, epsilon=eps, steps=steps, restarts=restarts, accuracy=acc)
    for eps, scale in ((0.1, 1.0), (0.2, 0.6))
    for attack, steps, restarts, acc in (
        ("fgsm", 1, 1, 0.9 * scale),
        ("pgd-ce", 20, 2, 0.87 * scale),
        ("pgd-cw", 20, 2, 0.87 * scale),
        ("pgd", 20, 2, 0.86 * scale),
    )
]


def _reasons(home: Path, robust: list[dict[str, object]]) -> list[str]:
    model = registered_model(home, robust)
    with pytest.raises(ModelDeniedError) as denied:
        check_deploy(trust=model.trust, artifact=model.artifact, ledger_url=model.ledger_url)
    return denied.value.reasons


def test_old_pgd_20_evaluation_is_refused_naming_steps_restarts_and_attack(
    tmp_path: Path,
) -> None:
    reasons = _reasons(tmp_path, OLD_EVALUATION)
    assert "evaluation used 20 PGD steps, the gate requires >= 100 for image models" in reasons
    assert "evaluation used 2 PGD restarts, the gate requires >= 10 for image models" in reasons
    assert any(
        r.startswith("no trusted evaluation recorded attack worst-case") and '"pgd"' in r
        for r in reasons
    ), reasons


def test_worst_case_with_too_few_restarts_is_refused_naming_restarts(tmp_path: Path) -> None:
    weak = [robust_entry(attack="worst-case", epsilon=0.1, steps=100, restarts=3, accuracy=0.9)]
    reasons = _reasons(tmp_path, weak)
    assert "evaluation used 3 PGD restarts, the gate requires >= 10 for image models" in reasons
    assert not any("PGD steps" in r or "recorded attack" in r for r in reasons), reasons


def test_old_evaluation_passes_after_a_strong_evaluate_record(tmp_path: Path) -> None:
    model = registered_model(tmp_path, OLD_EVALUATION)
    with open_ledger(model.ledger_url) as ledger:
        ledger.evaluate(
            model.digest,
            evaluation_document(
                dataset="sklearn-digits/test", clean_accuracy=0.97, robust=STRONG_EVALUATION
            ),
            signer=model.trainer,
        )
    approved = check_deploy(trust=model.trust, artifact=model.artifact, ledger_url=model.ledger_url)
    assert approved.digest == model.digest
