"""Screening: what the squeezer found, withheld until OPA allowed the request."""

from __future__ import annotations

import numpy as np
import pytest

from service.app.screening import Screening, Withheld
from service.sanitizer import SqueezeResult


def test_value_of_the_work_is_released() -> None:
    withheld: Withheld[int] = Withheld()
    withheld.run(lambda: 42)
    assert withheld.release() == 42


def test_error_of_the_work_is_raised_only_when_the_value_is_released() -> None:
    def broken() -> int:
        raise ValueError("squeezer broke")

    withheld: Withheld[int] = Withheld()
    withheld.run(broken)  # a denied request never asks, so never sees the error
    with pytest.raises(ValueError, match="squeezer broke"):
        withheld.release()


def test_releasing_work_that_never_ran_fails() -> None:
    withheld: Withheld[int] = Withheld()
    withheld.run(None)
    with pytest.raises(RuntimeError):
        withheld.release()


def screening(scores: list[float], suspicion: list[float], threshold: float = 0.1) -> Screening:
    probs = np.full((len(scores), 10), 0.1, dtype=np.float32)
    squeeze_scores = np.asarray(scores, dtype=np.float32)
    squeeze = SqueezeResult(probs, squeeze_scores, squeeze_scores > threshold, {})
    return Screening(squeeze=squeeze, suspicion=np.asarray(suspicion))


def test_clean_unsuspicious_batch_needs_no_review() -> None:
    clean = screening([0.01, 0.02], [0.1, 0.2])
    assert not clean.flagged and clean.flagged_instances() == []
    assert clean.review_reasons(0.5) == []


def test_flagged_batch_names_its_instances_and_is_reviewed() -> None:
    flagged = screening([0.01, 0.5, 0.3], [0.1, 0.2, 0.3])
    assert flagged.flagged and flagged.flagged_instances() == [1, 2]
    assert flagged.review_reasons(0.5) == ["feature squeezing flagged the input"]


def test_suspicious_batch_is_reviewed_with_its_top_suspicion() -> None:
    suspicious = screening([0.01], [0.9])
    assert suspicious.review_reasons(0.5) == ["suspicion 0.900 above 0.5"]
