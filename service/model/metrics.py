"""The ``metrics.json`` written beside every artifact.

The file holds ``model`` (name, version, defense, format), ``training_data_digest``,
``code_revision``, ``hyperparameters``, ``evaluation`` (clean and robust accuracy) and
``training_seconds``, and also ``artifact`` (digest, format and size of
``model.safetensors``), so a metrics file can be checked against the artifact it claims
to describe before it is registered in the provenance ledger.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from service.digests import DIGEST_FORM, DIGEST_RE
from service.model.errors import MetricsError
from service.toolchain.paths import PROJECT_ROOT

MODEL_NAME = "digits-mlp"
#: The robust entry the deploy gate and the reports read: per example, the worst case of
#: PGD and AutoAttack (``service.model.evaluate``).
GATE_ATTACK = "worst-case"
ARTIFACT_FORMAT = "safetensors"
TOP_LEVEL = (
    "model",
    "artifact",
    "training_data_digest",
    "code_revision",
    "hyperparameters",
    "evaluation",
    "training_seconds",
)


def code_revision() -> str:
    """Return the git commit of the project checkout, or ``"unknown"``."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    rev = proc.stdout.strip()
    return rev if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", rev) else "unknown"


def build_metrics(
    *,
    version: str,
    defense: str,
    artifact_digest: str,
    artifact_size: int,
    training_data_digest: str,
    hyperparameters: dict[str, Any],
    evaluation: dict[str, Any],
    training_seconds: float,
    revision: str | None = None,
) -> dict[str, Any]:
    """Assemble a metrics document and validate it.

    Returns:
        The metrics dict, ready for :func:`write_metrics`.

    Raises:
        MetricsError: If a field is malformed.
    """
    metrics = {
        "model": {
            "name": MODEL_NAME,
            "version": version,
            "defense": defense,
            "format": ARTIFACT_FORMAT,
        },
        "artifact": {"digest": artifact_digest, "format": ARTIFACT_FORMAT, "size": artifact_size},
        "training_data_digest": training_data_digest,
        "code_revision": revision if revision is not None else code_revision(),
        "hyperparameters": hyperparameters,
        "evaluation": evaluation,
        "training_seconds": round(float(training_seconds), 3),
    }
    validate_metrics(metrics)
    return metrics


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise MetricsError(f"metrics file is malformed: {what}")


def validate_metrics(metrics: Any) -> None:
    """Check a metrics document's structure; return nothing or raise.

    Raises:
        MetricsError: Naming the first field that is missing or malformed.
    """
    _require(isinstance(metrics, dict), "top level must be an object")
    for key in TOP_LEVEL:
        _require(key in metrics, f"missing {key!r}")
    model = metrics["model"]
    _require(isinstance(model, dict), "'model' must be an object")
    _require(model.get("name") == MODEL_NAME, f"model.name must be {MODEL_NAME!r}")
    _require(
        isinstance(model.get("version"), str) and bool(model["version"]),
        "model.version must be a non-empty string",
    )
    _require(
        model.get("defense") in ("none", "pgd", "trades", "distill"),
        "model.defense must be none|pgd|trades|distill",
    )
    _require(model.get("format") == ARTIFACT_FORMAT, "model.format must be 'safetensors'")
    artifact = metrics["artifact"]
    _require(isinstance(artifact, dict), "'artifact' must be an object")
    _require(
        isinstance(artifact.get("digest"), str) and bool(DIGEST_RE.fullmatch(artifact["digest"])),
        f"artifact.digest must be {DIGEST_FORM}",
    )
    _require(
        isinstance(artifact.get("size"), int) and artifact["size"] > 0,
        "artifact.size must be a positive integer",
    )
    _require(
        isinstance(metrics["training_data_digest"], str)
        and bool(DIGEST_RE.fullmatch(metrics["training_data_digest"])),
        f"training_data_digest must be {DIGEST_FORM}",
    )
    _require(isinstance(metrics["code_revision"], str), "code_revision must be a string")
    _require(isinstance(metrics["hyperparameters"], dict), "hyperparameters must be an object")
    _require(isinstance(metrics["training_seconds"], int | float), "training_seconds: number")
    evaluation = metrics["evaluation"]
    _require(isinstance(evaluation, dict), "'evaluation' must be an object")
    _require(isinstance(evaluation.get("dataset"), str), "evaluation.dataset must be a string")
    clean = evaluation.get("clean_accuracy")
    _require(
        isinstance(clean, int | float) and 0 <= clean <= 1,
        "evaluation.clean_accuracy must be in [0, 1]",
    )
    robust = evaluation.get("robust")
    _require(isinstance(robust, list), "evaluation.robust must be a list")
    for item in robust:
        _require(
            isinstance(item, dict)
            and set(item) == {"attack", "norm", "epsilon", "steps", "restarts", "accuracy"},
            "each robust entry needs exactly attack, norm, epsilon, steps, restarts, accuracy",
        )
        _require(
            isinstance(item["attack"], str) and item["norm"] == "linf",
            "robust entries need a string attack and norm 'linf'",
        )
        _require(
            isinstance(item["steps"], int) and isinstance(item["restarts"], int),
            "robust steps and restarts must be integers",
        )
        _require(
            isinstance(item["epsilon"], int | float)
            and isinstance(item["accuracy"], int | float)
            and 0 <= item["accuracy"] <= 1,
            "robust epsilon must be a number and accuracy in [0, 1]",
        )


