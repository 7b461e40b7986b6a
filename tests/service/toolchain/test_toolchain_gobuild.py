"""Pinned builds land whole in the cache, or not at all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from service.toolchain.errors import ToolInstallError
from service.toolchain.gobuild import PinnedBuild


def _writes(*names: str) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        for name in names:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("#!/bin/sh\n")
            target.chmod(0o755)

    return build


def test_a_build_lands_in_its_name_and_version_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZTML_CACHE", str(tmp_path / "fresh"))
    build = PinnedBuild("tool", "v1.2.3", ("bin/tool",), _writes("bin/tool"))
    assert not build.present()
    directory = build.ensure()
    assert directory == tmp_path / "fresh" / "tools" / "tool-v1.2.3"
    assert build.present()
    assert build.path("bin/tool").is_file()


def test_a_cached_build_is_not_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZTML_CACHE", str(tmp_path))
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        _writes("tool")(out)

    pinned = PinnedBuild("tool", "1", ("tool",), build)
    pinned.ensure()
    pinned.ensure()
    assert len(calls) == 1


def test_a_build_missing_a_binary_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZTML_CACHE", str(tmp_path))
    pinned = PinnedBuild("tool", "1", ("tool", "helper"), _writes("tool"))
    with pytest.raises(ToolInstallError, match="left no helper"):
        pinned.ensure()
    assert not pinned.directory.exists()
    assert list((tmp_path / "tools").iterdir()) == []
