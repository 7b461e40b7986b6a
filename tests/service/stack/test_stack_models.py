"""Three models in one local stack: the digits demo model and both example packages.

Each example is trained by its own ``train.py``, signed, evaluated at the gate's
strength, registered with its own tenant, risk tier, batch limit and explanation rights,
and approved through the ``ztml`` command, then served by ``ztml up --model`` beside the
demo model. The tests attack the boundaries between them: tenants, inputs meant for
another model, rights recorded at registration, and packages changed after registration.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from safetensors.torch import load_file, save_file

from service.stack.state import ModelServer, StackState, read_state
from tests.service.app.harness import token
from tests.service.cluster.fixtures import Example, cached_example, install_example
from tests.service.stack.test_stack_up import family, gone, ztml

pytestmark = [pytest.mark.system, pytest.mark.slow]


# The examples as the local stack registers them: the CNN without explanation rights.
BREAST = Example("breast_cancer", "breast-cancer", "0.05", "clinic", "medium", 8)
CNN = Example("digits_cnn", "digits-cnn", "0.1", "vision", "low", 32, explanations=False)


@pytest.fixture(scope="module")
def built(pytestconfig: pytest.Config) -> dict[str, Path]:
    """Both examples, trained and evaluated once per cache (shared with the cluster tests)."""
    return {
        e.name: cached_example(pytestconfig, e.directory, e.name, e.epsilon) for e in (BREAST, CNN)
    }


@dataclass
class Stack:
    """The running stack of three models and how to call it."""

    home: Path
    state: StackState
    packages: dict[str, Path]
    up_output: str

    def server(self, name: str) -> ModelServer:
        return next(m for m in self.state.models if m.name == name)

    def call(
        self,
        name: str,
        action: str,
        body: dict[str, Any] | None,
        *,
        tenant: str,
        roles: tuple[str, ...] = ("analyst",),
        route_name: str | None = None,
    ) -> httpx.Response:
        """Call ``action`` of model ``name`` (on its server, naming ``route_name``)."""
        port = self.state.service.port if name == "digits" else self.server(name).port
        url = f"https://127.0.0.1:{port}/v1/models/{route_name or name}/{action}"
        headers = {
            "authorization": f"Bearer {token(self.home, 'alice', roles=roles, tenant=tenant)}"
        }
        with httpx.Client(verify=self.state.caller_context(), timeout=30) as client:
            if body is None:
                return client.get(url, headers=headers)
            return client.post(url, headers=headers, json=body)


@pytest.fixture(scope="module")
def stack(
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
    stack_model_source: Path,
) -> Iterator[Stack]:
    from service.stack.provision import demo_model_dir

    home = tmp_path_factory.mktemp("models-stack")
    shutil.copytree(stack_model_source, demo_model_dir(home))
    run = ztml(home, "keys", "init")
    assert run.returncode == 0, run.stdout + run.stderr
    packages = {e.name: install_example(home, pytestconfig, e).path for e in (BREAST, CNN)}
    up = ztml(
        home,
        "up",
        "--detach",
        *(arg for p in packages.values() for arg in ("--model", str(p))),
        timeout=600,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    state = read_state(home)
    assert state is not None
    try:
        yield Stack(home, state, packages, up.stdout)
    finally:
        pids = [pid for _, info in state.servers() for pid in family(info.pid)]
        down = ztml(home, "down")
        assert down.returncode == 0, down.stderr
        assert gone(pids)


def _rows(package: Path, n: int) -> list[Any]:
    contract = json.loads((package / "ztml-model.json").read_text())
    x = load_file(str(package / contract["data"]["test"]))["x"][:n]
    return x.tolist()  # type: ignore[no-any-return]


def test_up_serves_each_model_on_its_own_server_and_says_where(stack: Stack) -> None:
    assert sorted(m.name for m in stack.state.models) == ["breast-cancer", "digits-cnn"]
    ports = {stack.state.service.port, *(m.port for m in stack.state.models)}
    assert len(ports) == 3
    for server in stack.state.models:
        assert f"{stack.state.model_url(server)}/predict" in stack.up_output


def test_each_model_answers_its_own_tenant_with_its_own_labels(stack: Stack) -> None:
    breast = stack.call(
        "breast-cancer",
        "predict",
        {"instances": _rows(stack.packages["breast-cancer"], 4)},
        tenant="clinic",
    )
    assert breast.status_code == 200, breast.text
    assert {p["class"] for p in breast.json()["predictions"]} <= {"malignant", "benign"}
    cnn = stack.call(
        "digits-cnn",
        "predict",
        {"instances": _rows(stack.packages["digits-cnn"], 4)},
        tenant="vision",
    )
    assert cnn.status_code == 200, cnn.text
    assert all(len(p["probabilities"]) == 10 for p in cnn.json()["predictions"])
    digits = stack.call("digits", "predict", {"instances": [[0.0] * 64]}, tenant="demo")
    assert digits.status_code == 200, digits.text


@pytest.mark.parametrize(
    ("name", "tenant"),
    [
        ("breast-cancer", "vision"),
        ("breast-cancer", "demo"),
        ("digits-cnn", "clinic"),
        ("digits", "clinic"),
    ],
)
def test_a_model_refuses_every_other_tenant(stack: Stack, name: str, tenant: str) -> None:
    package = stack.packages.get(name)
    rows = _rows(package, 1) if package is not None else [[0.0] * 64]
    response = stack.call(name, "predict", {"instances": rows}, tenant=tenant)
    assert response.status_code == 403, response.text
    assert any(f'subject tenant "{tenant}"' in r for r in response.json()["error"]["reasons"])


def test_an_input_valid_for_one_model_is_refused_by_the_other_naming_the_field(
    stack: Stack,
) -> None:
    image = _rows(stack.packages["digits-cnn"], 1)
    response = stack.call("breast-cancer", "predict", {"instances": image}, tenant="clinic")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "instances[0]" and "30" in error["message"]
    row = _rows(stack.packages["breast-cancer"], 1)
    response = stack.call("digits-cnn", "predict", {"instances": row}, tenant="vision")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "instances[0]"


def test_a_value_outside_its_declared_bounds_is_named_with_its_feature(stack: Stack) -> None:
    row = _rows(stack.packages["breast-cancer"], 1)[0]
    row[0] = 1e6
    response = stack.call("breast-cancer", "predict", {"instances": [row]}, tenant="clinic")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "instances[0][0]"
    assert error["feature"] == "mean radius" and "(mean radius)" in error["message"]


def test_batch_limit_and_explanation_rights_come_from_the_registration(stack: Stack) -> None:
    rows = _rows(stack.packages["breast-cancer"], BREAST.max_batch + 1)
    response = stack.call("breast-cancer", "predict", {"instances": rows}, tenant="clinic")
    assert response.status_code == 403, response.text
    assert any(
        f'maximum {BREAST.max_batch} for model "breast-cancer"' in r
        for r in response.json()["error"]["reasons"]
    )
    explained = stack.call("breast-cancer", "explain", {"instances": rows[:2]}, tenant="clinic")
    assert explained.status_code == 200, explained.text
    assert all(len(e["attributions"]) == 30 for e in explained.json()["explanations"])
    image = _rows(stack.packages["digits-cnn"], 1)
    refused = stack.call("digits-cnn", "explain", {"instances": image}, tenant="vision")
    assert refused.status_code == 403, refused.text
    assert any(
        "registered without explanation rights" in r for r in refused.json()["error"]["reasons"]
    )


def test_metadata_reports_the_registered_contract_and_serving_facts(stack: Stack) -> None:
    response = stack.call("breast-cancer", "metadata", None, tenant="clinic")
    assert response.status_code == 200, response.text
    body = response.json()
    contract = json.loads((stack.packages["breast-cancer"] / "ztml-model.json").read_text())
    assert body["model"]["tenant"] == "clinic" and body["model"]["risk_tier"] == "medium"
    assert body["input"]["max_batch"] == BREAST.max_batch
    assert body["input"]["bounds"]["min"] == contract["input"]["bounds"]["min"]
    assert body["labels"] == ["malignant", "benign"]


def test_a_route_naming_another_model_is_not_served(stack: Stack) -> None:
    row = _rows(stack.packages["breast-cancer"], 1)
    response = stack.call(
        "breast-cancer", "predict", {"instances": row}, tenant="clinic", route_name="digits-cnn"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_model"


def test_every_server_audits_into_a_log_that_verifies(stack: Stack) -> None:
    verify = ztml(stack.home, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _resign(home: Path, package: Path) -> None:
    run = ztml(home, "model", "sign", str(package))
    assert run.returncode == 0, run.stdout + run.stderr


def _contract_changed(package: Path) -> None:
    path = package / "ztml-model.json"
    contract = json.loads(path.read_text())
    contract["input"]["bounds"]["max"][0] *= 2  # a wider bound than was registered
    path.write_text(json.dumps(contract))


def _weights_changed(package: Path) -> None:
    path = package / "model.safetensors"
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 0.01
    save_file(tensors, str(path))


def _validation_changed(package: Path) -> None:
    contract = json.loads((package / "ztml-model.json").read_text())
    path = package / contract["data"]["validation"]
    tensors = load_file(str(path))
    keep = tensors["x"].shape[0] - 5
    save_file(
        {"x": tensors["x"][:keep].contiguous(), "y": tensors["y"][:keep].contiguous()}, str(path)
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_contract_changed, "differs from the one registered"),
        (_weights_changed, "no register record"),
        (_validation_changed, "calibration"),
    ],
    ids=["contract", "weights", "calibration"],
)
def test_a_package_that_differs_from_its_registration_does_not_start(
    pytestconfig: pytest.Config,
    tmp_path: Path,
    stack_model_source: Path,
    change: Any,
    reason: str,
) -> None:
    from service.stack.provision import demo_model_dir

    home = tmp_path / "home"
    shutil.copytree(stack_model_source, demo_model_dir(home))
    assert ztml(home, "keys", "init").returncode == 0
    package = install_example(home, pytestconfig, BREAST).path
    change(package)
    _resign(home, package)  # a trusted signer signed the change: only the ledger can tell
    up = ztml(home, "up", "--detach", "--model", str(package), timeout=600)
    assert up.returncode != 0
    assert read_state(home) is None
    logs = (
        up.stdout
        + up.stderr
        + "".join(p.read_text() for p in (home / "logs").glob("service-*.log"))
    )
    assert "refusing to start" in logs and reason in logs, logs[-3000:]


@pytest.mark.parametrize("example", [BREAST, CNN], ids=lambda e: e.name)
def test_each_example_detector_keeps_its_false_positive_rate_and_catches_pgd(
    built: dict[str, Path], example: Example
) -> None:
    """The registration's detector: FPR on held-out clean data, detection of PGD inputs."""
    import math

    import numpy as np
    import torch

    from service.model.attacks import pgd
    from service.model.package import open_model
    from service.sanitizer.calibration import build_detector, calibrate_detector

    fpr = 0.05
    served = open_model(built[example.name] / "package")
    x_val, _ = served.validation()
    calibration = calibrate_detector(
        served.unit_network, served.contract, served.to_unit(x_val), fpr=fpr
    )
    detector = build_detector(served.unit_network, served.contract, calibration)
    x_test, y_test = served.test()
    u = served.to_unit(x_test)
    clean = float(detector.analyze(u).flagged.mean())
    sigma = math.sqrt(fpr * (1 - fpr) / len(u))
    assert clean <= fpr + 3 * sigma, (clean, fpr, sigma)
    eps = float(example.epsilon)
    adversarial = pgd(
        served.unit_network,
        torch.from_numpy(u),
        torch.from_numpy(y_test),
        eps=eps,
        steps=50,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        fooled = (served.unit_network(adversarial).argmax(1) != torch.from_numpy(y_test)).numpy()
    flags = detector.analyze(adversarial.numpy()).flagged
    assert fooled.any()
    detected = float(np.asarray(flags)[fooled].mean())
    print(f"{example.name}: clean FPR {clean:.3f}, detected {detected:.3f} of {fooled.sum()}")
    assert detected > 2 * fpr, detected


def test_a_package_file_replaced_after_the_gate_is_never_run(stack: Stack, tmp_path: Path) -> None:
    """The gate verifies the package; a file swapped before a worker loads it is refused."""
    from service.app.config import load_config
    from service.app.errors import ModelRefusedError
    from service.app.gate import verify_model
    from service.app.layers import load_verified_model

    package = Path(shutil.copytree(stack.packages["breast-cancer"], tmp_path / "breast-cancer"))
    config = load_config(
        {
            "ZTML_HOME": str(stack.home),
            "ZTML_MODEL_PATH": str(package),
            "ZTML_OPA_URL": stack.state.opa_url,
        }
    )
    info = verify_model(config)
    source = package / "model.py"
    assert info.signed_files["model.py"] == (
        "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    )
    assert load_verified_model(info).contract.name == "breast-cancer"
    marker = tmp_path / "ran"
    source.write_text(source.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ModelRefusedError, match=r"model\.py changed after its OMS signature"):
        load_verified_model(info)
    assert not marker.exists()
