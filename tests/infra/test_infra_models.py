"""Several models in one stack (``ztml:models``): each its own workload, each gated.

The program runs under the mocks (conftest.py) with two extra models beside the primary
one; every failure message names the resource's URN.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pulumi
import pytest

from infra.config import StackConfig
from infra.errors import ConfigError, DeployDeniedError, ModelNameError, ModelsDeniedError
from infra.model_service import MODEL_LABELS, MODEL_POD_LABELS, model_labels
from infra.namespace import quota_for

Run = Any  # tests/infra/conftest.py's Run
COMPONENT = "ztml:model:ModelService"
# The same names and digests as conftest.py's EXTRA_MODELS (the ``extra_models`` fixture);
# repeated here because parametrize needs them at collection.
EXTRA_MODELS = {"digits-cnn": "sha256:" + "6" * 64, "breast-cancer": "sha256:" + "7" * 64}


def _owned(run: Run, model: str, kind: str) -> tuple[str, dict[str, Any]]:
    """The one resource of ``kind`` in the model's component (``ztml-model-<name>``)."""
    prefix = f"{COMPONENT}$"
    ((urn, manifest),) = (
        (u, m)
        for u, m in run.of_kind(kind).items()
        if prefix in u and u.split("::")[-1].startswith(f"ztml-model-{model}-")
    )
    return urn, manifest


