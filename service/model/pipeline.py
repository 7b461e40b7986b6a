"""Train, evaluate and save a model: ``DIR/model.safetensors`` plus ``DIR/metrics.json``.

This is what ``ztml model train`` and the local stack's first run call::

    built = build_model("pgd", "fast", out_dir=ztml_home() / "models" / "pgd")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.model.config import config_for
from service.model.data import load_splits, training_data_digest
from service.model.metrics import build_metrics, write_metrics
from service.model.train import ProgressFn

ARTIFACT_NAME = "model.safetensors"
METRICS_NAME = "metrics.json"
DEFAULT_VERSION = "1.0.0"


@dataclass
class BuiltModel:
    """Where a trained model and its metrics were written, the metrics, training CPU time."""

    defense: str
    artifact_path: Path
    metrics_path: Path
    metrics: dict[str, Any]
    cpu_seconds: float


def default_version(defense: str, profile: str) -> str:
    """Return the default model version, e.g. ``1.0.0+pgd.fast``."""
    return f"{DEFAULT_VERSION}+{defense}.{profile}"


def build_model(
    defense: str,
    profile: str,
    *,
    out_dir: Path | str,
    version: str | None = None,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> BuiltModel:
    """Train a model with a defense, evaluate it on the test split and write both files.

    Args:
        defense: ``none``, ``pgd``, ``trades`` or ``distill``.
        profile: ``tiny``, ``fast`` or ``full``.
        out_dir: Directory receiving ``model.safetensors`` and ``metrics.json``.
        version: Model version; defaults to :func:`default_version`.
        progress: Optional ``progress(phase, done, total)`` callback (training epochs,
            then the ``evaluating`` phase).
        **overrides: TrainConfig fields to change.

    Returns:
        The paths written and the metrics.

    Raises:
        TrainingError: On an unknown defense, profile or setting.
        ArtifactError: If the artifact cannot be written.
        MetricsError: If the metrics cannot be written.
    """
    from service.model.artifact import save_model
    from service.model.evaluate import evaluate_model
    from service.model.train import train

    config = config_for(defense, profile, **overrides)
    version = version or default_version(defense, profile)
    splits = load_splits()
    trained = train(config=config, splits=splits, progress=progress)

    def eval_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("evaluating", done, total)

    evaluation = evaluate_model(trained.model, config.eval, progress=eval_progress)
    directory = Path(out_dir)
    artifact_path = directory / ARTIFACT_NAME
    digest = save_model(
        trained.model, artifact_path, metadata={"version": version, "defense": defense}
    )
    metrics = build_metrics(
        version=version,
        defense=defense,
        artifact_digest=digest,
        artifact_size=artifact_path.stat().st_size,
        training_data_digest=training_data_digest(splits),
        hyperparameters=config.hyperparameters(),
        evaluation=evaluation,
        training_seconds=trained.training_seconds,
    )
    metrics_path = directory / METRICS_NAME
    write_metrics(metrics, metrics_path)
    return BuiltModel(defense, artifact_path, metrics_path, metrics, trained.cpu_seconds)
