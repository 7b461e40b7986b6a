"""Feature-squeezing detection of PGD inputs, beside a confidence baseline in the same run.

For the standard network (``defense="none"``) and the PGD-trained one (``"pgd"``):

* thresholds calibrated on the clean validation split at 5% false positives, for
  feature squeezing (default squeezers: bit depth 3 and 10/12-level quantization), for
  the paper's setting (bit depth 1 + median 2x2 + median 3x3) and for the baseline, a
  max-softmax-confidence threshold (flag when the top probability is low);
* on the test split: the false-positive rate on clean inputs and the detection rate on
  PGD-20 inputs (L-inf, eps 0.05/0.1/0.2/0.3, one random start, CE loss) — over all
  attacked inputs, and in brackets over the successful ones (prediction changed);
* the ratio of squeezing to baseline detection rates. Target: >= 90% at eps 0.2 with a
  clean test FPR of about 5%.

Latency: ``FeatureSqueezer.scores()`` per call (batch 1 and 32) against a bare forward
pass of the same batch, median of repeated calls.

    .venv/bin/python -m benchmarks.squeezer_bench           # fast profile, full test split
    .venv/bin/python -m benchmarks.squeezer_bench --quick   # tiny profile, 150 test inputs
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from service.model.attacks import pgd
from service.model.data import load_splits
from service.model.train import train
from service.sanitizer import FeatureSqueezer, calibrate_threshold, squeezer_from_name

EPSILONS = (0.05, 0.1, 0.2, 0.3)
FPR = 0.05
TARGET_EPS = 0.2
TARGET_RATE = 0.9
PAPER_SETTING = ("bits-1", "median-2x2", "median-3x3")


@dataclass
class Detector:
    name: str
    threshold: float
    flags: Callable[[np.ndarray], np.ndarray]


def confidence_detector(model: Any, x_val: np.ndarray) -> Detector:
    def confidence(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(np.array(x, dtype=np.float32))), 1)
        return probs.max(dim=1).values.numpy()

    ordered = np.sort(confidence(x_val))
    # flag when confidence < t; t = the floor(n * fpr)-th smallest clean confidence keeps
    # at most floor(n * fpr) clean inputs strictly below it.
    threshold = float(ordered[int(np.floor(len(ordered) * FPR))])
    return Detector("confidence baseline", threshold, lambda x: confidence(x) < threshold)


def squeezing_detector(model: Any, x_val: np.ndarray, names: tuple[str, ...] | None) -> Detector:
    squeezers = [squeezer_from_name(n) for n in names] if names else None
    threshold = calibrate_threshold(model, x_val, fpr=FPR, squeezers=squeezers)
    detector = FeatureSqueezer(model, threshold=threshold, squeezers=squeezers)
    label = "squeezing " + ("(paper)" if names else "(default)")
    return Detector(label, threshold, detector.flags)


def rate(flags: np.ndarray, mask: np.ndarray | None = None) -> float:
    chosen = flags if mask is None else flags[mask]
    return float(chosen.mean()) if chosen.size else float("nan")


def fmt(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.1f}%"


def interleaved_medians(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median seconds per call of two functions, called alternately (fair on a busy box)."""
    for _ in range(3):
        first()
        second()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, samples[0]), (second, samples[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(samples[0]), statistics.median(samples[1])


def latency_rows(
    model: Any, squeezer: FeatureSqueezer, x: np.ndarray, repeats: int
) -> list[tuple[str, ...]]:
    rows = []
    for batch in (1, 32):
        xb = x[:batch]
        tb = torch.from_numpy(xb)

        def forward(tb: torch.Tensor = tb) -> object:
            with torch.no_grad():
                return model(tb)

        bare, scored = interleaved_medians(forward, lambda xb=xb: squeezer.scores(xb), repeats)
        rows.append(
            (str(batch), f"{bare * 1e6:.0f} µs", f"{scored * 1e6:.0f} µs", f"{scored / bare:.1f}x")
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, 150 test inputs")
    args = parser.parse_args()
    profile = "tiny" if args.quick else "fast"
    splits = load_splits()
    n_test = 150 if args.quick else len(splits.x_test)
    x_test = splits.x_test[:n_test].copy()
    y_test = splits.y_test[:n_test].copy()
    console = Console(width=max(Console().width, 132))
    torch.set_num_threads(min(2, torch.get_num_threads()))

    detection = Table(
        title=(
            f"PGD-20 detection on the test split ({n_test} inputs, profile {profile}); "
            f"thresholds at {FPR:.0%} FPR on clean validation data; "
            "all attacked inputs [successful attacks only]"
        )
    )
    for column in ("model", "detector", "threshold", "clean test FPR"):
        detection.add_column(column)
    for eps in EPSILONS:
        detection.add_column(f"eps {eps}", justify="right")
    latency = Table(title="per-call latency (median)")
    for column in ("model", "batch", "bare forward", "scores()", "ratio"):
        latency.add_column(column, justify="right")
    verdicts: list[str] = []
    notes = [
        "squeezing (default): "
        + "+".join(s.name for s in FeatureSqueezer(torch.nn.Identity(), threshold=1).squeezers),
        "squeezing (paper): " + "+".join(PAPER_SETTING),
        "confidence baseline: flag when the top softmax probability is below the threshold",
    ]

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("models", total=2 * (1 + len(EPSILONS)))
        for defense in ("none", "pgd"):
            model = train(defense=defense, profile=profile).model.eval()
            progress.advance(task)
            with torch.no_grad():
                accuracy = float(
                    (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
                )
            label = defense
            notes.append(f"{defense}: clean test accuracy {accuracy:.1%}")
            detectors = [
                squeezing_detector(model, splits.x_val, None),
                squeezing_detector(model, splits.x_val, PAPER_SETTING),
                confidence_detector(model, splits.x_val),
            ]
            attacked: dict[float, tuple[np.ndarray, np.ndarray]] = {}
            for eps in EPSILONS:
                gen = torch.Generator().manual_seed(0)
                x_adv = pgd(
                    model,
                    torch.from_numpy(x_test),
                    torch.from_numpy(y_test),
                    eps=eps,
                    steps=20,
                    generator=gen,
                ).numpy()
                with torch.no_grad():
                    fooled = model(torch.from_numpy(x_adv)).argmax(1).numpy() != y_test
                attacked[eps] = (x_adv, fooled)
                progress.advance(task)
            rates: dict[str, dict[float, float]] = {}
            for detector in detectors:
                row = [label, detector.name, f"{detector.threshold:.4f}"]
                row.append(fmt(rate(detector.flags(x_test))))
                rates[detector.name] = {}
                for eps, (x_adv, fooled) in attacked.items():
                    flags = detector.flags(x_adv)
                    rates[detector.name][eps] = rate(flags)
                    row.append(f"{fmt(rate(flags))} [{fmt(rate(flags, fooled))}]")
                detection.add_row(*row)
            default, baseline = detectors[0].name, detectors[2].name
            ratio_row = [label, "ratio default/baseline", "", ""]
            for eps in EPSILONS:
                base = rates[baseline][eps]
                ratio_row.append(f"{rates[default][eps] / base:.2f}x" if base else "inf")
            detection.add_row(*ratio_row, end_section=True)
            fooled_share = ", ".join(
                f"eps {eps}: {fooled.mean():.0%}" for eps, (_, fooled) in attacked.items()
            )
            detection.caption = (
                detection.caption or ""
            ) + f"{defense}: PGD success {fooled_share}. "
            hit = rates[default][TARGET_EPS]
            verdicts.append(
                f"{defense}: squeezing flags {hit:.1%} of PGD eps {TARGET_EPS} inputs "
                f"({'meets' if hit >= TARGET_RATE else 'misses'} the {TARGET_RATE:.0%} target)"
            )

            squeezer = FeatureSqueezer(model, threshold=detectors[0].threshold)
            for row in latency_rows(model, squeezer, x_test, 50 if args.quick else 200):
                latency.add_row(defense, *row)

    console.print(detection)
    for line in notes:
        console.print(f"  {line}")
    console.print(latency)
    for line in verdicts:
        console.print(line)


if __name__ == "__main__":
    main()
