"""Every declared resource, as a Kubernetes manifest, passes three independent checks.

(a) the Kubernetes 1.31 JSON schemas (kubernetes-validate, strict), (b) the project's
admission policy (policies/admission) with the real OPA and a Gatekeeper inventory of
all manifests, while seeded bad variants are caught, and (c) Checkov's Kubernetes checks
run from its own tool environment.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from infra_manifest_helpers import containers_of, pod_spec_of

from infra.policypack.opa_eval import Violation, admission_violations
from service.toolchain.opa import find_opa
from service.toolchain.paths import POLICIES_DIR

REPO = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.31"
CHECKOV = "checkov==3.3.30"
CHECKOV_CONFIG = REPO / ".checkov.yaml"


def _violations(manifests: list[dict[str, Any]]) -> list[Violation]:
    return admission_violations(find_opa(), POLICIES_DIR, manifests)


def test_kubernetes_validate_ships_the_pinned_version() -> None:
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    assert (schemas / f"v{KUBERNETES_VERSION}.0-local-strict").is_dir()


def test_every_manifest_matches_the_kubernetes_schema(any_run: Any) -> None:
    failures = []
    for urn, manifest in any_run.manifests.items():
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{urn}: {exc}")
    assert not failures, "\n".join(failures)


def test_schema_check_catches_a_misspelled_field(single_run: Any) -> None:
    _, deployment = single_run.model_deployment()
    bad = copy.deepcopy(deployment)
    pod_spec_of(bad)["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_admission_policy_admits_every_manifest(any_run: Any) -> None:
    manifests = list(any_run.manifests.values())
    names = {(m["kind"], m["metadata"]["name"]): u for u, m in any_run.manifests.items()}
    found = [f"{names.get((v.kind, v.name))}: {v.msg}" for v in _violations(manifests)]
    assert not found, "\n".join(found)


def _seeded(run: Any, mutate: Any) -> tuple[list[dict[str, Any]], str]:
    manifests = copy.deepcopy(list(run.manifests.values()))
    deployment = next(
        m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "ztml-model"
    )
    mutate(manifests, deployment)
    return manifests, deployment["metadata"]["name"]


def _assert_caught(manifests: list[dict[str, Any]], name: str, pattern: str) -> None:
    messages = [v.msg for v in _violations(manifests) if v.name == name]
    assert any(re.search(pattern, m, re.I) for m in messages), (
        f"no violation matching {pattern!r} for {name}: {messages}"
    )


def test_admission_catches_a_pod_without_run_as_non_root(single_run: Any) -> None:
    def mutate(_: list[dict[str, Any]], deployment: dict[str, Any]) -> None:
        pod_spec_of(deployment)["securityContext"].pop("runAsNonRoot")
        for container in containers_of(deployment):
            container["securityContext"].pop("runAsNonRoot")

    _assert_caught(*_seeded(single_run, mutate), "runAsNonRoot")


def test_admission_catches_a_latest_image(single_run: Any) -> None:
    def mutate(_: list[dict[str, Any]], deployment: dict[str, Any]) -> None:
        containers_of(deployment)[0]["image"] = "ghcr.io/ztml/model:latest"

    _assert_caught(*_seeded(single_run, mutate), r"digest|latest|pinned")


def test_admission_catches_a_missing_default_deny_policy(single_run: Any) -> None:
    def mutate(manifests: list[dict[str, Any]], _: dict[str, Any]) -> None:
        manifests[:] = [
            m
            for m in manifests
            if not (m["kind"] == "NetworkPolicy" and "default-deny" in m["metadata"]["name"])
        ]

    _assert_caught(*_seeded(single_run, mutate), "default-deny")


def test_admission_catches_a_secret_in_env(single_run: Any) -> None:
    def mutate(_: list[dict[str, Any]], deployment: dict[str, Any]) -> None:
        containers_of(deployment)[0]["env"].append({"name": "DB_PASSWORD", "value": "hunter2"})

    _assert_caught(*_seeded(single_run, mutate), "secret")


def test_admission_catches_a_secret_key_ref(single_run: Any) -> None:
    def mutate(_: list[dict[str, Any]], deployment: dict[str, Any]) -> None:
        containers_of(deployment)[0]["env"].append(
            {"name": "LEDGER", "valueFrom": {"secretKeyRef": {"name": "x", "key": "url"}}}
        )

    _assert_caught(*_seeded(single_run, mutate), "secret")


def _checkov_skips(config: dict[str, Any], text: str) -> list[str]:
    skips = config.get("skip-check") or []
    lines = text.splitlines()
    unjustified = []
    for skip in skips:
        index = next(i for i, line in enumerate(lines) if skip in line and line.strip())
        if index == 0 or not lines[index - 1].strip().startswith("#"):
            unjustified.append(skip)
    return unjustified


def test_every_checkov_skip_is_justified() -> None:
    text = CHECKOV_CONFIG.read_text(encoding="utf-8")
    assert _checkov_skips(yaml.safe_load(text), text) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_checkov_finds_no_failure(
    single_run: Any, scaled_run: Any, models_run: Any, tmp_path: Path
) -> None:
    uvx = shutil.which("uvx")
    assert uvx is not None, "uvx (from uv) is needed to run Checkov in its own environment"
    for prefix, run in (("single", single_run), ("scaled", scaled_run), ("models", models_run)):
        for index, manifest in enumerate(run.manifests.values()):
            path = tmp_path / f"{prefix}-{index:02d}-{manifest['kind'].lower()}.yaml"
            path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [
            uvx,
            "--from",
            CHECKOV,
            "checkov",
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "-o",
            "json",
            "--config-file",
            str(CHECKOV_CONFIG),
        ],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert result.stdout.strip(), f"Checkov printed nothing: {result.stderr[-2000:]}"
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for report in reports
        for c in report["results"]["failed_checks"]
    ]
    passed = sum(report["summary"]["passed"] for report in reports)
    assert passed > 0, "Checkov checked nothing"
    assert not failed, "\n".join(failed)
