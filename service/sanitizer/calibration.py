"""Perturbation detectors for any served model, calibrated when the model is registered.

:func:`calibrate_detector` picks the detector by the contract's modality and sets its
threshold on clean validation inputs in UNIT space (N, d):

* ``"feature-squeezing"`` for images: the squeezers of :mod:`service.sanitizer.squeezers`
  (median smoothing reads each row as the contract's ``image_layout``), score = the
  largest L1 distance between the softmax on the input and on a squeezed copy;
* ``"mahalanobis-noise"`` for tabular inputs: see :mod:`service.sanitizer.tabular`.

The threshold rule is :func:`~service.sanitizer.detector.threshold_for`: at most
``floor(n * fpr)`` of the n calibration scores exceed it. ``fpr_measured`` is the share of
the calibration scores above the threshold (for the tabular detector these are the
leave-one-out scores the threshold was chosen on). ``data_digest`` is ``"sha256:"`` and
the hex SHA-256 of ``np.ascontiguousarray(x_val_unit, dtype=np.float32).tobytes()`` (the
row-major float32 bytes; the shape is ``(n, d)`` with n and d recorded beside it).

The :class:`Calibration` goes into the model's register record. :func:`verify_calibration`
recomputes it from the network and the same data and raises naming the first field that
differs, so a service can refuse to start with a calibration that is not what its model
and data give.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from service.sanitizer.detector import (
    FeatureSqueezer,
    _as_array,
    _distance_matrix,
    check_fpr,
    threshold_for,
)
from service.sanitizer.errors import CalibrationError
from service.sanitizer.squeezers import DEFAULT_SQUEEZER_NAMES, squeezer_from_name
from service.sanitizer.tabular import MahalanobisScorer, fit

if TYPE_CHECKING:
    from torch import nn

    from service.model.contract import ModelContract

SQUEEZING = "feature-squeezing"
TABULAR = "mahalanobis-noise"
DETECTORS = (SQUEEZING, TABULAR)
#: Noisy copies per input of the tabular detector's instability component, the noise's
#: half-width in unit space, and the seed of the fixed noise vectors.
NOISE_COPIES = 16
NOISE_SCALE = 0.05
NOISE_SEED = 0
#: A component scale is never below this (a component that is 0 on every clean input
#: would otherwise divide by zero).
MIN_SCALE = 1e-9
#: Relative tolerances of :func:`verify_calibration` for the threshold and for the
#: numbers in the parameters (linear algebra may differ in the last bits across hosts).
THRESHOLD_RTOL = 1e-5
PARAMETER_RTOL = 1e-6


@dataclass(frozen=True)
class DetectionResult:
    """A detector's results for a batch of unit inputs.

    Attributes:
        probs: Softmax of the model on the original inputs, (N, C): serve the prediction
            from it.
        scores: The detector's score per input, (N,); higher is more suspicious.
        flagged: ``scores > threshold``, (N,).
        per_component: Each component's score (squeezer names for feature squeezing;
            ``mahalanobis`` and ``noise`` for the tabular detector), (N,) each.
    """

    probs: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    flagged: npt.NDArray[np.bool_]
    per_component: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)


class Detector(Protocol):
    """A calibrated perturbation detector on unit inputs (N, d)."""

    @property
    def threshold(self) -> float:
        """Scores strictly above this flag an input."""
        ...

    @property
    def kind(self) -> str:
        """The detector's name (one of :data:`DETECTORS`)."""
        ...

    def analyze(self, u: object) -> DetectionResult:
        """Return probabilities, scores and flags for a batch of unit inputs."""
        ...


