"""A tiny tabular model package, written to a directory for the tests.

Four features with different raw ranges, two classes separated by a linear rule, a small
MLP trained for a few hundred steps (a second), standardized inputs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

MODEL_PY = '''\
"""A tiny MLP for the tests."""

from torch import nn


def build(hidden=8, n_in=4, n_out=2):
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))
'''

LOWER = [0.0, -5.0, 100.0, 0.0]
UPPER = [10.0, 5.0, 200.0, 1.0]
FEATURES = ["height", "tilt", "weight", "ratio"]

CONTRACT: dict[str, Any] = {
    "format": "ztml-model/v1",
    "name": "tiny-tabular",
    "version": "1.0.0",
    "architecture": {"entry_point": "model:build", "arguments": {"hidden": 8}},
    "weights": "model.safetensors",
    "input": {
        "modality": "tabular",
        "shape": [4],
        "dtype": "float32",
        "bounds": {"min": LOWER, "max": UPPER},
        "features": FEATURES,
    },
    "preprocessing": {
        "kind": "standardize",
        "mean": [5.0, 0.0, 150.0, 0.5],
        "std": [3.0, 3.0, 30.0, 0.3],
    },
    "labels": ["low", "high"],
    "data": {"validation": "data/validation.safetensors", "test": "data/test.safetensors"},
}


def contract_doc() -> dict[str, Any]:
    """Return a fresh copy of the tiny package's contract document."""
    return copy.deepcopy(CONTRACT)


def build(hidden: int = 8) -> nn.Module:
    """The same network MODEL_PY builds."""
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs within the bounds and their labels (a linear rule in unit space)."""
    rng = np.random.default_rng(seed)
    u = rng.random((n, 4))
    y = (u[:, 0] + u[:, 2] - u[:, 1] > 0.5).astype(np.int64)
    x = np.array(LOWER) + u * (np.array(UPPER) - np.array(LOWER))
    return x.astype(np.float32), y


def train_network(x: np.ndarray, y: np.ndarray) -> nn.Module:
    """Fit the MLP on standardized inputs (a second on a CPU)."""
    torch.manual_seed(0)
    net = build()
    pre = CONTRACT["preprocessing"]
    xs = (torch.from_numpy(x) - torch.tensor(pre["mean"])) / torch.tensor(pre["std"])
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    target = torch.from_numpy(y)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xs), target).backward()
        opt.step()
    return net.eval()


def write_package(directory: Path, *, contract: dict[str, Any] | None = None, n: int = 200) -> Path:
    """Write a complete, valid package (unsigned) to ``directory`` and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    (directory / "model.py").write_text(MODEL_PY)
    x_train, y_train = make_data(400, seed=1)
    net = train_network(x_train, y_train)
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"))
    for name, seed in (("validation", 2), ("test", 3)):
        x, y = make_data(n, seed)
        save_file(
            {"x": torch.from_numpy(x), "y": torch.from_numpy(y)},
            str(directory / "data" / f"{name}.safetensors"),
        )
    doc = contract if contract is not None else contract_doc()
    (directory / "ztml-model.json").write_text(json.dumps(doc, indent=2))
    return directory
