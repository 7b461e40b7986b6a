"""Robustness benchmark: every defense trained with the full profile, attacked with PGD.

For each defense (standard training, PGD adversarial training, TRADES, defensive
distillation) it trains on the digits train split, evaluates on the test split (FGSM, PGD
with 100 steps and 10 restarts on cross-entropy and on the CW logit margin, torchattacks'
AutoAttack, and the worst case of all per example), and prints a table with the standard
model, trained in the same run, as the baseline: each robust accuracy is followed by its
ratio to the standard model's. It writes report.md and robustness.png, and the artifacts
with their metrics.json, into --out (default: a new temporary directory).

Run: ``.venv/bin/python -m benchmarks.robustness [--quick] [--out DIR]``
(``--quick`` uses the tiny profile: seconds per model, no accuracy promise).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from service.model.artifact import load_model
from service.model.config import DEFENSES
from service.model.pipeline import build_model
from service.model.report import attack_table, findings, robustness_table, write_report


def _latency_ms(path: Path, repeats: int = 2000) -> float:
    """Median single-example inference time of a reloaded artifact, in milliseconds."""
    import torch

    model = load_model(path)
    x = torch.rand(1, 64)
    times = []
    with torch.inference_mode():
        for _ in range(100):
            model(x)
        for _ in range(repeats):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny profile (smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    args = parser.parse_args()
    profile = "tiny" if args.quick else "full"
    out = args.out or Path(tempfile.mkdtemp(prefix="ztml-robustness-"))
    console = Console()
    console.print(f"profile {profile}, output {out}, load average {os.getloadavg()[0]:.1f}")
    results = []
    timing = Table(title="Training s (wall, CPU) and median 1-example inference ms")
    for column in ("model", "wall s", "cpu s", "× std", "infer ms"):
        timing.add_column(column, justify="right" if column != "model" else "left")
    base_wall = None
    for defense in DEFENSES:
        started = time.perf_counter()
        built = build_model(defense, profile, out_dir=out / defense)
        wall = built.metrics["training_seconds"]
        base_wall = base_wall or wall
        results.append(built.metrics)
        latency = _latency_ms(built.artifact_path)
        timing.add_row(
            defense,
            f"{wall:.1f}",
            f"{built.cpu_seconds:.1f}",
            f"×{wall / base_wall:.2f}",
            f"{latency:.3f}",
        )
        console.print(
            f"{defense}: trained in {wall:.1f} s (cpu {built.cpu_seconds:.1f} s), "
            f"train+eval {time.perf_counter() - started:.1f} s"
        )
    console.print(robustness_table(results, baseline="none"))
    console.print(attack_table(results))
    console.print(timing)
    for line in findings(results):
        console.print(f"- {line}")
    md, png = write_report(results, out)
    console.print(f"report: {md}\nplot: {png}")


if __name__ == "__main__":
    main()
