"""The policy checks the README promises: fmt, strict check, tests, coverage and Regal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from service.toolchain.paths import POLICIES_DIR
from service.toolchain.regal import find_regal

MIN_COVERAGE = 95.0


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_rego_files_are_formatted(opa_bin: Path) -> None:
    result = run([str(opa_bin), "fmt", "--list", str(POLICIES_DIR)])
    assert result.returncode == 0, result.stderr
    unformatted = result.stdout.strip()
    assert unformatted == "", f"run `opa fmt -w policies`; not formatted:\n{unformatted}"


def test_policies_pass_strict_check(opa_bin: Path) -> None:
    result = run([str(opa_bin), "check", "--strict", str(POLICIES_DIR)])
    assert result.returncode == 0, (
        f"opa check --strict policies failed:\n{result.stdout}{result.stderr}"
    )


def test_rego_unit_tests_pass(opa_bin: Path) -> None:
    result = run([str(opa_bin), "test", str(POLICIES_DIR)])
    assert result.returncode == 0, f"opa test policies failed:\n{result.stdout}{result.stderr}"
    assert "PASS" in result.stdout


def test_rego_coverage_is_at_least_95_percent(opa_bin: Path) -> None:
    result = run([str(opa_bin), "test", str(POLICIES_DIR), "--coverage", "--format", "json"])
    assert result.returncode == 0, f"opa test --coverage failed:\n{result.stderr}"
    report = json.loads(result.stdout)
    uncovered = []
    for path, info in sorted(report["files"].items()):
        for span in info.get("not_covered", []):
            uncovered.append(f"{path}:{span['start']['row']}-{span['end']['row']}")
    assert report["coverage"] >= MIN_COVERAGE, (
        f"Rego coverage {report['coverage']:.1f}% is below {MIN_COVERAGE}%; not covered:\n"
        + "\n".join(uncovered)
    )


def test_regal_lint_is_clean() -> None:
    regal = find_regal()  # scripts/run builds the pinned Regal; missing fails here
    result = run(
        [
            str(regal),
            "lint",
            "--config-file",
            str(POLICIES_DIR / ".regal" / "config.yaml"),
            str(POLICIES_DIR),
        ]
    )
    assert result.returncode == 0, f"regal lint policies failed:\n{result.stdout}{result.stderr}"
