import os
from pathlib import Path

import pytest

from service.toolchain.paths import ztml_home


def test_ztml_home_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "state"))
    assert ztml_home() == tmp_path / "state"


def test_a_user_keeps_state_in_their_home(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ZTML_HOME", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert ztml_home() == Path.home() / ".ztml"


def test_root_keeps_state_where_the_unprivileged_servers_can_reach_it(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("ZTML_HOME", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert ztml_home() == Path("/var/lib/ztml")
