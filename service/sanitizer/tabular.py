"""Adversarial-input detection for tabular models: Mahalanobis distance and noise instability.

Two components, each in UNIT space, are combined by :mod:`service.sanitizer.calibration`:

* the squared Mahalanobis distance of an input to the mean of the clean inputs the model
  assigns to the same class (the class it predicts for the input), under the clean
  inputs' pooled within-class covariance (Lee et al., NeurIPS 2018, on the inputs rather
  than on hidden features). Clean rows of a tabular data set lie near a low-dimensional,
  strongly correlated manifold (in the breast-cancer data radius, perimeter and area move
  together); a PGD perturbation moves every feature by up to eps on its own, breaking
  those correlations, and moves the input into another class's region while it still
  looks like its original class;
* prediction instability: the mean L1 change of the softmax over a few copies of the
  input with small uniform noise. PGD that stops at the first misclassified iterate
  leaves the input just past the decision boundary, where noise flips the prediction.

Why both: on scikit-learn's breast-cancer data (min-max unit features, a 30-32-16-2 MLP,
PGD-20 L-inf with eps a fraction of each feature's range, one random start, stopping at
the first misclassified iterate), thresholds at 5% false positives on the validation
split, mean of 5 seeds (``python -m benchmarks.tabular_detector_bench``), the share of
successful PGD test inputs flagged:

==========================  ===========  ========  ========  ========  ========
detector                    clean test   eps 0.02  eps 0.05  eps 0.1   eps 0.2
==========================  ===========  ========  ========  ========  ========
Mahalanobis, predicted      4.9%         4.1%      13.6%     91.1%     100%
noise instability           3.9%         87.9%     89.4%     71.8%     38.3%
both (max of the two, each  5.6%         74.9%     82.3%     80.8%     97.3%
divided by its threshold)
==========================  ===========  ========  ========  ========  ========

Each alone misses one regime: small perturbations stay within the clean covariance's
spread, large ones overshoot the boundary and are stable under noise. Together the worst
case is 75%. The distance to the nearest class mean (rather than the predicted one), with
an in-sample threshold, flags 16% of clean test inputs at a nominal 5%. Feature squeezing
has no natural analogue for tabular features (no pixels to quantize or smooth).

The parameters (class means and covariance) are computed deterministically from the
calibration inputs and the network's predictions on them, so they can be recomputed and
compared. The Mahalanobis threshold is chosen on leave-one-out scores (each calibration
input scored against the means and covariance of the other inputs, exactly, by a
rank-one downdate): an in-sample distance is biased low, and a threshold on in-sample
distances flagged 16% of new clean inputs at a nominal 5% (table above, 114 validation
rows, 30 features). Above :data:`MAX_FULL_PARAMETERS` stored numbers the covariance is
diagonal.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.sanitizer.errors import CalibrationError

if TYPE_CHECKING:
    from torch import nn

#: Added to the covariance's diagonal (unit space, so a standard deviation of 1% of a
#: feature's range): keeps constant or collinear features from making it singular.
COVARIANCE_FLOOR = 1e-4
#: The most numbers (means + covariance) stored with a full covariance (about 50 KB of
#: JSON); wider inputs use a diagonal covariance.
MAX_FULL_PARAMETERS = 2500

FloatArray = npt.NDArray[np.float64]


def predict(unit_network: nn.Module, u: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Return the softmax of the network on unit inputs (N, d), batched, without grad."""
    import torch

    with torch.inference_mode():
        parts = [
            torch.softmax(unit_network(torch.from_numpy(u[i : i + 4096])).float(), dim=1)
            for i in range(0, u.shape[0], 4096)
        ]
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0), dtype=np.float32)


