"""Read the metrics JSON written by ``ztml model train`` (see service/model/metrics.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.ledger.errors import MetricsError, RecordSchemaError
from service.ledger.schema import check_digest, check_evaluation, check_object, check_str


@dataclass(frozen=True)
class Metrics:
    """What a registration takes from a metrics file."""

    name: str | None
    version: str | None
    format: str | None
    training_data_digest: str
    code_revision: str
    hyperparameters: dict[str, Any]
    evaluation: dict[str, Any]
    artifact_digest: str | None = None


def _read_json(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetricsError(
            f"Metrics file {path} does not exist. Pass the metrics.json written next to the "
            "artifact by `ztml model train`."
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise MetricsError(f"Cannot read metrics file {path}: {err}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise MetricsError(
            f"Metrics file {path} is not valid JSON ({err.msg} at line {err.lineno} column "
            f"{err.colno}). Re-create it with `ztml model train` or fix the file."
        ) from None


def parse_metrics(data: Any, source: str = "metrics") -> Metrics:
    """Check a parsed metrics document and return the parts a registration needs.

    Raises:
        MetricsError: a field is missing or malformed.
    """
    try:
        check_object(data, source)
        for required in ("training_data_digest", "code_revision", "evaluation"):
            if required not in data:
                raise RecordSchemaError(f"{source}: missing {required}")
        model = check_object(data.get("model", {}), f"{source}.model")
        name = model.get("name")
        version = model.get("version")
        fmt = model.get("format")
        for label, value in (("name", name), ("version", version), ("format", fmt)):
            if value is not None:
                check_str(value, f"{source}.model.{label}")
        artifact_digest = None
        artifact = data.get("artifact")
        if isinstance(artifact, dict) and "digest" in artifact:
            artifact_digest = check_digest(artifact["digest"], f"{source}.artifact.digest")
        elif "artifact_digest" in data:
            artifact_digest = check_digest(data["artifact_digest"], f"{source}.artifact_digest")
        hyperparameters = check_object(data.get("hyperparameters", {}), f"{source}.hyperparameters")
        check_evaluation(data["evaluation"], f"{source}.evaluation")
        return Metrics(
            name=name,
            version=None if version is None else str(version),
            format=fmt,
            training_data_digest=check_digest(
                data["training_data_digest"], f"{source}.training_data_digest"
            ),
            code_revision=check_str(data["code_revision"], f"{source}.code_revision"),
            hyperparameters=hyperparameters,
            evaluation=data["evaluation"],
            artifact_digest=artifact_digest,
        )
    except RecordSchemaError as err:
        raise MetricsError(
            f"Metrics are malformed: {err}. The expected shape is the metrics.json of "
            "`ztml model train`."
        ) from None


def load_metrics(path: Path) -> Metrics:
    """Read and check a metrics JSON file.

    Raises:
        MetricsError: missing, unreadable, not JSON or malformed.
    """
    return parse_metrics(_read_json(path), str(path))


def load_evaluation(path: Path) -> dict[str, Any]:
    """Read an evaluation: a metrics file's ``evaluation`` or a bare evaluation object.

    Raises:
        MetricsError: missing, unreadable, not JSON or malformed.
    """
    data = _read_json(path)
    evaluation = data.get("evaluation", data) if isinstance(data, dict) else data
    try:
        check_evaluation(evaluation, f"{path}: evaluation")
    except RecordSchemaError as err:
        raise MetricsError(f"Evaluation is malformed: {err}.") from None
    return dict(evaluation)