def write_metrics(metrics: dict[str, Any], path: Path | str) -> None:
    """Validate and write a metrics document as indented JSON.

    Raises:
        MetricsError: If it is malformed or cannot be written.
    """
    validate_metrics(metrics)
    try:
        Path(path).write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    except OSError as exc:
        raise MetricsError(f"cannot write metrics file {path}: {exc.strerror or exc}") from exc


def read_metrics(path: Path | str) -> dict[str, Any]:
    """Read and validate a metrics file.

    Raises:
        MetricsError: If it is missing, not JSON or malformed.
    """
    try:
        metrics = json.loads(Path(path).read_text())
    except OSError as exc:
        raise MetricsError(f"cannot read metrics file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise MetricsError(f"metrics file {path} is not valid JSON: {exc}") from exc
    validate_metrics(metrics)
    return metrics


def check_metrics_match_artifact(metrics: dict[str, Any], *, digest: str, size: int) -> None:
    """Check that a metrics document describes the artifact with this digest and size.

    Raises:
        MetricsError: If the recorded digest or size differs from the artifact's.
    """
    recorded = metrics["artifact"]["digest"]
    if recorded != digest:
        raise MetricsError(
            f"the metrics file describes artifact {recorded} but the artifact's sha256 is "
            f"{digest}: the artifact or the metrics file is not the right one (use the "
            "metrics.json written next to this model.safetensors)"
        )
    if metrics["artifact"]["size"] != size:
        raise MetricsError(
            f"the metrics file records an artifact of {metrics['artifact']['size']} bytes, "
            f"the artifact has {size}"
        )


def robust_entry(
    *, attack: str, epsilon: float, steps: int, restarts: int, accuracy: float
) -> dict[str, Any]:
    """Return one ``evaluation.robust`` entry: an L-infinity attack and its accuracy.

    Args:
        attack: The attack's name (``fgsm``, ``pgd-ce``, ``pgd-cw``, ``pgd``,
            ``autoattack``, ``worst-case``; see :mod:`service.model.evaluate`).
        epsilon: The perturbation budget.
        steps: Attack iterations.
        restarts: Random restarts.
        accuracy: The share of test examples still classified correctly, in [0, 1].
    """
    return {
        "attack": attack,
        "norm": "linf",
        "epsilon": epsilon,
        "steps": steps,
        "restarts": restarts,
        "accuracy": accuracy,
    }


def evaluation_document(
    *, dataset: str, clean_accuracy: float, robust: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return the ``evaluation`` of a metrics file and of the ledger's records.

    Args:
        dataset: What was evaluated on (``sklearn-digits/test``).
        clean_accuracy: The accuracy without attack, in [0, 1].
        robust: Entries made by :func:`robust_entry`.
    """
    return {"dataset": dataset, "clean_accuracy": clean_accuracy, "robust": robust}


def robust_accuracy(evaluation: dict[str, Any], *, attack: str, epsilon: float) -> float | None:
    """Return the accuracy of one attack at one epsilon from an evaluation, or None."""
    for item in evaluation.get("robust", []):
        if item.get("attack") == attack and abs(float(item.get("epsilon", -1)) - epsilon) < 1e-9:
            return float(item["accuracy"])
    return None
