"""metrics.json: contract shape, and a metrics file must describe the artifact it is used with."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from service.model.errors import MetricsError
from service.model.metrics import (
    build_metrics,
    check_metrics_match_artifact,
    evaluation_document,
    read_metrics,
    robust_entry,
    validate_metrics,
    write_metrics,
)

DIGEST = "sha256:" + "a" * 64


def _metrics() -> dict[str, Any]:
    return build_metrics(
        version="1.0.0",
        defense="pgd",
        artifact_digest=DIGEST,
        artifact_size=1234,
        training_data_digest="sha256:" + "b" * 64,
        hyperparameters={"epochs": 1},
        evaluation=evaluation_document(
            dataset="sklearn-digits/test",
            clean_accuracy=0.97,
            robust=[
                robust_entry(
                    attack="worst-case", epsilon=0.1, steps=100, restarts=10, accuracy=0.85
                )
            ],
        ),
        training_seconds=1.5,
        revision="unknown",
    )


def test_metrics_round_trip_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_metrics(_metrics(), path)
    assert read_metrics(path) == _metrics()


def test_metrics_for_another_artifact_are_rejected() -> None:
    with pytest.raises(MetricsError, match="sha256:"):
        check_metrics_match_artifact(_metrics(), digest="sha256:" + "c" * 64, size=1234)


def test_metrics_with_the_artifact_digest_are_accepted() -> None:
    check_metrics_match_artifact(_metrics(), digest=DIGEST, size=1234)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("model", "name"), "resnet"),
        (("model", "defense"), "magic"),
        (("artifact", "digest"), "md5:abc"),
        (("training_data_digest",), "sha256:xyz"),
        (("evaluation", "clean_accuracy"), 1.5),
    ],
)
def test_malformed_metrics_are_rejected(path: tuple[str, ...], value: Any) -> None:
    metrics = copy.deepcopy(_metrics())
    target = metrics
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(MetricsError, match="malformed"):
        validate_metrics(metrics)


def test_metrics_file_that_is_not_json_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text("{not json")
    with pytest.raises(MetricsError, match="not valid JSON"):
        read_metrics(path)
