"""Early: what was computed while OPA decided is handed over only when asked for."""

from __future__ import annotations

import pytest

from service.app.overlap import Early


def test_value_of_the_work_is_returned() -> None:
    early: Early[int] = Early()
    early.run(lambda: 42)
    assert early.value() == 42


def test_error_of_the_work_is_raised_only_when_the_value_is_asked_for() -> None:
    def broken() -> int:
        raise ValueError("squeezer broke")

    early: Early[int] = Early()
    early.run(broken)  # a denied request never asks, so never sees the error
    with pytest.raises(ValueError, match="squeezer broke"):
        early.value()


def test_asking_for_work_that_never_ran_fails() -> None:
    early: Early[int] = Early()
    early.run(None)
    with pytest.raises(RuntimeError):
        early.value()
