"""Read an evaluation for ``ztml ledger evaluate`` (a metrics JSON or a bare evaluation).

The whole metrics file of a registration is read and checked by
:func:`service.model.metrics.read_metrics`, on the one registration path
(:func:`service.model.register.register_model`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.ledger.errors import MetricsError, RecordSchemaError
from service.ledger.schema import check_evaluation


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
