"""Robustness, detection and serving cost of each model ztml serves, beside their baselines.

Three models: the built-in digits demo model (the PGD-trained MLP ``ztml up`` trains) and
the two example packages, ``examples/digits_cnn`` (image) and ``examples/breast_cancer``
(tabular), trained by their own ``train.py`` and cached (see
:mod:`benchmarks.model_packages`). For each model, in one run:

1. accuracy on its test split, clean and under each attack of ztml's own evaluation
   (:func:`service.model.evaluate.evaluate_served`: FGSM, PGD-100 x 10 restarts on
   cross-entropy and on the CW margin, their worst case, AutoAttack, and the worst case
   of all), at each ε in unit space and always at the deploy gate's ε for the model's
   modality (its registration needs it); each robust accuracy beside the clean one (its
   baseline) and their ratio;
2. the perturbation detector of its modality (feature squeezing for images, the tabular
   detector otherwise), calibrated at 5% false positives on the validation split exactly
   as registration does: the share of the clean test split it flags, with the binomial
   95% margin of a 5% rate on that many inputs, beside the configured 5%; and the share it
   flags of PGD-100 inputs (cross-entropy, one random start) at each ε, of all attacked
   test inputs and of the successful ones only (correct before the attack, wrong after),
   each beside the clean test rate;
3. the hardened request path's cost: the model is signed, registered (its evaluation as
   evidence) and approved with the ``ztml`` command in a temporary ``ZTML_HOME`` and served
   by ``ztml up --detach --model DIR`` (the demo model by ``ztml up --detach``), one stack
   per model so a model the deploy gate refuses is reported and the others still run;
   beside it ``benchmarks.bare_service`` serves the same model on bare BentoML over the
   same TLS certificate. Requests carry one instance, cycling through 50 rows of the
   model's test split (those the detector flags are served and queued for review, as at
   risk tier low); latency at concurrency 1, throughput at ``--concurrency``, in two
   interleaved rounds (see :mod:`benchmarks.service_bench`, whose client this reuses).

    uv run python -m benchmarks.models_bench            # ε 0.05, 0.1, 0.2; 2,000 requests
    uv run python -m benchmarks.models_bench --quick    # the gate's ε only; 400 requests
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from benchmarks import model_packages, service_bench
from benchmarks.service_bench import percentile, start_bare, tokens

if TYPE_CHECKING:
    from service.model.package import ServedModel
    from service.sanitizer.calibration import Detector

console = Console()
#: (label, example directory or None for the demo model), in the order reported.
MODELS: tuple[tuple[str, str | None], ...] = (
    ("digits demo (MLP)", None),
    ("digits-cnn", "digits_cnn"),
    ("breast-cancer", "breast_cancer"),
)
FULL_EPSILONS = (0.05, 0.1, 0.2)
#: ``--quick``: only the deploy gate's ε of each model's modality (always evaluated).
QUICK_EPSILONS: tuple[float, ...] = ()
DETECTOR_FPR = 0.05
DETECTION_STEPS = 100
REQUEST_ROWS = 50
#: Limits sized to one benchmark client (per-subject limits stay the policy's).
SERVICE_ENV = {
    "ZTML_RATE_PER_MINUTE": "1000000",
    "ZTML_RATE_BURST": "100000",
    "ZTML_FLOOD_GLOBAL_PER_MINUTE": "1000000",
}


@dataclass
class Detection:
    """What the calibrated detector flags: clean test inputs and PGD inputs per ε."""

    kind: str
    threshold: float
    validation_fpr: float
    validation_n: int
    clean_flagged: int
    clean_n: int
    #: ε -> (flagged, attacked, flagged among fooled, fooled).
    attacked: dict[float, tuple[int, int, int, int]] = field(default_factory=dict)


@dataclass
class Serving:
    """The hardened and bare runs of one model, or why it was not served."""

    route: str = ""
    latency: dict[str, list[float]] = field(default_factory=lambda: {"bare": [], "hardened": []})
    load: dict[str, list[tuple[int, float, int]]] = field(
        default_factory=lambda: {"bare": [], "hardened": []}
    )
    statuses: dict[int, int] = field(default_factory=dict)
    flagged_rows: int = 0
    refused: str | None = None


def margin(p: float, n: int) -> float:
    """The 95% normal-approximation margin of a binomial rate ``p`` on ``n`` trials."""
    return 1.96 * math.sqrt(p * (1 - p) / n) if n else float("nan")


def wilson(hits: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of ``hits`` successes in ``n`` trials (sound at 0 and n)."""
    z = 1.96
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def ratio(value: float, base: float) -> str:
    return f"×{value / base:.2f}" if base > 0 else "-"


