"""Feature-squeezing detection of PGD inputs, beside a confidence baseline in the same run.

For the standard network (``defense="none"``) and the PGD-trained one (``"pgd"``):

* thresholds calibrated on the clean validation split at 5% false positives, for
  feature squeezing with the default squeezers (bit depth 3 and 9/10/14-level
  quantization, chosen on the validation split), with the previous default (bit depth 3
  and 10/12 levels), with the paper's setting (bit depth 1 + median 2x2 + median 3x3)
  and for the baseline, a max-softmax-confidence threshold (flag when the top
  probability is low);
* on the test split: the false-positive rate on clean inputs and the detection rate on
  PGD-20 inputs (L-inf, eps 0.05/0.1/0.2/0.3, one random start, CE loss) — over all
  attacked inputs, and in brackets over the successful ones (prediction changed);
* the ratio of squeezing to baseline detection rates. Target: >= 90% at eps 0.2 with a
  clean test FPR of about 5%.

Latency: ``FeatureSqueezer.scores()`` per call (batch 1 and 32; the input and every
squeezed copy in one batched forward pass) against a bare forward pass of the same batch
and against the same scores computed with one forward pass per squeezer, median of
repeated interleaved calls.

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
PREVIOUS_DEFAULT = ("bits-3", "levels-10", "levels-12")


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


def squeezing_detector(
    model: Any, x_val: np.ndarray, names: tuple[str, ...] | None, label: str
) -> Detector:
    squeezers = [squeezer_from_name(n) for n in names] if names else None
    threshold = calibrate_threshold(model, x_val, fpr=FPR, squeezers=squeezers)
    detector = FeatureSqueezer(model, threshold=threshold, squeezers=squeezers)
    return Detector(f"squeezing ({label})", threshold, detector.flags)


def per_squeezer_scores(model: Any, squeezer: FeatureSqueezer, x: np.ndarray) -> np.ndarray:
    """The same scores with one forward pass per squeezer (the unbatched reference)."""
    with torch.no_grad():
        tensor = torch.from_numpy(np.array(x, dtype=np.float32))
        clean = torch.softmax(model(tensor), dim=1)
        distances = [
            (clean - torch.softmax(model(squeeze(tensor)), dim=1)).abs().sum(dim=1).numpy()
            for squeeze in squeezer.squeezers
        ]
    return np.max(np.stack(distances), axis=0)


def rate(flags: np.ndarray, mask: np.ndarray | None = None) -> float:
    chosen = flags if mask is None else flags[mask]
    return float(chosen.mean()) if chosen.size else float("nan")


def fmt(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.1f}%"


def interleaved_medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds per call of each function, called in turn (fair on a busy box)."""
    for _ in range(3):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


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

        bare, unbatched, scored = interleaved_medians(
            [
                forward,
                lambda xb=xb: per_squeezer_scores(model, squeezer, xb),
                lambda xb=xb: squeezer.scores(xb),
            ],
            repeats,
        )
        rows.append(
            (
                str(batch),
                f"{bare * 1e6:.0f} µs",
                f"{unbatched * 1e6:.0f} µs",
                f"{scored * 1e6:.0f} µs",
                f"{scored / bare:.1f}x",
                f"{scored / unbatched:.2f}x",
            )
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
    for column in (
        "model",
        "batch",
        "bare forward",
        "one pass per squeezer",
        "scores() (one batched pass)",
        "ratio to bare",
        "ratio to per-squeezer",
    ):
        latency.add_column(column, justify="right")
    verdicts: list[str] = []
    notes = [
        "squeezing (default): "
        + "+".join(s.name for s in FeatureSqueezer(torch.nn.Identity(), threshold=1).squeezers),
        "squeezing (previous default): " + "+".join(PREVIOUS_DEFAULT),
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
                squeezing_detector(model, splits.x_val, None, "default"),
                squeezing_detector(model, splits.x_val, PREVIOUS_DEFAULT, "previous default"),
                squeezing_detector(model, splits.x_val, PAPER_SETTING, "paper"),
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
            clean_fpr: dict[str, float] = {}
            for detector in detectors:
                row = [label, detector.name, f"{detector.threshold:.4f}"]
                clean_fpr[detector.name] = rate(detector.flags(x_test))
                row.append(fmt(clean_fpr[detector.name]))
                rates[detector.name] = {}
                for eps, (x_adv, fooled) in attacked.items():
                    flags = detector.flags(x_adv)
                    rates[detector.name][eps] = rate(flags)
                    row.append(f"{fmt(rate(flags))} [{fmt(rate(flags, fooled))}]")
                detection.add_row(*row)
            default, baseline = detectors[0].name, detectors[-1].name
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
            hit, fpr = rates[default][TARGET_EPS], clean_fpr[default]
            verdicts.append(
                f"{defense}: default squeezing flags {hit:.1%} of PGD eps {TARGET_EPS} test "
                f"inputs ({'meets' if hit >= TARGET_RATE else 'misses'} the {TARGET_RATE:.0%} "
                f"target) at a clean test FPR of {fpr:.1%} ({'within' if fpr <= FPR else 'above'}"
                f" {FPR:.0%}; the threshold allows {FPR:.0%} on validation)"
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
