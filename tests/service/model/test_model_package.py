"""Opening model packages: code from inside the package only, weights without pickle."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from service.model.artifact import save_model
from service.model.config import EvalConfig
from service.model.contract import DIGITS_CONTRACT
from service.model.errors import ContractError, PackageError
from service.model.evaluate import evaluate_served
from service.model.net import DigitsNet
from service.model.package import open_model
from tests.service.model.packages import LOWER, UPPER, contract_doc, write_package


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid tiny tabular package (never changed by the tests)."""
    return write_package(tmp_path_factory.mktemp("pkg") / "tiny")


@pytest.fixture
def package(package_dir: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny package, for a test to break."""
    return Path(shutil.copytree(package_dir, tmp_path / "tiny"))


def _rewrite_contract(package: Path, **changes: object) -> None:
    doc = json.loads((package / "ztml-model.json").read_text())
    doc.update(changes)
    (package / "ztml-model.json").write_text(json.dumps(doc))


def test_a_package_opens_with_its_contract_and_digest(package_dir: Path) -> None:
    served = open_model(package_dir)
    weights = package_dir / "model.safetensors"
    assert served.contract.name == "tiny-tabular"
    assert served.weights_path == weights.resolve()
    assert served.weights_digest == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    assert served.weights_size == weights.stat().st_size
    assert not served.network.training
    assert not any(p.requires_grad for p in served.network.parameters())
    x, y = served.test()
    assert x.shape == (200, 4) and x.dtype == np.float32
    assert y.shape == (200,) and y.dtype == np.int64


def test_the_contract_file_opens_the_package_too(package_dir: Path) -> None:
    served = open_model(package_dir / "ztml-model.json")
    assert served.contract.name == "tiny-tabular"


def test_opening_imports_nothing_into_sys_path_or_the_package(package_dir: Path) -> None:
    before_path, before_modules = list(sys.path), dict(sys.modules)
    open_model(package_dir)
    open_model(package_dir)
    assert sys.path == before_path
    assert "model" not in sys.modules or sys.modules.get("model") is before_modules.get("model")
    assert not list(package_dir.rglob("__pycache__"))


def test_an_already_imported_module_of_the_same_name_is_left_alone(
    package_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentinel = type(sys)("model")
    monkeypatch.setitem(sys.modules, "model", sentinel)
    open_model(package_dir)
    assert sys.modules["model"] is sentinel


def test_unit_space_round_trips_and_the_unit_network_differentiates(package_dir: Path) -> None:
    served = open_model(package_dir)
    x, _ = served.test()
    u = served.to_unit(x)
    assert u.min() >= 0 and u.max() <= 1
    np.testing.assert_allclose(served.from_unit(u), x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(served.to_unit(np.array([LOWER, UPPER])), [[0] * 4, [1] * 4])
    ut = torch.from_numpy(u).requires_grad_(True)
    logits = served.unit_network(ut)
    pre = served.contract.preprocessing
    xs = (torch.from_numpy(x) - torch.tensor(pre["mean"])) / torch.tensor(pre["std"])
    torch.testing.assert_close(logits, served.network(xs), rtol=1e-4, atol=1e-4)
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), ut)
    assert grad.shape == (200, 4) and grad.abs().sum() > 0


def test_an_entry_point_escaping_the_package_is_refused(package: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("def build(**kw):\n    raise SystemExit('ran code outside')\n")
    (package / "linked.py").symlink_to(outside)
    _rewrite_contract(
        package, architecture={"entry_point": "linked:build", "arguments": {"hidden": 8}}
    )
    with pytest.raises(PackageError, match=r"^architecture.entry_point: .*outside the package"):
        open_model(package)


def test_a_dotted_entry_point_is_a_file_in_a_subdirectory(package: Path) -> None:
    (package / "arch").mkdir()
    (package / "model.py").rename(package / "arch" / "net.py")
    _rewrite_contract(
        package, architecture={"entry_point": "arch.net:build", "arguments": {"hidden": 8}}
    )
    assert open_model(package).contract.entry_point == "arch.net:build"


def test_a_missing_factory_is_named(package: Path) -> None:
    _rewrite_contract(package, architecture={"entry_point": "model:make", "arguments": {}})
    with pytest.raises(PackageError, match=r"^architecture.entry_point: .* no function 'make'"):
        open_model(package)


def test_a_factory_that_returns_no_module_is_refused(package: Path) -> None:
    (package / "model.py").write_text("def build(hidden=8):\n    return 'not a module'\n")
    with pytest.raises(PackageError, match=r"^architecture.entry_point: .*not a torch.nn.Module"):
        open_model(package)


def test_a_wrong_tensor_shape_is_named(package: Path) -> None:
    _rewrite_contract(
        package, architecture={"entry_point": "model:build", "arguments": {"hidden": 9}}
    )
    with pytest.raises(PackageError, match=r"^weights \(model.safetensors\): tensor '0.weight'"):
        open_model(package)


def test_a_missing_tensor_is_named(package: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(package / "model.safetensors"))
    del tensors["2.bias"]
    save_file(tensors, str(package / "model.safetensors"))
    with pytest.raises(PackageError, match=r"tensor '2.bias' is missing"):
        open_model(package)


def test_pickled_weights_are_refused_and_never_unpickled(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {k: v for k, v in open_model(package).network.state_dict().items()}
    torch.save(state, package / "model.safetensors")

    def no_unpickling(*args: object, **kwargs: object) -> object:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(PackageError, match=r"^weights .*not a valid safetensors file"):
        open_model(package)


def test_labels_that_do_not_match_the_logits_are_named(package: Path) -> None:
    _rewrite_contract(package, labels=["a", "b", "c"])
    with pytest.raises(PackageError, match=r"^labels: the contract has 3 labels .* \[1, 2\]"):
        open_model(package)


def test_data_outside_the_bounds_is_named_with_file_and_index(package: Path) -> None:
    x = torch.tensor([[5.0, 0.0, 150.0, 0.5], [5.0, 0.0, 250.0, 0.5]])
    save_file({"x": x, "y": torch.tensor([0, 1])}, str(package / "data" / "test.safetensors"))
    served = open_model(package)
    with pytest.raises(
        PackageError,
        match=r"^data.test \(data/test.safetensors\): x\[1\]\[2\] \(weight\) = 250.0 is outside",
    ):
        served.test()
    served.validation()  # the other file is fine


def test_bad_labels_and_shapes_in_data_are_named(package: Path) -> None:
    path = package / "data" / "validation.safetensors"
    x = torch.tensor([[5.0, 0.0, 150.0, 0.5]] * 2)
    save_file({"x": x, "y": torch.tensor([0, 2])}, str(path))
    with pytest.raises(PackageError, match=r"^data.validation .*y\[1\] = 2 is not a class"):
        open_model(package).validation()
    save_file({"x": x.double(), "y": torch.tensor([0, 1])}, str(path))
    with pytest.raises(PackageError, match=r"^data.validation .*'x' is torch.float64"):
        open_model(package).validation()


def test_a_missing_data_file_is_named(package: Path) -> None:
    (package / "data" / "test.safetensors").unlink()
    with pytest.raises(PackageError, match=r"^data.test: "):
        open_model(package)


def test_a_bad_contract_is_a_contract_error(package: Path) -> None:
    _rewrite_contract(package, labels=["a"])
    with pytest.raises(ContractError, match=r"^labels: "):
        open_model(package)


def test_a_directory_that_is_neither_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"neither a model package"):
        open_model(tmp_path)


def test_the_digits_artifact_opens_as_the_builtin_model(tmp_path: Path) -> None:
    digest = save_model(
        DigitsNet((16,)),
        tmp_path / "model.safetensors",
        metadata={"version": "1", "defense": "none"},
    )
    for path in (tmp_path, tmp_path / "model.safetensors"):
        served = open_model(path)
        assert served.builtin
        assert served.contract == DIGITS_CONTRACT
        assert served.weights_digest == digest
        x, y = served.validation()
        assert x.shape[1] == 64 and len(y) == len(x)
        u = torch.from_numpy(served.to_unit(x[:5]))
        torch.testing.assert_close(served.unit_network(u), served.network(u))


def test_evaluation_of_a_tabular_package_uses_its_test_data(package_dir: Path) -> None:
    served = open_model(package_dir)
    tiny = EvalConfig(steps=10, restarts=1, autoattack=False)
    evaluation = evaluate_served(served, tiny)
    assert evaluation["dataset"] == "tiny-tabular/test"
    assert evaluation["clean_accuracy"] >= 0.9
    attacks = {(r["attack"], r["epsilon"]) for r in evaluation["robust"]}
    assert attacks == {(a, e) for a in ("fgsm", "pgd-ce", "pgd-cw", "pgd") for e in tiny.epsilons}
    pgd = {r["epsilon"]: r["accuracy"] for r in evaluation["robust"] if r["attack"] == "pgd"}
    assert pgd[0.05] >= pgd[0.1] >= pgd[0.2] >= pgd[0.3]
    assert pgd[0.3] < evaluation["clean_accuracy"]


def test_contract_fixture_is_valid() -> None:
    assert contract_doc()["name"] == "tiny-tabular"


@pytest.fixture
def signed(package: Path, tmp_path: Path) -> dict[str, str]:
    """What a real OMS bundle over the package signs, verified against its key."""
    from service.oms import TrustedSigners, sign_model, verify_model_bundle
    from tests.service.oms.tampering import make_keys

    keys = make_keys(tmp_path / "oms")
    sign_model(package, key=keys.key)
    verified = verify_model_bundle(
        package / "model.safetensors", signers=TrustedSigners.from_directory(keys.signers)
    )
    return verified.bundle.file_digests()


def test_a_bundle_lists_every_package_file_with_its_digest(
    package: Path, signed: dict[str, str]
) -> None:
    files = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    assert set(signed) == files - {"model.sig"}
    data = (package / "data" / "validation.safetensors").read_bytes()
    assert signed["data/validation.safetensors"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_a_package_that_matches_its_signature_opens(package: Path, signed: dict[str, str]) -> None:
    served = open_model(package, signed_files=signed)
    assert served.validation()[0].shape[1] == 4


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("model.py", "architecture.entry_point"),
        ("ztml-model.json", "ztml-model.json"),
        ("model.safetensors", "weights"),
    ],
)
def test_a_file_replaced_after_verification_is_never_loaded(
    package: Path, signed: dict[str, str], name: str, where: str
) -> None:
    # The swap a time-of-check/time-of-use attack makes: same parse-able content, one
    # byte or line different, after the signature verified and before the load.
    path = package / name
    if name == "model.py":
        path.write_text(path.read_text() + "\nimport os  # runs at import\n")
    elif name == "ztml-model.json":
        doc = json.loads(path.read_text())
        doc["version"] = "9.9.9"
        path.write_text(json.dumps(doc))
    else:
        tensors = {k: v.clone() for k, v in _tensors(path).items()}
        next(iter(tensors.values())).mul_(1.01)
        save_file(tensors, str(path))
    changed = re.escape(f"{where}: {name} changed after its OMS signature")
    with pytest.raises(PackageError, match=changed):
        open_model(package, signed_files=signed)


def test_replaced_validation_data_is_refused_when_read(
    package: Path, signed: dict[str, str]
) -> None:
    served = open_model(package, signed_files=signed)
    path = package / "data" / "validation.safetensors"
    tensors = _tensors(path)
    save_file({"x": tensors["x"].flip(0), "y": tensors["y"].flip(0)}, str(path))
    with pytest.raises(PackageError, match=re.escape("data/validation.safetensors changed after")):
        served.validation()


def test_a_file_the_signature_does_not_cover_is_refused(
    package: Path, signed: dict[str, str]
) -> None:
    unsigned = {k: v for k, v in signed.items() if k != "model.py"}
    uncovered = re.escape("model.py is not among the files the verified OMS signature covers")
    with pytest.raises(PackageError, match=uncovered):
        open_model(package, signed_files=unsigned)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


SPLIT_MODEL_PY = """\
from torch import nn

from .blocks.head import head
from .layers import hidden_block


def build(hidden=8, n_in=4, n_out=2):
    return nn.Sequential(*hidden_block(n_in, hidden), head(hidden, n_out))
"""


def _split_across_files(package: Path) -> None:
    """Spread the tiny model over three files, the way a user's code base would be."""
    (package / "model.py").write_text(SPLIT_MODEL_PY)
    (package / "layers.py").write_text(
        "from torch import nn\n\n\ndef hidden_block(n_in, hidden):\n"
        "    return [nn.Linear(n_in, hidden), nn.ReLU()]\n"
    )
    (package / "blocks").mkdir()
    (package / "blocks" / "head.py").write_text(
        "from torch import nn\n\n\ndef head(hidden, n_out):\n    return nn.Linear(hidden, n_out)\n"
    )


def test_package_files_import_each_other_relatively(package: Path, package_dir: Path) -> None:
    _split_across_files(package)
    before_path, before_modules = list(sys.path), set(sys.modules)
    first = open_model(package)
    open_model(package)
    x, _ = first.test()
    reference = open_model(package_dir)
    unit = torch.from_numpy(first.to_unit(x))
    torch.testing.assert_close(first.unit_network(unit), reference.unit_network(unit))
    assert sys.path == before_path
    assert not list(package.rglob("__pycache__"))
    # Each opening has its own modules, under a top-level name nobody else uses.
    added = sorted(set(sys.modules) - before_modules)
    tops = sorted({n.partition(".")[0] for n in added if n.startswith("_ztml_model_")})
    assert len(tops) == 3, added  # first, second and the reference
    for top in tops[:2]:
        assert {f"{top}.model", f"{top}.layers", f"{top}.blocks", f"{top}.blocks.head"} <= set(
            added
        )
    assert not {"model", "layers", "blocks"} & (set(sys.modules) - before_modules)


def test_an_absolute_import_of_a_package_file_is_named_with_the_fix(package: Path) -> None:
    _split_across_files(package)
    (package / "model.py").write_text(SPLIT_MODEL_PY.replace("from .layers", "from layers"))
    before = set(sys.modules)
    with pytest.raises(PackageError, match=re.escape("`from . import layers`")):
        open_model(package)
    # The failed package's modules are dropped.
    assert not [n for n in set(sys.modules) - before if n.startswith("_ztml_model_")]


def test_an_imported_file_is_held_to_the_signature_too(package: Path, tmp_path: Path) -> None:
    from service.oms import TrustedSigners, sign_model, verify_model_bundle
    from tests.service.oms.tampering import make_keys

    _split_across_files(package)
    keys = make_keys(tmp_path / "oms")
    sign_model(package, key=keys.key)
    signed = verify_model_bundle(
        package / "model.safetensors", signers=TrustedSigners.from_directory(keys.signers)
    ).bundle.file_digests()
    assert {"layers.py", "blocks/head.py"} <= set(signed)
    open_model(package, signed_files=signed)
    head = package / "blocks" / "head.py"
    head.write_text(
        head.read_text().replace("nn.Linear(hidden, n_out)", "nn.Linear(hidden, n_out, bias=True)")
    )
    with pytest.raises(PackageError, match=re.escape("blocks/head.py changed after its OMS")):
        open_model(package, signed_files=signed)


def test_an_imported_file_linked_from_outside_is_refused(package: Path, tmp_path: Path) -> None:
    _split_across_files(package)
    outside = tmp_path / "evil.py"
    outside.write_text("raise SystemExit('ran code outside')\n")
    (package / "layers.py").unlink()
    (package / "layers.py").symlink_to(outside)
    with pytest.raises(PackageError, match="outside the package"):
        open_model(package)
