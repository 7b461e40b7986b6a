"""The OPA sidecar's policy set compiles and answers, and its flags exist in OPA."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from infra_manifest_helpers import containers_of

from infra.policy_engine import POLICY_MOUNT, load_policy_bundle
from service.toolchain.opa import find_opa
from service.toolchain.paths import POLICIES_DIR


def _mounted(tmp_path: Path) -> Path:
    """Lay the bundle out as the ConfigMap volume's items do in the pod."""
    root = tmp_path / POLICY_MOUNT.strip("/")
    for relative, text in load_policy_bundle(POLICIES_DIR).files.values():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def _eval(root: Path, query: str, input_doc: Any) -> Any:
    input_path = root.parent / "input.json"
    input_path.write_text(json.dumps(input_doc))
    result = subprocess.run(
        [str(find_opa()), "eval", "-f", "json", "-d", str(root), "-i", str(input_path), query],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)["result"][0]["expressions"][0]["value"]


def test_sidecar_policies_answer_the_authz_query(tmp_path: Path) -> None:
    example = POLICIES_DIR / "examples" / "authz" / "allow-predict" / "input.json"
    decision = _eval(
        _mounted(tmp_path), "data.ztml.authz.decision", json.loads(example.read_text())
    )
    assert decision["allow"] is True, decision


def test_sidecar_policies_include_the_decision_log_mask(tmp_path: Path) -> None:
    root = _mounted(tmp_path)
    assert (root / "system" / "log" / "mask.rego").is_file()
    assert not list(root.rglob("*_test.rego"))


def test_sidecar_config_is_the_repository_opa_config() -> None:
    bundle = load_policy_bundle(POLICIES_DIR)
    assert bundle.opa_config == (POLICIES_DIR / "config" / "opa-config.yaml").read_text()
    assert "mask_decision" in bundle.opa_config


def test_every_opa_flag_the_sidecar_uses_exists(scaled_run: Any) -> None:
    _, deployment = scaled_run.model_deployment()
    opa = next(c for c in containers_of(deployment) if c["name"] == "opa")
    assert opa["args"][:2] == ["run", "--server"]
    help_text = subprocess.run(
        [str(find_opa()), "run", "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for arg in opa["args"][1:]:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert f"{flag} " in help_text or f"{flag}=" in help_text, f"opa run has no {flag}"
