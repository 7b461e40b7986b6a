"""The baseline of the service benchmarks: the same model behind a bare BentoML endpoint.

No authentication, monitoring, policy, sanitization, screening or audit: one JSON body in,
the predicted labels and probabilities out. ``ZTML_MODEL_PATH`` names the model, the
built-in digits artifact or a model package directory (opened as ztml opens it), and
``ZTML_WORKERS`` the worker count (the hardened service's variables). Instances are flat
rows of raw values, typed as a BentoML user types them (``list[list[float]]``, so
BentoML validates them); like the hardened service it runs the model's unit network (the
bounds' scaling, the contract's preprocessing, then the network) on one thread.

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

        from service.model.package import open_model

        torch.set_num_threads(1)
        self.served = open_model(os.environ["ZTML_MODEL_PATH"])
        self.model = self.served.unit_network.eval()
        self.n_features = self.served.contract.n_features

    @bentoml.api
    def predict(self, instances: list[list[float]]) -> dict[str, list[object]]:
        """Classify a batch of flat instances in raw units."""
        import numpy as np
        import torch

        x = np.asarray(instances, dtype=np.float64).reshape(len(instances), self.n_features)
        u = torch.from_numpy(self.served.to_unit(x))
        with torch.no_grad():
            probs = torch.softmax(self.model(u), dim=1)
        return {"labels": probs.argmax(dim=1).tolist(), "probabilities": probs.tolist()}
