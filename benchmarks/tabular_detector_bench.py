"""Tabular adversarial-input detectors on scikit-learn's breast-cancer data.

Run ``python -m benchmarks.tabular_detector_bench [--seeds N]``. The features are mapped
to the unit interval with the data set's per-feature min and max, split 60/20/20
(stratified, seeded), and a small MLP (30-32-16-2) is trained on the training split. PGD-20
(L-inf, eps a fraction of each feature's range, one random start) attacks the test split.
Each detector's threshold is set at 5% false positives on the validation split; the table
shows the share of clean test inputs and of PGD inputs (those the attack misclassified)
it flags.

Detectors:

* ``mahalanobis-predicted``: squared Mahalanobis distance to the mean of the predicted
  class, pooled covariance, leave-one-out threshold (what ztml uses);
* ``mahalanobis-in-sample``: the same with the threshold on in-sample distances;
* ``mahalanobis-nearest``: distance to the nearest class mean (leave-one-out not applied);
* ``noise-instability``: mean L1 change of the softmax over 16 copies with uniform noise
  of +-0.05 in unit space;
* ``mahalanobis-noise``: the detector ztml calibrates for tabular models
  (:func:`service.sanitizer.calibrate_detector`): the larger of the two, each divided by
  its own threshold, with one threshold on that.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from service.model.attacks import pgd
from service.model.contract import DIGITS_CONTRACT
from service.sanitizer import build_detector, calibrate_detector
from service.sanitizer.detector import threshold_for
from service.sanitizer.tabular import MahalanobisScorer, fit, predict

FPR = 0.05


def breast_cancer_unit(seed: int = 0) -> dict[str, np.ndarray]:
    """Return unit-space train/val/test splits of the breast-cancer data."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x = data.data.astype(np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    u = ((x - lo) / (hi - lo)).astype(np.float32)
    y = data.target.astype(np.int64)
    u_tr, u_rest, y_tr, y_rest = train_test_split(
        u, y, test_size=0.4, stratify=y, random_state=seed
    )
    u_va, u_te, y_va, y_te = train_test_split(
        u_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed
    )
    return {
        "x_train": u_tr,
        "y_train": y_tr,
        "x_val": u_va,
        "y_val": y_va,
        "x_test": u_te,
        "y_test": y_te,
    }


def train_mlp(x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = 300) -> nn.Module:
    """Train a 30-32-16-2 ReLU MLP with Adam, full batch."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    return model


def noise_scores(
    model: nn.Module, u: np.ndarray, copies: int = 16, scale: float = 0.05
) -> np.ndarray:
    rng = np.random.default_rng(0)
    p = predict(model, u)
    total = np.zeros(u.shape[0])
    for _ in range(copies):
        noisy = np.clip(u + rng.uniform(-scale, scale, u.shape), 0, 1).astype(np.float32)
        total += np.abs(predict(model, noisy) - p).sum(axis=1)
    return total / copies


def run(seed: int, eps_values: tuple[float, ...]) -> dict[str, dict[str, float]]:
    s = breast_cancer_unit(seed)
    model = train_mlp(s["x_train"], s["y_train"], seed)
    k = 2
    pred_val = predict(model, s["x_val"]).argmax(axis=1)
    params, loo = fit(s["x_val"], pred_val, k)
    scorer = MahalanobisScorer(params, 30, k)
    in_sample = scorer.scores(s["x_val"], pred_val)

    def nearest(u: np.ndarray) -> np.ndarray:
        return np.min([scorer.scores(u, np.full(len(u), c)) for c in range(k)], axis=0)

    detectors: dict[str, Any] = {
        "mahalanobis-predicted": (
            threshold_for(loo, FPR),
            lambda u: scorer.scores(u, predict(model, u).argmax(axis=1)),
        ),
        "mahalanobis-in-sample": (
            threshold_for(in_sample, FPR),
            lambda u: scorer.scores(u, predict(model, u).argmax(axis=1)),
        ),
        "mahalanobis-nearest": (threshold_for(nearest(s["x_val"]), FPR), nearest),
        "noise-instability": (
            threshold_for(noise_scores(model, s["x_val"]), FPR),
            lambda u: noise_scores(model, u),
        ),
    }
    contract = dataclasses.replace(
        DIGITS_CONTRACT,
        modality="tabular",
        shape=(30,),
        lower=np.zeros(30),
        upper=np.ones(30),
        image_layout=None,
        labels=("malignant", "benign"),
    )
    combined = build_detector(
        model, contract, calibrate_detector(model, contract, s["x_val"], fpr=FPR)
    )
    detectors["mahalanobis-noise"] = (combined.threshold, lambda u: combined.analyze(u).scores)
    acc = float((predict(model, s["x_test"]).argmax(axis=1) == s["y_test"]).mean())
    out: dict[str, dict[str, float]] = {"accuracy": {"clean": acc}}
    xt, yt = torch.from_numpy(s["x_test"]), torch.from_numpy(s["y_test"])
    advs = {}
    for eps in eps_values:
        adv = pgd(
            model, xt, yt, eps=eps, steps=20, generator=torch.Generator().manual_seed(seed)
        ).numpy()
        fooled = predict(model, adv).argmax(axis=1) != s["y_test"]
        advs[eps] = adv[fooled]
        out["accuracy"][f"pgd {eps}"] = float(1 - fooled.mean())
    for name, (threshold, score) in detectors.items():
        row = {"clean test": float((score(s["x_test"]) > threshold).mean())}
        for eps, adv in advs.items():
            row[f"pgd {eps}"] = float((score(adv) > threshold).mean()) if len(adv) else float("nan")
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the mean rates over seeds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    eps_values = (0.02, 0.05, 0.1, 0.2)
    runs = [run(seed, eps_values) for seed in range(args.seeds)]
    for name in runs[0]:
        cols = runs[0][name]
        text = "  ".join(f"{c} {np.nanmean([r[name][c] for r in runs]):6.3f}" for c in cols)
        print(f"{name:24s} {text}")


if __name__ == "__main__":
    main()
