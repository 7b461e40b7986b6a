"""Train the breast-cancer classifier and write it as a ztml model package.

    python examples/breast_cancer/train.py --out DIR [--epochs N] [--seed S] [--adv-eps E]

The data is scikit-learn's bundled Wisconsin diagnostic breast-cancer set (569 rows, 30
features, labels malignant/benign), split 60/20/20 into train, validation and test,
stratified by label, with ``--seed`` (which also seeds the training). The package holds
``ztml-model.json`` (the contract), ``model.safetensors``, a copy of ``model.py`` and the
held-out splits in ``data/``, all in raw units; ``ztml model sign DIR`` signs it.

Same seed, same machine and torch build: the same weights, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from model import build
from safetensors.torch import save_file
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import nn

NAME = "breast-cancer"
VERSION = "1.0.0"
HIDDEN = [64, 32]
LABELS = ["malignant", "benign"]  # scikit-learn's target 0 and 1
WIDEN = 0.10  # bounds: the training min/max widened by this fraction of the range
BATCH = 64
ATTACK_STEPS = 5  # PGD steps per adversarial training batch
SIGNIFICANT_DIGITS = 4  # bounds are rounded outward to this many significant digits


def load_splits(seed: int) -> dict[str, np.ndarray]:
    """Load the data set and split it 60/20/20, stratified by label.

    Args:
        seed: Seed of the split.

    Returns:
        ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``, ``y_test``: features
        float32 (N, 30) in raw units, labels int64 (0 malignant, 1 benign).
    """
    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=seed
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed
    )
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_val": x_val,
        "y_val": y_val,
        "x_test": x_test,
        "y_test": y_test,
    }


def _round_outward(value: float, *, up: bool) -> float:
    """Round ``value`` away from the inside of the bounds to a few significant digits."""
    if value == 0.0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(abs(value))) - SIGNIFICANT_DIGITS + 1)
    decimals = max(0, -math.floor(math.log10(step)))
    rounded = round((math.ceil(value / step) if up else math.floor(value / step)) * step, decimals)
    if (up and rounded < value) or (not up and rounded > value):  # float noise
        rounded = round(rounded + (step if up else -step), decimals)
    return rounded


def declared_bounds(x_train: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-feature bounds: the training min and max widened by 10% of the range.

    Every feature of this data set is a non-negative measurement, so a lower bound never
    goes below 0. Bounds are rounded outward to 4 significant digits to stay readable.

    Args:
        x_train: Training features (N, 30) in raw units.

    Returns:
        The lower and upper bounds, one number per feature.
    """
    low = x_train.min(axis=0).astype(np.float64)
    high = x_train.max(axis=0).astype(np.float64)
    margin = WIDEN * (high - low)
    lower = [_round_outward(max(0.0, v), up=False) for v in low - margin]
    upper = [_round_outward(v, up=True) for v in high + margin]
    return lower, upper


def clip_into(x: np.ndarray, lower: list[float], upper: list[float]) -> tuple[np.ndarray, int]:
    """Clip rows into the declared bounds (float32 values that compare inside them).

    Args:
        x: Features float32 (N, 30).
        lower: Lower bounds.
        upper: Upper bounds.

    Returns:
        The clipped copy and how many values changed.
    """
    low = np.asarray(lower, dtype=np.float32)
    high = np.asarray(upper, dtype=np.float32)
    # a float32 bound may round past the declared float64 one: step back inside
    low = np.where(low < np.asarray(lower), np.nextafter(low, np.float32(np.inf)), low)
    high = np.where(high > np.asarray(upper), np.nextafter(high, np.float32(-np.inf)), high)
    clipped = np.clip(x, low, high).astype(np.float32)
    return clipped, int(np.count_nonzero(clipped != x))


