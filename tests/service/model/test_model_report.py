"""The robustness report shows the worst case over PGD and AutoAttack, and how it was made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.model.metrics import evaluation_document, robust_entry
from service.model.report import markdown_report, write_report


def _metrics(defense: str, robust: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": {"defense": defense},
        "evaluation": evaluation_document(
            dataset="sklearn-digits/test", clean_accuracy=0.97, robust=robust
        ),
        "training_seconds": 1.0,
    }


def _entries(pgd: float, worst: float) -> list[dict[str, Any]]:
    return [
        robust_entry(attack="fgsm", epsilon=0.1, steps=1, restarts=1, accuracy=0.9),
        robust_entry(attack="pgd-ce", epsilon=0.1, steps=100, restarts=10, accuracy=pgd),
        robust_entry(attack="pgd-cw", epsilon=0.1, steps=100, restarts=10, accuracy=pgd),
        robust_entry(attack="pgd", epsilon=0.1, steps=100, restarts=10, accuracy=pgd),
        robust_entry(attack="autoattack", epsilon=0.1, steps=100, restarts=1, accuracy=worst),
        robust_entry(attack="worst-case", epsilon=0.1, steps=100, restarts=10, accuracy=worst),
    ]


def test_report_states_steps_restarts_and_autoattack() -> None:
    report = markdown_report([_metrics("none", _entries(0.5, 0.4))])
    assert "PGD with 100 steps" in report
    assert "10 random restarts" in report
    assert "AutoAttack" in report


def test_report_robust_column_is_the_worst_case_not_pgd() -> None:
    report = markdown_report(
        [_metrics("none", _entries(0.5, 0.4)), _metrics("pgd", _entries(0.9, 0.83))]
    )
    assert "83.0%" in report
    assert "90.0% (" not in report


def test_report_of_an_evaluation_without_autoattack_says_so(tmp_path: Path) -> None:
    tiny = [e for e in _entries(0.5, 0.4) if e["attack"] not in ("autoattack", "worst-case")]
    md, png = write_report([_metrics("none", tiny)], tmp_path)
    assert "no worst-case entry" in md.read_text()
    assert png.stat().st_size > 0
