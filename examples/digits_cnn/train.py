"""Train the adversarially robust digits CNN and write it as a ztml model package.

    python examples/digits_cnn/train.py --out DIR [--epochs N] [--seed S] [--eps E]

The data is scikit-learn's bundled 8x8 digits (1797 images, pixels 0..16 scaled to
[0, 1]), split 60/20/20 into train, validation and test, stratified by digit, with
``--seed`` (which also seeds the training). Training is PGD adversarial training: every
batch is replaced by its L-inf PGD-10 adversarial examples at radius ``--eps`` (after
a few clean warm-up epochs). The package holds ``ztml-model.json`` (the contract),
``model.safetensors``, a copy of ``model.py`` and the held-out splits in ``data/``;
``ztml model sign DIR`` signs it.

Same seed, same machine and torch build: the same weights, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from model import build
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

NAME = "digits-cnn"
VERSION = "1.0.0"
ARGUMENTS = {"channels": [16, 32], "hidden": 64}
SHAPE = [1, 8, 8]
BATCH = 64
WARMUP_EPOCHS = 2  # clean epochs before adversarial training starts
TRAIN_STEPS = 10  # PGD steps per adversarial training batch
EVAL_STEPS = 20  # PGD steps of the reported robust accuracy


def load_splits(seed: int) -> dict[str, np.ndarray]:
    """Load the digits, scale pixels to [0, 1] and split 60/20/20, stratified by digit.

    Args:
        seed: Seed of the split.

    Returns:
        ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``, ``y_test``: images
        float32 (N, 1, 8, 8) in [0, 1], labels int64 (the digit).
    """
    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float32) / np.float32(16.0)).reshape(-1, *SHAPE)
    y = np.asarray(digits.target, dtype=np.int64)
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


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """L-inf PGD with a random start (cross-entropy), kept inside the pixel range [0, 1].

    Args:
        model: The network, in eval mode.
        x: Images (N, 1, 8, 8) in [0, 1].
        y: Labels (N,).
        eps: Radius in pixel units (the pixel range is 1, so also a fraction of it).
        steps: Gradient steps of size 2.5 * eps / steps.
        generator: Source of the random start.

    Returns:
        The adversarial images.
    """
    step = 2.5 * eps / steps
    noise = torch.rand(x.shape, generator=generator) * 2 * eps - eps
    adv = (x + noise).clamp(0.0, 1.0)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0.0, 1.0)
    return adv.detach()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``x``."""
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def train(splits: dict[str, np.ndarray], *, epochs: int, seed: int, eps: float) -> nn.Module:
    """Train the CNN with Adam: clean warm-up epochs, then PGD-10 adversarial training.

    Args:
        splits: The data (see :func:`load_splits`).
        epochs: Passes over the training split, warm-up included.
        seed: Seed of the initialization, the batch order and the PGD random starts.
        eps: Adversarial training radius (0: clean training only).

    Returns:
        The trained network, in eval mode.
    """
    torch.manual_seed(seed)
    network = build(**ARGUMENTS)
    x = torch.from_numpy(splits["x_train"])
    y = torch.from_numpy(splits["y_train"])
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(BATCH):
            inputs, targets = x[batch], y[batch]
            if eps > 0 and epoch >= WARMUP_EPOCHS:
                network.eval()
                inputs = pgd(
                    network, inputs, targets, eps=eps, steps=TRAIN_STEPS, generator=generator
                )
            network.train()
            loss = nn.functional.cross_entropy(network(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    network.eval()
    return network


def write_package(out: Path, network: nn.Module, splits: dict[str, np.ndarray]) -> None:
    """Write the package: contract, weights, ``model.py`` and the held-out data.

    Args:
        out: The package directory (created; files of an earlier run are replaced).
        network: The trained network.
        splits: The data.
    """
    contract = {
        "format": "ztml-model/v1",
        "name": NAME,
        "version": VERSION,
        "architecture": {"entry_point": "model:build", "arguments": ARGUMENTS},
        "weights": "model.safetensors",
        "input": {
            "modality": "image",
            "shape": SHAPE,
            "dtype": "float32",
            "bounds": {"min": 0.0, "max": 1.0},
            "image_layout": SHAPE,
        },
        "preprocessing": {"kind": "none"},
        "labels": [str(digit) for digit in range(10)],
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
    """Train, report clean and PGD-20 accuracy and write the package."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="package directory to write")
    parser.add_argument("--epochs", type=int, default=80, help="passes over the training split")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of split and training")
    parser.add_argument(
        "--eps", type=float, default=0.1, help="PGD radius for adversarial training (0: off)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or not 0.0 <= args.eps < 1.0:
        parser.error("--epochs must be >= 1 and --eps in [0, 1)")

    torch.set_num_threads(1)  # tiny tensors: a second thread costs more than it brings
    splits = load_splits(args.seed)
    started = time.perf_counter()
    network = train(splits, epochs=args.epochs, seed=args.seed, eps=args.eps)
    seconds = time.perf_counter() - started
    generator = torch.Generator().manual_seed(args.seed)
    for key in ("val", "test"):
        x = torch.from_numpy(splits[f"x_{key}"])
        y = torch.from_numpy(splits[f"y_{key}"])
        adv = pgd(network, x, y, eps=0.1, steps=EVAL_STEPS, generator=generator)
        print(
            f"{key:>4} accuracy: clean {accuracy(network, x, y):.4f}, "
            f"PGD-{EVAL_STEPS} at eps 0.1 {accuracy(network, adv, y):.4f}"
        )
    print(f"trained {args.epochs} epochs in {seconds:.1f} s")

    write_package(args.out, network, splits)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