def detect(served: ServedModel, epsilons: tuple[float, ...]) -> tuple[Detection, Detector]:
    """Calibrate the model's detector as registration does; measure it on test inputs.

    Returns:
        The figures, and the detector.
    """
    import torch

    from service.model.attacks import pgd
    from service.model.register import calibrate_at_registration
    from service.sanitizer.calibration import Calibration, build_detector

    calibration = Calibration.from_document(calibrate_at_registration(served, DETECTOR_FPR))
    detector = build_detector(served.unit_network, served.contract, calibration)
    x_raw, y_np = served.test()
    u = torch.from_numpy(served.to_unit(x_raw)).clamp_(0.0, 1.0)
    y = torch.from_numpy(y_np)
    clean = detector.analyze(u.numpy())
    correct = clean.probs.argmax(axis=1) == y_np
    result = Detection(
        kind=detector.kind,
        threshold=detector.threshold,
        validation_fpr=calibration.fpr_measured,
        validation_n=calibration.n,
        clean_flagged=int(clean.flagged.sum()),
        clean_n=len(y_np),
    )
    for eps in epsilons:
        generator = torch.Generator().manual_seed(7 + round(eps * 1000))
        adv = pgd(served.unit_network, u, y, eps=eps, steps=DETECTION_STEPS, generator=generator)
        seen = detector.analyze(adv.numpy())
        fooled = correct & (seen.probs.argmax(axis=1) != y_np)
        result.attacked[eps] = (
            int(seen.flagged.sum()),
            len(y_np),
            int(seen.flagged[fooled].sum()),
            int(fooled.sum()),
        )
    return result, detector


def accuracy_table(
    label: str, evaluation: dict[str, Any], n: int, seconds: float, gate_epsilon: float
) -> Table:
    """Clean and robust accuracy per attack and ε, each robust figure as ×clean."""
    from service.model.evaluate import ATTACKS

    clean = float(evaluation["clean_accuracy"])
    epsilons = sorted({float(e["epsilon"]) for e in evaluation["robust"]})
    found = {(e["attack"], float(e["epsilon"])): e for e in evaluation["robust"]}
    table = Table(
        title=f"{label}: accuracy on its test split (n={n}); robust accuracy (×clean)",
        caption=f"ztml's evaluation, PGD-100 x 10 restarts + AutoAttack, {seconds:.0f} s",
    )
    table.add_column("attack")
    for eps in epsilons:
        gate = " (gate)" if math.isclose(eps, gate_epsilon) else ""
        table.add_column(f"ε {eps:g}{gate}", justify="right")
    table.add_row("clean (baseline)", *[f"{clean:.3f}" for _ in epsilons])
    for attack in ATTACKS:
        cells = []
        for eps in epsilons:
            entry = found.get((attack, eps))
            acc = float(entry["accuracy"]) if entry else float("nan")
            cells.append(f"{acc:.3f} ({ratio(acc, clean)})" if entry else "-")
        table.add_row(attack, *cells)
    return table


