"""The data files the policies read hold what the contract promises."""

from __future__ import annotations

import json
from typing import Any

from service.toolchain.paths import POLICIES_DIR

DATA = POLICIES_DIR / "data"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def test_roles_match_the_contract() -> None:
    roles = load("roles.json")["roles"]
    assert {name: sorted(role["actions"]) for name, role in roles.items()} == {
        "viewer": ["metadata"],
        "predictor": ["metadata", "predict"],
        "analyst": ["explain", "metadata", "predict"],
        "model-owner": ["explain", "metadata", "predict"],
        "service": ["metadata", "predict"],
        "admin": ["admin", "explain", "metadata", "predict"],
    }


def test_only_the_service_role_requires_a_client_certificate() -> None:
    roles = load("roles.json")["roles"]
    bound = [name for name, role in roles.items() if role.get("requires_client_certificate")]
    assert bound == ["service"]


def test_only_model_owner_and_admin_use_high_risk_models() -> None:
    roles = load("roles.json")["roles"]
    assert sorted(name for name, role in roles.items() if role["high_risk_models"]) == [
        "admin",
        "model-owner",
    ]
    for name, role in roles.items():
        if not role["high_risk_models"]:
            assert role["max_batch_size"]["high"] == 0, name


def test_every_role_has_limits_for_every_tier() -> None:
    for name, role in load("roles.json")["roles"].items():
        assert set(role["max_batch_size"]) == {"low", "medium", "high"}, name
        assert isinstance(role["rate_limit_per_minute"], int), name


def test_provenance_defaults() -> None:
    assert load("provenance.json")["provenance"]["requirements"] == {
        "min_robust_accuracy": 0.8,
        "epsilon": 0.1,
        "attack": "worst-case",
        "min_steps": 100,
        "min_restarts": 10,
        "by_modality": {"image": {}, "tabular": {"epsilon": 0.05}},
    }


def test_allowed_registries_end_with_a_slash() -> None:
    registries = load("admission.json")["admission"]["allowed_registries"]
    assert "ghcr.io/ztml/" in registries
    assert all(prefix.endswith("/") for prefix in registries)


def test_no_hand_edited_model_registry() -> None:
    # Model facts (tenant, risk tier, batch limit, explanation rights) come from the
    # model's approved registration in the provenance ledger, as input.model.
    assert not (DATA / "models.json").exists()
    assert sorted(p.name for p in DATA.glob("*.json")) == [
        "admission.json",
        "provenance.json",
        "roles.json",
    ]