class UnitNetwork(nn.Module):
    """Unit inputs u in [0, 1]^30 -> logits, as ztml sees the model.

    x = lower + u * (upper - lower), standardized with the training mean and std, then
    the network. Adversarial training and its attack work in this space, where an ε
    is a fraction of every feature's declared range.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        lower: list[float],
        upper: list[float],
        mean: np.ndarray,
        std: np.ndarray,
    ) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("lower", torch.tensor(lower, dtype=torch.float32))
        self.register_buffer("span", torch.tensor(upper, dtype=torch.float32) - self.lower)
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("std", torch.from_numpy(std))

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Map raw features to unit space."""
        return (x - self.lower) / self.span

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Return the logits for unit inputs (N, 30)."""
        x = self.lower + u * self.span
        return self.network((x - self.mean) / self.std)


def pgd(
    model: UnitNetwork, u: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int
) -> torch.Tensor:
    """L-inf PGD in unit space (cross-entropy, no random start), kept inside [0, 1].

    Args:
        model: The unit network.
        u: Unit inputs (N, 30).
        y: Labels (N,).
        eps: Radius, a fraction of each feature's declared range.
        steps: Gradient steps of size 2.5 * eps / steps.

    Returns:
        The adversarial unit inputs.
    """
    step = 2.5 * eps / steps
    adv = u.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step * grad.sign()
        adv = torch.min(torch.max(adv, u - eps), u + eps).clamp(0.0, 1.0)
    return adv.detach()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``x``."""
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def train(
    splits: dict[str, np.ndarray],
    *,
    lower: list[float],
    upper: list[float],
    epochs: int,
    seed: int,
    adv_eps: float,
) -> tuple[nn.Module, UnitNetwork]:
    """Train the MLP with Adam; with ``adv_eps`` > 0 on PGD adversarial examples only.

    Every batch is replaced by its 5-step PGD examples in unit space (no random start), so
    the model learns to keep its answer when every feature moves by up to ``adv_eps`` of
    its declared range (the deploy gate attacks at 0.1).

    Args:
        splits: The data (see :func:`load_splits`).
        lower: Declared lower bounds.
        upper: Declared upper bounds.
        epochs: Passes over the training split.
        seed: Seed of the initialization and the batch order.
        adv_eps: Radius of the adversarial examples in unit space (0: clean training).

    Returns:
        The trained network and its unit-space wrapper.
    """
    torch.manual_seed(seed)
    x_train = splits["x_train"]
    mean = x_train.mean(axis=0).astype(np.float32)
    std = x_train.std(axis=0).astype(np.float32)
    network = build(HIDDEN)
    model = UnitNetwork(network, lower=lower, upper=upper, mean=mean, std=std)
    u = model.to_unit(torch.from_numpy(x_train))
    y = torch.from_numpy(splits["y_train"])
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(u), generator=order).split(BATCH):
            inputs, targets = u[batch], y[batch]
            if adv_eps > 0:
                network.eval()
                inputs = pgd(model, inputs, targets, eps=adv_eps, steps=ATTACK_STEPS)
            network.train()
            loss = nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    network.eval()
    return network, model


def write_package(
    out: Path,
    network: nn.Module,
    splits: dict[str, np.ndarray],
    *,
    lower: list[float],
    upper: list[float],
) -> None:
    """Write the package: contract, weights, ``model.py`` and the held-out data.

    Args:
        out: The package directory (created; files of an earlier run are replaced).
        network: The trained network.
        splits: The data; validation and test are written as given (already clipped).
        lower: Declared lower bounds.
        upper: Declared upper bounds.
    """
    x_train = splits["x_train"]
    contract = {
        "format": "ztml-model/v1",
        "name": NAME,
        "version": VERSION,
        "architecture": {"entry_point": "model:build", "arguments": {"hidden": HIDDEN}},
        "weights": "model.safetensors",
        "input": {
            "modality": "tabular",
            "shape": [30],
            "dtype": "float32",
            "bounds": {"min": lower, "max": upper},
            "features": list(load_breast_cancer().feature_names),
        },
        "preprocessing": {
            "kind": "standardize",
            "mean": [float(v) for v in x_train.mean(axis=0).astype(np.float32)],
            "std": [float(v) for v in x_train.std(axis=0).astype(np.float32)],
        },
        "labels": LABELS,
        "data": {"validation": "data/validation.safetensors", "test": "data/test.safetensors"},
    }
    (out / "data").mkdir(parents=True, exist_ok=True)
    stale = out / "model.sig"
    if stale.exists():
        stale.unlink()
        print(f"removed {stale}: the package changed, sign it again")
    (out / "ztml-model.json").write_text(json.dumps(contract, indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    shutil.copyfile(Path(__file__).with_name("model.py"), out / "model.py")
    for split, key in (("validation", "val"), ("test", "test")):
        tensors = {
            "x": torch.from_numpy(np.ascontiguousarray(splits[f"x_{key}"])),
            "y": torch.from_numpy(np.ascontiguousarray(splits[f"y_{key}"])),
        }
        save_file(tensors, str(out / "data" / f"{split}.safetensors"))


def main(argv: list[str] | None = None) -> int:
    """Train, report the clean accuracy and write the package."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="package directory to write")
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training split")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of split and training")
    parser.add_argument(
        "--adv-eps",
        type=float,
        default=0.1,
        help="PGD radius for adversarial training, fraction of each feature's range (0: off)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or not 0.0 <= args.adv_eps < 1.0:
        parser.error("--epochs must be >= 1 and --adv-eps in [0, 1)")

    torch.set_num_threads(1)  # a tiny network: threads cost more than they bring
    splits = load_splits(args.seed)
    lower, upper = declared_bounds(splits["x_train"])
    for key in ("x_val", "x_test"):
        splits[key], changed = clip_into(splits[key], lower, upper)
        if changed:
            print(f"clipped {changed} value(s) of {key[2:]} into the declared bounds")

    started = time.perf_counter()
    network, model = train(
        splits, lower=lower, upper=upper, epochs=args.epochs, seed=args.seed, adv_eps=args.adv_eps
    )
    seconds = time.perf_counter() - started
    for key in ("val", "test"):
        u = model.to_unit(torch.from_numpy(splits[f"x_{key}"]))
        y = torch.from_numpy(splits[f"y_{key}"])
        line = f"{key:>4} accuracy: clean {accuracy(model, u, y):.4f}"
        if args.adv_eps > 0:
            adv = pgd(model, u, y, eps=args.adv_eps, steps=20)
            line += f", PGD-20 at eps {args.adv_eps:g} {accuracy(model, adv, y):.4f}"
        print(line)
    print(f"trained {args.epochs} epochs in {seconds:.1f} s")

    write_package(args.out, network, splits, lower=lower, upper=upper)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
