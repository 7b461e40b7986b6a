"""Conventions every Rego file follows: METADATA on rules, tests beside policies, test names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.toolchain.paths import POLICIES_DIR

RULE_HEAD = re.compile(r"^(default\s+)?[a-z_][a-zA-Z0-9_]*\b")
NOT_RULES = ("package ", "import ")
TEST_NAME = re.compile(r"^(test_[a-zA-Z0-9_]+)\b", re.MULTILINE)


def policy_files() -> list[Path]:
    return sorted(p for p in POLICIES_DIR.rglob("*.rego") if not p.name.endswith("_test.rego"))


def rego_test_files() -> list[Path]:
    return sorted(POLICIES_DIR.rglob("*_test.rego"))


def rules_without_metadata(text: str) -> list[str]:
    """Rule heads (lines starting a rule at column 0) not preceded by a METADATA title."""
    lines = text.splitlines()
    missing = []
    for number, line in enumerate(lines):
        if not RULE_HEAD.match(line) or line.startswith(NOT_RULES):
            continue
        comments = []
        index = number - 1
        while index >= 0 and lines[index].startswith("#"):
            comments.append(lines[index])
            index -= 1
        if "# METADATA" not in comments or not any(c.startswith("# title:") for c in comments):
            missing.append(f"{number + 1}: {line}")
    return missing


@pytest.mark.parametrize("path", policy_files(), ids=lambda p: str(p.relative_to(POLICIES_DIR)))
def test_every_rule_has_metadata_title(path: Path) -> None:
    missing = rules_without_metadata(path.read_text())
    assert missing == [], f"{path} has rules without a # METADATA title:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", policy_files(), ids=lambda p: str(p.relative_to(POLICIES_DIR)))
def test_every_policy_package_has_tests(path: Path) -> None:
    package = re.search(r"^package (\S+)", path.read_text(), re.MULTILINE)
    assert package is not None
    test_packages = {
        match.group(1)
        for test in rego_test_files()
        if (match := re.search(r"^package (\S+)", test.read_text(), re.MULTILINE))
    }
    assert f"{package.group(1)}_test" in test_packages
    assert any(test.parent == path.parent for test in rego_test_files()), (
        f"no _test.rego beside {path}"
    )


@pytest.mark.parametrize("path", rego_test_files(), ids=lambda p: str(p.relative_to(POLICIES_DIR)))
def test_rego_tests_are_named_allow_or_deny(path: Path) -> None:
    names = TEST_NAME.findall(path.read_text())
    assert names, f"{path} has no tests"
    bad = [name for name in names if not re.match(r"^test_(allow|deny)_", name)]
    assert bad == [], f"{path}: tests must be named test_allow_* or test_deny_*: {bad}"


def test_metadata_check_catches_a_bare_rule() -> None:
    text = "package x\n\n# METADATA\n# title: A\na := 1\n\nb := 2\n"
    assert rules_without_metadata(text) == ["7: b := 2"]
