"""A BentoML service as its author wrote it, protected by ztml with one added decorator.

Apart from the ``protect`` import and the decorator line, nothing here knows of ztml:
the class loads its own model from the model directory and does its own pre- and
post-processing.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import torch
from safetensors.torch import load_file
from torch import nn

from service.app.protect import protect

MODEL_DIR = Path(os.environ.get("CLASSIFIER_MODEL_DIR", "/srv/models/digits"))


def _mlp(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """A ReLU MLP with the linear layers the weights file holds, in their order."""
    names = sorted({k.rsplit(".", 1)[0] for k in state}, key=lambda n: int(n.rsplit(".", 1)[1]))
    layers: list[nn.Module] = []
    for name in names:
        out_features, in_features = state[f"{name}.weight"].shape
        linear = nn.Linear(in_features, out_features)
        linear.load_state_dict({"weight": state[f"{name}.weight"], "bias": state[f"{name}.bias"]})
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


@protect(model_dir=MODEL_DIR)  # the one change
@bentoml.service
class Classifier:
    """Classifies 8x8 digit images given as 64 intensities in [0, 1]."""

    def __init__(self) -> None:
        self.net = _mlp(load_file(str(MODEL_DIR / "model.safetensors")))

    @bentoml.api
    def predict(self, instances: list[list[float]]) -> list[int]:
        """Return the most likely digit of each image."""
        x = torch.tensor(instances, dtype=torch.float32).clamp(0.0, 1.0)  # preprocessing
        with torch.no_grad():
            return self.net(x).argmax(dim=1).tolist()  # postprocessing: labels only
