"""The baseline of the service benchmark: the same model behind a bare BentoML endpoint.

No authentication, monitoring, policy, sanitization, screening or audit: one JSON body in,
the predicted labels and probabilities out. ``ZTML_MODEL_PATH`` names the artifact and
``ZTML_WORKERS`` the worker count (the hardened service's variables).

    bentoml serve benchmarks.bare_service:BareModelService --port 3001
"""

from __future__ import annotations

import os

import bentoml


@bentoml.service(name="bare-model", workers=int(os.environ.get("ZTML_WORKERS", "1")))
class BareModelService:
    """Serves the model with nothing around it."""

    def __init__(self) -> None:
        import torch

        from service.model.artifact import load_model

        torch.set_num_threads(1)
        self.model = load_model(os.environ["ZTML_MODEL_PATH"]).eval()

    @bentoml.api
    def predict(self, instances: list[list[float]]) -> dict[str, list[object]]:
        """Classify a batch of flattened 8x8 images."""
        import torch

        with torch.no_grad():
            probs = torch.softmax(self.model(torch.tensor(instances, dtype=torch.float32)), dim=1)
        return {"labels": probs.argmax(dim=1).tolist(), "probabilities": probs.tolist()}