def detection_table(label: str, d: Detection) -> Table:
    """The detector's flag rates, clean beside the configured rate, attacked beside clean."""
    fpr = d.clean_flagged / d.clean_n
    table = Table(
        title=(
            f"{label}: {d.kind} detector, calibrated at {DETECTOR_FPR:.0%} FPR on validation "
            f"(n={d.validation_n}: {d.validation_fpr:.3f} flagged, threshold {d.threshold:.4g})"
        ),
        caption=(
            f"PGD-{DETECTION_STEPS}: cross-entropy, one random start; all = every attacked "
            "test input, fooled = correct before, wrong after. Clean: ± is the 95% binomial "
            "margin of the configured rate on n inputs; attacked: 95% Wilson interval"
        ),
    )
    for column in ("test inputs", "n", "flagged", "baseline", "ratio"):
        table.add_column(column, justify="left" if column == "test inputs" else "right")
    table.add_row(
        "clean",
        str(d.clean_n),
        f"{fpr:.3f} ± {margin(DETECTOR_FPR, d.clean_n):.3f}",
        f"{DETECTOR_FPR:.3f} (configured)",
        ratio(fpr, DETECTOR_FPR),
    )
    for eps, (flagged, n, flagged_fooled, fooled) in d.attacked.items():
        for what, hits, total in (("all", flagged, n), ("fooled", flagged_fooled, fooled)):
            rate = hits / total if total else float("nan")
            low, high = wilson(hits, total) if total else (math.nan, math.nan)
            table.add_row(
                f"PGD ε {eps:g}, {what}",
                str(total),
                f"{rate:.3f} [{low:.2f}, {high:.2f}]" if total else "-",
                f"{fpr:.3f} (clean)",
                ratio(rate, fpr) if total else "-",
            )
    return table