def fit(
    u: npt.NDArray[np.float32], predicted: npt.NDArray[np.int64], n_classes: int
) -> tuple[dict[str, Any], FloatArray]:
    """Fit class means and the pooled covariance; return them and leave-one-out scores.

    Args:
        u: Clean unit inputs (n, d).
        predicted: The network's class for each (n,).
        n_classes: The number of classes.

    Returns:
        The parameters (``covariance``: ``"full"`` or ``"diagonal"``, ``means``: one list
        per class or None for a class no input is predicted as, ``matrix``: the covariance,
        a d x d list or a d list) and the leave-one-out score of every input (inf for the
        only input of its class).

    Raises:
        CalibrationError: If there are no more inputs than classes.
    """
    x = np.asarray(u, dtype=np.float64)
    n, d = x.shape
    if n <= n_classes + 1:
        raise CalibrationError(
            f"{n} inputs cannot fit a covariance for {n_classes} classes; use more validation data"
        )
    full = d * d + n_classes * d <= MAX_FULL_PARAMETERS
    counts = np.bincount(predicted, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, d))
    np.add.at(sums, predicted, x)
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    r = x - means[predicted]
    dof = n - n_classes
    scatter = r.T @ r if full else (r * r).sum(axis=0)
    # Leave-one-out: removing x_i from its class c (n_c inputs) moves the class mean and
    # downdates the scatter by a * r r^T, a = n_c / (n_c - 1); x_i - mean' = a * r. With
    # M = scatter + floor * (dof - 1) * I the left-out covariance is (M - a r r^T)/(dof - 1)
    # and Sherman-Morrison gives the distance a^2 q / (1 - a q) * (dof - 1), q = r M^-1 r.
    n_c = counts[predicted]
    a = np.divide(n_c, n_c - 1.0, out=np.full(n, np.inf), where=n_c > 1)
    if full:
        m = scatter + COVARIANCE_FLOOR * (dof - 1) * np.eye(d)
        q = np.einsum("ij,ij->i", r, np.linalg.solve(m, r.T).T)
        with np.errstate(divide="ignore", invalid="ignore"):
            loo = a * a * q / (1.0 - a * q) * (dof - 1)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            left = scatter[None, :] - a[:, None] * r * r + COVARIANCE_FLOOR * (dof - 1)
            loo = (a * a)[:, None] * r * r / left
            loo = loo.sum(axis=1) * (dof - 1)
    loo = np.where(np.isfinite(a) & np.isfinite(loo) & (loo >= 0), loo, np.inf)
    covariance = scatter / dof + (COVARIANCE_FLOOR * np.eye(d) if full else COVARIANCE_FLOOR)
    parameters: dict[str, Any] = {
        "covariance": "full" if full else "diagonal",
        "means": [row.tolist() if c > 0 else None for row, c in zip(means, counts, strict=True)],
        "matrix": covariance.tolist(),
    }
    return parameters, loo


class MahalanobisScorer:
    """Scores unit inputs by their Mahalanobis distance to their predicted class's mean.

    Args:
        parameters: What :func:`fit` returned.
        n_features: d.
        n_classes: The number of classes.

    Raises:
        CalibrationError: If the parameters are malformed or do not match d or the classes.
    """

    def __init__(self, parameters: dict[str, Any], n_features: int, n_classes: int) -> None:
        try:
            kind = parameters["covariance"]
            means = parameters["means"]
            matrix = np.asarray(parameters["matrix"], dtype=np.float64)
            if kind not in ("full", "diagonal") or len(means) != n_classes:
                raise ValueError("covariance kind or number of class means")
            present = np.array([m is not None for m in means], dtype=bool)
            stacked = np.array(
                [m if m is not None else [0.0] * n_features for m in means], dtype=np.float64
            )
            expected = (n_features, n_features) if kind == "full" else (n_features,)
            if stacked.shape != (n_classes, n_features) or matrix.shape != expected:
                raise ValueError(f"shapes {stacked.shape} and {matrix.shape}")
            if not (np.isfinite(stacked).all() and np.isfinite(matrix).all()):
                raise ValueError("values are not finite")
            self.precision = np.linalg.inv(matrix) if kind == "full" else 1.0 / matrix
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as err:
            raise CalibrationError(
                f"calibration.parameters: not Mahalanobis parameters for {n_features} features "
                f"and {n_classes} classes ({err}); recalibrate the model"
            ) from err
        self.kind = kind
        self.means = stacked
        self.present = present

    def scores(self, u: npt.NDArray[np.float32], predicted: npt.NDArray[np.int64]) -> FloatArray:
        """Return each input's squared distance to its predicted class's mean (N,).

        An input predicted as a class no calibration input was predicted as scores inf.
        """
        r = np.asarray(u, dtype=np.float64) - self.means[predicted]
        if self.kind == "full":
            d2 = np.einsum("ij,ij->i", r @ self.precision, r)
        else:
            d2 = (r * r * self.precision).sum(axis=1)
        return np.where(self.present[predicted], d2, math.inf)
