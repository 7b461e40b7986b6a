"""Example inputs in policies/examples get the decisions that expected.json states."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.toolchain.paths import POLICIES_DIR


def messages(value: Any) -> list[str]:
    """Reasons of a decision, or messages of admission findings."""
    if isinstance(value, list):
        return [finding["msg"] for finding in value]
    return list(value["reasons"])


def test_example_gets_expected_decision(example: Any, opa_eval: Callable[[Any], Any]) -> None:
    value = opa_eval(example)
    found = messages(value)
    allowed = value["allow"] if isinstance(value, dict) else value == []
    assert allowed is example.allow, f"{example.case}: {found}"
    assert len(found) == example.count, f"{example.case}: {found}"
    for fragment in example.mentions:
        assert any(fragment in message for message in found), (
            f"{example.case}: no {fragment!r} in {found}"
        )


def test_every_denial_explains_itself(example: Any, opa_eval: Callable[[Any], Any]) -> None:
    if example.allow:
        return
    found = messages(opa_eval(example))
    assert found
    assert all(isinstance(message, str) and message.strip() for message in found)


def test_every_example_is_in_the_manifest(examples_dir: Path) -> None:
    manifest = json.loads((examples_dir / "expected.json").read_text())["examples"]
    on_disk = {
        p.parent.relative_to(examples_dir).as_posix() for p in examples_dir.glob("*/*/input.json")
    }
    assert on_disk == set(manifest)


def test_examples_cover_allow_and_deny_for_every_package(examples_dir: Path) -> None:
    manifest = json.loads((examples_dir / "expected.json").read_text())["examples"]
    seen = {(case.split("/")[0], entry["allow"]) for case, entry in manifest.items()}
    for package in ("authz", "admission", "provenance"):
        assert (package, True) in seen
        assert (package, False) in seen


def test_examples_live_under_policies(examples_dir: Path) -> None:
    assert examples_dir.parent == POLICIES_DIR