def latency_table(label: str, s: Serving, total: int, concurrency: int) -> Table:
    """Hardened beside bare BentoML: p50, p99, throughput and non-200 responses."""
    table = Table(
        title=(
            f"{label}: POST {s.route or '/predict'}, 1 instance, both over TLS: latency at "
            f"concurrency 1 ({total // 2} requests), throughput at concurrency {concurrency} "
            f"({total}), 1 worker"
        ),
        caption=(
            f"{REQUEST_ROWS} test rows in turn, {s.flagged_rows} of them flagged by the "
            "detector (served and queued for review)"
        ),
    )
    for column in ("figure", "hardened", "bare BentoML", "added / ratio"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    if s.refused is not None:
        table.add_row("not served: ztml up refused it", "-", "-", "-")
        table.caption = f"ztml up: {s.refused}"
        return table
    for q, name in ((0.5, "p50 latency ms"), (0.99, "p99 latency ms")):
        h, b = percentile(s.latency["hardened"], q), percentile(s.latency["bare"], q)
        table.add_row(name, f"{h:.2f}", f"{b:.2f}", f"{h - b:+.2f} ms ({ratio(h, b)})")

    def rate(name: str) -> float:
        return sum(n for n, _, _ in s.load[name]) / sum(t for _, t, _ in s.load[name])

    h, b = rate("hardened"), rate("bare")
    table.add_row("throughput req/s", f"{h:.0f}", f"{b:.0f}", ratio(h, b))
    errors = {k: sum(e for _, _, e in v) for k, v in s.load.items()}
    table.add_row("non-200 responses", str(errors["hardened"]), str(errors["bare"]), "")
    if s.statuses:
        table.add_row("statuses", json.dumps(s.statuses), "", "")
    return table


def request_bodies(served: ServedModel, detector: Detector) -> tuple[list[bytes], int]:
    """One-instance bodies of the first test rows (raw, flat) and how many are flagged."""
    x_raw, _ = served.test()
    rows = x_raw[:REQUEST_ROWS].reshape(min(REQUEST_ROWS, len(x_raw)), -1)
    bodies = [json.dumps({"instances": [[float(v) for v in row]]}).encode() for row in rows]
    flagged = detector.analyze(served.to_unit(rows)).flagged
    return bodies, int(flagged.sum())


def serve_and_measure(
    *,
    home: Path,
    env: dict[str, str],
    package: Path | None,
    bare_path: Path,
    bodies: list[bytes],
    total: int,
    concurrency: int,
) -> Serving:
    """Bring up a stack serving the model, start the bare service, drive both, stop both."""
    from service.stack.processes import stop_group
    from service.stack.state import read_state

    result = Serving()
    up = ["up", "--detach", *(["--model", str(package)] if package else [])]
    started = model_packages.ztml(*up, env=env)
    if started.returncode != 0:
        output = started.stdout + started.stderr
        reason = [ln for ln in output.splitlines() if "refusing to start" in ln]
        text = (reason or [ln for ln in output.splitlines() if ln.strip()][-3:])[-1]
        result.refused = text.split("refusing to start:", 1)[-1].strip()
        model_packages.ztml("down", env=env)
        return result
    bare_pid = None
    try:
        state = read_state(home)
        assert state is not None, "ztml up recorded no stack"
        if package is None:
            hardened = f"{state.service_url}/predict"
        else:
            hardened = f"{state.model_url(state.models[0])}/predict"
        result.route = "/" + hardened.split("/", 3)[3]
        verify = state.caller_context()
        assert isinstance(verify, ssl.SSLContext)
        bare_pid, bare = start_bare(home, bare_path)
        auth = tokens(home, 500)
        servers = (("bare", bare, None), ("hardened", hardened, auth))
        service_bench.STATUSES.clear()
        result.latency, result.load = service_bench.interleaved_rounds(
            servers, body=bodies, total=total, concurrency=concurrency, verify=verify
        )
        result.statuses = dict(service_bench.STATUSES)
    finally:
        if bare_pid is not None:
            stop_group(bare_pid)
        model_packages.ztml("down", env=env)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="only the gate's ε of each model, 400 requests"
    )
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--model",
        action="append",
        choices=[label for label, _ in MODELS],
        help="only this model (repeatable; default all three)",
    )
    args = parser.parse_args(argv)
    epsilons = QUICK_EPSILONS if args.quick else FULL_EPSILONS
    total = args.requests or (400 if args.quick else 2000)
    began = time.perf_counter()
    console.print(f"load average at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    from dataclasses import replace

    from service.gate.requirements import load_requirements
    from service.model.config import EvalConfig
    from service.model.evaluate import evaluate_served
    from service.model.package import open_model
    from service.model.seeding import seed_everything
    from service.stack.provision import ensure_keys_and_issuer

    chosen = [(label, ex) for label, ex in MODELS if not args.model or label in args.model]
    sources: dict[str, Path] = {}
    for label, example in chosen:
        console.print(f"{label}: the cached model, trained if needed ...")
        sources[label] = (
            model_packages.example_package(example) if example else model_packages.demo_artifact()
        )

    scratch = Path(tempfile.mkdtemp(prefix="ztml-models-bench-"))
    scratch.chmod(0o711)  # a root `ztml up` runs its servers as an unprivileged user
    home = scratch / "home"
    env = {**os.environ, "ZTML_HOME": str(home), **SERVICE_ENV}
    os.environ["ZTML_HOME"] = str(home)
    ensure_keys_and_issuer(home)
    try:
        for label, example in chosen:
            served = open_model(sources[label])
            # The deploy gate's ε for the model's modality is always evaluated: its
            # registration needs that entry.
            gate = load_requirements().for_modality(served.contract.modality)
            model_epsilons = tuple(sorted({*epsilons, gate.epsilon}))
            seed_everything(0)
            started = time.perf_counter()
            evaluation = evaluate_served(served, replace(EvalConfig(), epsilons=model_epsilons))
            seconds = time.perf_counter() - started
            console.print(
                accuracy_table(label, evaluation, len(served.test()[1]), seconds, gate.epsilon)
            )
            detection, detector = detect(served, model_epsilons)
            console.print(detection_table(label, detection))
            bodies, flagged = request_bodies(served, detector)
            if example is None:
                package = None
                bare_path = model_packages.install_demo(sources[label], home) / "model.safetensors"
            else:
                package = model_packages.install_package(
                    sources[label],
                    into=scratch,
                    evaluation=evaluation,
                    digest=served.weights_digest,
                    env=env,
                )
                bare_path = package
            console.print(f"{label}: serving it hardened and bare ...")
            run = serve_and_measure(
                home=home,
                env=env,
                package=package,
                bare_path=bare_path,
                bodies=bodies,
                total=total,
                concurrency=args.concurrency,
            )
            run.flagged_rows = flagged
            console.print(latency_table(label, run, total, args.concurrency))
    finally:
        if os.environ.get("ZTML_BENCH_KEEP"):
            console.print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    console.print(
        f"wall time {time.perf_counter() - began:.0f} s; load average at end "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