@dataclass(frozen=True)
class Calibration:
    """A detector's calibration, as recorded in the model's register record.

    Attributes:
        detector: The detector's name (one of :data:`DETECTORS`).
        parameters: What the detector needs besides the threshold (JSON values).
        threshold: Scores strictly above it flag an input.
        fpr_target: The false-positive rate asked for.
        fpr_measured: The share of the calibration inputs' scores above the threshold.
        n: The number of calibration inputs.
        data_digest: ``sha256:<hex>`` of the unit calibration inputs' float32 bytes.
    """

    detector: str
    parameters: dict[str, Any]
    threshold: float
    fpr_target: float
    fpr_measured: float
    n: int
    data_digest: str

    def document(self) -> dict[str, Any]:
        """Return the calibration as a JSON-ready dict (the register record's field)."""
        return {
            "detector": self.detector,
            "parameters": self.parameters,
            "threshold": self.threshold,
            "fpr_target": self.fpr_target,
            "fpr_measured": self.fpr_measured,
            "n": self.n,
            "data_digest": self.data_digest,
        }

    @classmethod
    def from_document(cls, doc: object) -> Calibration:
        """Read a calibration from its document.

        Args:
            doc: What :meth:`document` returned (e.g. read back from the ledger).

        Returns:
            The calibration.

        Raises:
            CalibrationError: Naming the field that is missing or of the wrong type.
        """
        if not isinstance(doc, dict):
            raise CalibrationError(f"calibration: expected an object, got {type(doc).__name__}")
        expected: dict[str, tuple[type, ...]] = {
            "detector": (str,),
            "parameters": (dict,),
            "threshold": (int, float),
            "fpr_target": (int, float),
            "fpr_measured": (int, float),
            "n": (int,),
            "data_digest": (str,),
        }
        for name, types in expected.items():
            value = doc.get(name)
            if isinstance(value, bool) or not isinstance(value, types):
                raise CalibrationError(
                    f"calibration.{name}: missing or of the wrong type ({value!r})"
                )
        if doc["detector"] not in DETECTORS:
            raise CalibrationError(
                f"calibration.detector: unknown detector {doc['detector']!r}; expected one "
                f"of {', '.join(DETECTORS)}"
            )
        if not str(doc["data_digest"]).startswith("sha256:"):
            raise CalibrationError("calibration.data_digest: must start with 'sha256:'")
        return cls(
            detector=doc["detector"],
            parameters=doc["parameters"],
            threshold=float(doc["threshold"]),
            fpr_target=float(doc["fpr_target"]),
            fpr_measured=float(doc["fpr_measured"]),
            n=int(doc["n"]),
            data_digest=doc["data_digest"],
        )


def data_digest(x_unit: object) -> str:
    """Return ``sha256:<hex>`` of the unit inputs' row-major float32 bytes."""
    array = np.ascontiguousarray(np.asarray(x_unit), dtype=np.float32)
    return "sha256:" + hashlib.sha256(array.tobytes()).hexdigest()


def _layout(contract: ModelContract) -> tuple[int, int, int]:
    if contract.image_layout is None:
        raise CalibrationError(
            f"contract {contract.name}: an image model needs input.image_layout for "
            "feature squeezing"
        )
    c, h, w = (int(n) for n in contract.image_layout)
    return c, h, w


def _softmax(unit_network: nn.Module, u: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import torch

    with torch.inference_mode():
        logits = unit_network(torch.from_numpy(u))
        return torch.softmax(logits.float(), dim=1).numpy()


class SqueezingDetector:
    """Feature squeezing on unit image inputs (see :class:`FeatureSqueezer`).

    Args:
        unit_network: Unit inputs (N, d) to logits, in eval mode.
        contract: The model's contract (its layout and width).
        calibration: A ``feature-squeezing`` calibration.

    Raises:
        CalibrationError: If the parameters name unknown squeezers or another layout.
    """

    kind = SQUEEZING

    def __init__(
        self, unit_network: nn.Module, contract: ModelContract, calibration: Calibration
    ) -> None:
        layout = _layout(contract)
        params = calibration.parameters
        if list(params.get("image_layout", [])) != list(layout):
            raise CalibrationError(
                f"calibration.parameters.image_layout: {params.get('image_layout')!r} is not "
                f"the contract's {list(layout)}; recalibrate the model"
            )
        try:
            squeezers = [squeezer_from_name(str(n), layout=layout) for n in params["squeezers"]]
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"calibration.parameters.squeezers: {err}") from err
        if not squeezers or not 0.0 <= calibration.threshold <= 2.0:
            raise CalibrationError(
                "calibration: feature squeezing needs squeezers and a threshold in [0, 2]"
            )
        self.squeezer = FeatureSqueezer(
            unit_network,
            threshold=calibration.threshold,
            squeezers=squeezers,
            n_features=contract.n_features,
        )

    @property
    def threshold(self) -> float:
        """Scores strictly above this flag an input."""
        return self.squeezer.threshold

    def analyze(self, u: object) -> DetectionResult:
        """Return probabilities, squeezing scores and flags (one forward pass)."""
        result = self.squeezer.analyze(u)
        return DetectionResult(result.probs, result.scores, result.flagged, result.per_squeezer)