def _containers(manifest: dict[str, Any], key: str = "containers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in manifest["spec"]["template"]["spec"].get(key, [])}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize(
    "kind", ["ServiceAccount", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
)
@pytest.mark.parametrize("model", sorted(EXTRA_MODELS))
def test_each_extra_model_gets_what_the_primary_model_has(
    models_run: Run, model: str, kind: str
) -> None:
    urn, manifest = _owned(models_run, model, kind)
    assert manifest["metadata"]["namespace"] == "ztml", urn


@pytest.mark.parametrize("model", sorted(EXTRA_MODELS))
def test_each_extra_model_has_a_deployment_and_service_named_for_it(
    models_run: Run, model: str
) -> None:
    deployment_urn, deployment = _owned(models_run, model, "Deployment")
    service_urn, service = _owned(models_run, model, "Service")
    assert deployment["metadata"]["name"] == model, deployment_urn
    assert deployment["spec"]["selector"]["matchLabels"] == model_labels(model), deployment_urn
    assert service["metadata"]["name"] == model, service_urn
    assert service["spec"]["selector"] == model_labels(model), service_urn
    assert service["spec"]["type"] == "ClusterIP", service_urn


@pytest.mark.parametrize("model", sorted(EXTRA_MODELS))
def test_each_extra_model_serves_its_package_pinned_to_its_digest(
    models_run: Run, model: str
) -> None:
    urn, deployment = _owned(models_run, model, "Deployment")
    env = _env(_containers(deployment)["model"])
    assert env["ZTML_MODEL_PATH"] == f"/opt/ztml/models/{model}", urn
    assert env["ZTML_MODEL_DIGEST"] == EXTRA_MODELS[model], urn
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["ztml.dev/model-digest"] == EXTRA_MODELS[model], urn


@pytest.mark.parametrize("model", sorted(EXTRA_MODELS))
def test_each_extra_model_runs_the_primary_models_sidecar_init_step_and_tls(
    models_run: Run, model: str
) -> None:
    _, primary = models_run.model_deployment()
    urn, deployment = _owned(models_run, model, "Deployment")
    assert _containers(deployment).keys() == _containers(primary).keys(), urn
    assert _containers(deployment, "initContainers").keys() == (
        _containers(primary, "initContainers").keys()
    ), urn
    assert _containers(deployment)["opa"] == _containers(primary)["opa"], urn
    primary_volumes = {v["name"] for v in primary["spec"]["template"]["spec"]["volumes"]}
    volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes == primary_volumes, urn
    tls_urn, tls = _owned(models_run, model, "Secret")
    assert tls["type"] == "kubernetes.io/tls", tls_urn


@pytest.mark.parametrize("model", sorted(EXTRA_MODELS))
def test_with_one_replica_each_model_keeps_its_own_home(models_run: Run, model: str) -> None:
    urn, deployment = _owned(models_run, model, "Deployment")
    mounts = {m["mountPath"]: m for m in _containers(deployment)["model"]["volumeMounts"]}
    assert mounts["/var/lib/ztml"]["subPath"] == f"home-{model}", urn
    (seed,) = _containers(deployment, "initContainers").values()
    home = seed["command"][seed["command"].index("--home") + 1]
    assert home == f"/var/lib/ztml-volume/home-{model}", urn


def test_scaled_out_every_models_pods_have_their_own_home_and_reach_postgres(
    scaled_models_run: Run,
) -> None:
    for model in EXTRA_MODELS:
        urn, deployment = _owned(scaled_models_run, model, "Deployment")
        mounts = {m["mountPath"]: m for m in _containers(deployment)["model"]["volumeMounts"]}
        assert mounts["/var/lib/ztml"]["subPathExpr"] == "$(POD_NAME)", urn
    ((urn, policy),) = (
        (u, m)
        for u, m in scaled_models_run.of_kind("NetworkPolicy").items()
        if u.endswith("::ztml-allow-model-to-postgres")
    )
    assert policy["spec"]["podSelector"]["matchLabels"] == MODEL_POD_LABELS, urn


def test_every_models_pods_carry_the_labels_the_network_policies_select(models_run: Run) -> None:
    ((urn, policy),) = (
        (u, m)
        for u, m in models_run.of_kind("NetworkPolicy").items()
        if u.endswith("::ztml-allow-clients")
    )
    selected = policy["spec"]["podSelector"]["matchLabels"]
    for deployment_urn, deployment in models_run.of_kind("Deployment").items():
        if "AdmissionWebhook" in deployment_urn:
            continue
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selected.items() <= labels.items(), (urn, deployment_urn)


def test_no_models_selector_matches_another_models_pods(models_run: Run) -> None:
    stack = {u: m for u, m in models_run.stack().of_kind("Deployment").items() if COMPONENT in u}
    assert len(stack) == 1 + len(EXTRA_MODELS)
    for urn, deployment in stack.items():
        selector = deployment["spec"]["selector"]["matchLabels"].items()
        for other_urn, other in stack.items():
            labels = other["spec"]["template"]["metadata"]["labels"].items()
            assert (selector <= labels) == (urn == other_urn), (urn, other_urn)


def test_the_primary_model_keeps_its_name_and_selector(models_run: Run) -> None:
    urn, deployment = models_run.model_deployment()
    assert deployment["spec"]["selector"]["matchLabels"] == MODEL_LABELS, urn
    assert _env(_containers(deployment)["model"])["ZTML_MODEL_PATH"] == (
        "/opt/ztml/model/model.safetensors"
    ), urn


def test_the_quota_leaves_room_for_every_models_pods(models_run: Run) -> None:
    ((urn, quota),) = models_run.stack().of_kind("ResourceQuota").items()
    assert quota["spec"]["hard"] == quota_for(1, models=1 + len(EXTRA_MODELS)), urn


def test_without_extra_models_nothing_more_is_declared(single_run: Run) -> None:
    stack = [u for u in single_run.of_kind("Deployment") if COMPONENT in u]
    assert len(stack) == 1, stack


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("models", "named"),
    [
        ([{"name": "Digits_CNN", "digest": "sha256:" + "6" * 64}], "ztml:models[0].name"),
        ([{"name": "a" * 54, "digest": "sha256:" + "6" * 64}], "ztml:models[0].name"),
        ([{"name": "ztml-model", "digest": "sha256:" + "6" * 64}], "ztml:models[0].name"),
        ([{"name": "cnn", "digest": "sha256:1234"}], "ztml:models[0].digest"),
        ([{"name": "cnn", "digest": "sha256:" + "0" * 64}], "ztml:models[0].digest"),
        ([{"name": "cnn"}], "ztml:models[0]"),
        (
            [
                {"name": "cnn", "digest": "sha256:" + "6" * 64},
                {"name": "cnn", "digest": "sha256:" + "7" * 64},
            ],
            "ztml:models[1].name",
        ),
        ({"name": "cnn"}, "ztml:models"),
    ],
    ids=[
        "not-a-dns-label",
        "too-long",
        "the-primary-service",
        "digest-form",
        "placeholder",
        "no-digest",
        "duplicate",
        "not-a-list",
    ],
)
def test_a_bad_models_entry_names_its_key(
    make_config: Callable[..., StackConfig], models: Any, named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(models=models)
    assert named in str(info.value)
    assert "accepted values" in str(info.value)


def test_the_extra_models_here_are_the_fixtures(extra_models: dict[str, str]) -> None:
    assert extra_models == EXTRA_MODELS


def test_the_service_certificate_must_name_every_models_service(
    raw_values: dict[str, str],
) -> None:
    from infra.config import parse_config

    raw = dict(raw_values)
    raw["ztml:models"] = json.dumps(
        [
            *({"name": n, "digest": d} for n, d in EXTRA_MODELS.items()),
            {"name": "unnamed", "digest": "sha256:" + "6" * 64},
        ]
    )
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert "ztml:serviceTlsCert" in str(info.value)
    assert "unnamed.ztml.svc" in str(info.value)


# --- the deploy gate ----------------------------------------------------------------------


def test_every_refused_model_is_named_with_every_reason_before_anything_is_declared(
    make_config: Callable[..., StackConfig],
    program_runner: Callable[[StackConfig], Any],
    registered_urns: Callable[[], list[str]],
    digests: Any,
) -> None:
    # The service certificate names digits-cnn and breast-cancer (conftest.py).
    config = make_config(
        models=[
            {"name": "digits-cnn", "digest": digests.unapproved},
            {"name": "breast-cancer", "digest": digests.revoked},
        ]
    )
    with pytest.raises(pulumi.RunError) as info:
        program_runner(config)
    assert not [u for u in registered_urns() if "kubernetes:" in u], "declared while denied"
    cause = info.value.__cause__
    assert isinstance(cause, ModelsDeniedError), repr(cause)
    assert [name for name, _ in cause.refusals] == ["digits-cnn", "breast-cancer"]
    for name, err in cause.refusals:
        assert isinstance(err, DeployDeniedError), (name, err)
        assert err.reasons, name
        for reason in err.reasons:
            assert reason in str(info.value), (name, reason)
    assert f"model 'digits-cnn' (ztml:models): Deploy gate refused model {digests.unapproved}" in (
        str(info.value)
    )
    assert f"model 'breast-cancer' (ztml:models): Deploy gate refused model {digests.revoked}" in (
        str(info.value)
    )


def test_a_refused_extra_model_does_not_hide_the_approved_ones(
    make_config: Callable[..., StackConfig],
    program_runner: Callable[[StackConfig], Any],
    digests: Any,
) -> None:
    config = make_config(
        models=[
            {"name": "digits-cnn", "digest": EXTRA_MODELS["digits-cnn"]},
            {"name": "breast-cancer", "digest": digests.weak},
        ]
    )
    with pytest.raises(pulumi.RunError) as info:
        program_runner(config)
    cause = info.value.__cause__
    assert isinstance(cause, ModelsDeniedError), repr(cause)
    assert [name for name, _ in cause.refusals] == ["breast-cancer"]


def test_a_model_named_otherwise_than_registered_is_refused_before_anything_is_declared(
    make_config: Callable[..., StackConfig],
    program_runner: Callable[[StackConfig], Any],
    registered_urns: Callable[[], list[str]],
) -> None:
    # Each name is valid and approved, but pinned to the other model's digest: the pods
    # would refuse to start; the program refuses first, naming both.
    config = make_config(
        models=[
            {"name": "digits-cnn", "digest": EXTRA_MODELS["breast-cancer"]},
            {"name": "breast-cancer", "digest": EXTRA_MODELS["digits-cnn"]},
        ]
    )
    with pytest.raises(pulumi.RunError) as info:
        program_runner(config)
    assert not [u for u in registered_urns() if "kubernetes:" in u], "declared while refused"
    cause = info.value.__cause__
    assert isinstance(cause, ModelsDeniedError), repr(cause)
    assert [name for name, _ in cause.refusals] == ["digits-cnn", "breast-cancer"]
    assert all(isinstance(err, ModelNameError) for _, err in cause.refusals)
    assert (
        f"model 'digits-cnn' (ztml:models): the ledger registers {EXTRA_MODELS['breast-cancer']} "
        "as model 'breast-cancer', not 'digits-cnn'; in ztml:models name it 'breast-cancer'"
    ) in str(info.value)


def test_models_config_is_read_from_pulumis_json_text(raw_values: dict[str, str]) -> None:
    from infra.config import parse_config

    raw = dict(raw_values)
    raw["ztml:models"] = json.dumps([{"name": n, "digest": d} for n, d in EXTRA_MODELS.items()])
    config = parse_config(raw)
    assert [(m.name, m.digest) for m in config.models] == list(EXTRA_MODELS.items())