def _noise(d: int, parameters: dict[str, Any]) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(int(parameters["seed"]))
    scale = float(parameters["scale"])
    return rng.uniform(-scale, scale, (int(parameters["copies"]), d)).astype(np.float32)


def _tabular_components(
    unit_network: nn.Module,
    u: npt.NDArray[np.float32],
    noise: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Return the softmax on ``u`` and the noise-instability score of every input.

    The inputs and their noisy copies (the same fixed noise vectors for every input, so an
    input's score does not depend on its batch) go through the network as one batch.
    """
    n, d = u.shape
    copies = np.clip(u[None, :, :] + noise[:, None, :], 0.0, 1.0)
    batch = np.concatenate([u[None], copies.astype(np.float32)]).reshape(-1, d)
    probs = _softmax(unit_network, np.ascontiguousarray(batch)).reshape(noise.shape[0] + 1, n, -1)
    change = np.abs(probs[1:].astype(np.float64) - probs[0]).sum(axis=2).mean(axis=0)
    return probs[0], change


class TabularDetector:
    """Mahalanobis distance to the predicted class plus instability under small noise.

    The score is ``max(mahalanobis / scale_m, noise / scale_n)``: each component divided
    by its own threshold at the target rate, so either can flag an input (see
    :mod:`service.sanitizer.tabular`).

    Args:
        unit_network: Unit inputs (N, d) to logits, in eval mode.
        contract: The model's contract.
        calibration: A ``mahalanobis-noise`` calibration.

    Raises:
        CalibrationError: If the parameters are malformed or do not fit the contract.
    """

    kind = TABULAR

    def __init__(
        self, unit_network: nn.Module, contract: ModelContract, calibration: Calibration
    ) -> None:
        params = calibration.parameters
        try:
            self.scorer = MahalanobisScorer(
                params["mahalanobis"], contract.n_features, contract.n_classes
            )
            self.noise = _noise(contract.n_features, params["noise"])
            self.scale_m = float(params["scales"]["mahalanobis"])
            self.scale_n = float(params["scales"]["noise"])
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(
                f"calibration.parameters: missing or malformed {err}; recalibrate the model"
            ) from err
        if not (self.scale_m >= MIN_SCALE and self.scale_n >= MIN_SCALE):
            raise CalibrationError("calibration.parameters.scales: must be positive")
        if not math.isfinite(calibration.threshold) or calibration.threshold < 0:
            raise CalibrationError("calibration.threshold: must be a finite number >= 0")
        self.unit_network = unit_network
        self.n_features = contract.n_features
        self._threshold = float(calibration.threshold)

    @property
    def threshold(self) -> float:
        """Scores strictly above this flag an input."""
        return self._threshold

    def analyze(self, u: object) -> DetectionResult:
        """Return probabilities, scores and flags for unit inputs (N, d)."""
        array = np.ascontiguousarray(_as_array(u, self.n_features))
        probs, noise = _tabular_components(self.unit_network, array, self.noise)
        mahalanobis = self.scorer.scores(array, probs.argmax(axis=1))
        scores = np.maximum(mahalanobis / self.scale_m, noise / self.scale_n)
        return DetectionResult(
            probs=probs,
            scores=scores.astype(np.float32),
            flagged=scores > self._threshold,
            per_component={
                "mahalanobis": mahalanobis.astype(np.float32),
                "noise": noise.astype(np.float32),
            },
        )


def _unit_inputs(x: object, d: int) -> npt.NDArray[np.float32]:
    try:
        array = np.ascontiguousarray(_as_array(x, d))
    except ValueError as err:
        raise CalibrationError(f"cannot calibrate: {err}") from err
    if not np.isfinite(array).all():
        raise CalibrationError("cannot calibrate: the unit inputs are not all finite")
    return array


def calibrate_detector(
    unit_network: nn.Module,
    contract: ModelContract,
    x_val_unit: object,
    *,
    fpr: float,
    reference_unit: object | None = None,
    squeezers: tuple[str, ...] = DEFAULT_SQUEEZER_NAMES,
) -> Calibration:
    """Choose the model's detector by modality and calibrate it on clean unit inputs.

    Args:
        unit_network: Unit inputs (N, d) to logits, in eval mode.
        contract: The model's contract.
        x_val_unit: Clean validation inputs in unit space, (n, d).
        fpr: The largest accepted false-positive rate, in (0, 1).
        reference_unit: Clean unit inputs (m, d) to fit the tabular detector's class
            means and covariance on (e.g. a training split); the thresholds are then set
            on the scores of ``x_val_unit`` against that fit, and the parameters record
            ``reference_digest`` (:func:`data_digest` of it), so verification needs the
            same reference. By default the fit is on ``x_val_unit`` itself, with
            leave-one-out scores for the thresholds. Image models ignore it.
        squeezers: The squeezer names for an image model.

    Returns:
        The calibration.

    Raises:
        CalibrationError: If ``fpr`` is out of range, the inputs are malformed or too few
            to resolve it (fewer than ``1 / fpr``), or no finite threshold exists.
    """
    check_fpr(fpr)
    d = contract.n_features
    u = _unit_inputs(x_val_unit, d)
    n = u.shape[0]
    if n < math.ceil(1.0 / fpr):
        raise CalibrationError(
            f"{n} clean inputs cannot resolve a false-positive rate of {fpr}; use at least "
            f"{math.ceil(1.0 / fpr)} (the validation split has enough)"
        )
    if contract.modality == "image":
        layout = _layout(contract)
        chosen = [squeezer_from_name(name, layout=layout) for name in squeezers]
        _, squeezed = _distance_matrix(unit_network, u, chosen, d)
        scores = squeezed.max(axis=0).astype(np.float64)
        detector = SQUEEZING
        parameters: dict[str, Any] = {
            "squeezers": [s.name for s in chosen],
            "image_layout": list(layout),
        }
    else:
        detector = TABULAR
        noise_parameters = {"copies": NOISE_COPIES, "scale": NOISE_SCALE, "seed": NOISE_SEED}
        probs, noise = _tabular_components(unit_network, u, _noise(d, noise_parameters))
        predicted = probs.argmax(axis=1)
        reference_digest = None
        if reference_unit is None:
            mahalanobis_parameters, distances = fit(u, predicted, contract.n_classes)
        else:
            reference = _unit_inputs(reference_unit, d)
            reference_digest = data_digest(reference)
            reference_predicted = _softmax(unit_network, reference).argmax(axis=1)
            mahalanobis_parameters, _ = fit(reference, reference_predicted, contract.n_classes)
            scorer = MahalanobisScorer(mahalanobis_parameters, d, contract.n_classes)
            distances = scorer.scores(u, predicted)
        scale_m = max(threshold_for(distances, fpr), MIN_SCALE)
        scale_n = max(threshold_for(noise, fpr), MIN_SCALE)
        scores = np.maximum(distances / scale_m, noise / scale_n)
        parameters = {
            "mahalanobis": mahalanobis_parameters,
            "noise": noise_parameters,
            "scales": {"mahalanobis": scale_m, "noise": scale_n},
        }
        if reference_digest is not None:
            parameters["reference_digest"] = reference_digest
    threshold = threshold_for(scores, fpr)
    return Calibration(
        detector=detector,
        parameters=parameters,
        threshold=threshold,
        fpr_target=float(fpr),
        fpr_measured=float((scores > threshold).mean()),
        n=n,
        data_digest=data_digest(u),
    )


def build_detector(
    unit_network: nn.Module, contract: ModelContract, calibration: Calibration
) -> Detector:
    """Build the calibrated detector a model's register record describes.

    Args:
        unit_network: Unit inputs (N, d) to logits, in eval mode.
        contract: The model's contract.
        calibration: Its calibration (from :func:`calibrate_detector` or the ledger).

    Returns:
        A detector with ``analyze(u)``, ``threshold`` and ``kind``.

    Raises:
        CalibrationError: If the calibration's detector does not fit the modality or its
            parameters are malformed.
    """
    expected = SQUEEZING if contract.modality == "image" else TABULAR
    if calibration.detector != expected:
        raise CalibrationError(
            f"calibration.detector: {calibration.detector!r} does not fit a "
            f"{contract.modality} model (expected {expected!r}); recalibrate the model"
        )
    if expected == SQUEEZING:
        return SqueezingDetector(unit_network, contract, calibration)
    return TabularDetector(unit_network, contract, calibration)


def _differs(recorded: object, computed: object, path: str) -> str | None:
    """Return the path of the first difference between two JSON values, or None.

    Numbers compare with :data:`PARAMETER_RTOL`; everything else exactly.
    """
    if isinstance(recorded, dict) and isinstance(computed, dict):
        if sorted(recorded) != sorted(computed):
            return path
        for key in sorted(recorded):
            found = _differs(recorded[key], computed[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(recorded, list | tuple) and isinstance(computed, list | tuple):
        if len(recorded) != len(computed):
            return path
        for i, (a, b) in enumerate(zip(recorded, computed, strict=True)):
            found = _differs(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    numbers = (int, float)
    if (
        isinstance(recorded, numbers)
        and isinstance(computed, numbers)
        and not isinstance(recorded, bool)
        and not isinstance(computed, bool)
    ):
        a, b = float(recorded), float(computed)
        return None if math.isclose(a, b, rel_tol=PARAMETER_RTOL, abs_tol=1e-12) else path
    return None if recorded == computed else path


def verify_calibration(
    unit_network: nn.Module,
    contract: ModelContract,
    x_val_unit: object,
    calibration: Calibration,
    *,
    reference_unit: object | None = None,
) -> None:
    """Recompute a recorded calibration and refuse it if it differs.

    The data digest, the number of inputs, the detector and the parameters' structure must
    match exactly; the threshold within a relative :data:`THRESHOLD_RTOL`, the numbers in
    the parameters within :data:`PARAMETER_RTOL`, ``fpr_measured`` within one input.

    Args:
        unit_network: Unit inputs (N, d) to logits, in eval mode.
        contract: The model's contract.
        x_val_unit: The clean validation inputs in unit space the calibration claims.
        calibration: The recorded calibration.
        reference_unit: The reference inputs, if the calibration was fitted on some (its
            parameters then hold ``reference_digest``).

    Raises:
        CalibrationError: Naming the first field that differs, with both values.
    """
    digest = data_digest(_unit_inputs(x_val_unit, contract.n_features))
    if digest != calibration.data_digest:
        raise CalibrationError(
            f"calibration.data_digest: the validation data give {digest}, the record says "
            f"{calibration.data_digest}; the data or the model package changed"
        )
    recorded_reference = calibration.parameters.get("reference_digest")
    if reference_unit is None and recorded_reference is not None:
        raise CalibrationError(
            "calibration.parameters.reference_digest: the calibration was fitted on "
            f"reference data ({recorded_reference}); pass the same reference inputs"
        )
    fresh = calibrate_detector(
        unit_network,
        contract,
        x_val_unit,
        fpr=calibration.fpr_target,
        reference_unit=reference_unit,
        squeezers=tuple(calibration.parameters.get("squeezers", DEFAULT_SQUEEZER_NAMES)),
    )
    if fresh.detector != calibration.detector:
        raise CalibrationError(
            f"calibration.detector: recomputed {fresh.detector!r}, recorded "
            f"{calibration.detector!r}"
        )
    if fresh.n != calibration.n:
        raise CalibrationError(f"calibration.n: recomputed {fresh.n}, recorded {calibration.n}")
    where = _differs(calibration.parameters, fresh.parameters, "calibration.parameters")
    if where is not None:
        raise CalibrationError(
            f"{where}: the recorded value differs from the one recomputed from the model "
            "and its validation data; recalibrate the model"
        )
    if not math.isclose(calibration.threshold, fresh.threshold, rel_tol=THRESHOLD_RTOL):
        raise CalibrationError(
            f"calibration.threshold: recomputed {fresh.threshold!r}, recorded "
            f"{calibration.threshold!r}"
        )
    if abs(calibration.fpr_measured - fresh.fpr_measured) > 1.0 / max(fresh.n, 1) + 1e-12:
        raise CalibrationError(
            f"calibration.fpr_measured: recomputed {fresh.fpr_measured!r}, recorded "
            f"{calibration.fpr_measured!r}"
        )
