"""Errors raised while validating request bodies and screening inputs."""

from __future__ import annotations


class SanitizerError(Exception):
    """Base error of input sanitization; the message says what is wrong and how to fix it.

    Attributes:
        status_code: The HTTP status a service should answer with.
    """

    status_code = 400


class InputValidationError(SanitizerError):
    """A request's instances are malformed (type, shape, NaN/inf, range, batch size).

    The message is safe to return to the client: it names the offending field (for
    example ``instances[3][10]``) and never echoes more than one offending value.

    Attributes:
        field: Where the problem is, e.g. ``instances`` or ``instances[3][10]``.
        message: What is wrong there and how to fix it.
        feature: The feature's name when the model's contract names its features (it
            follows the field in the text: ``instances[0][3] (mean radius): ...``).
    """

    status_code = 422

    def __init__(self, field: str, message: str, *, feature: str | None = None) -> None:
        where = field if feature is None else f"{field} ({feature})"
        super().__init__(f"{where}: {message}")
        self.field = field
        self.message = message
        self.feature = feature


class PayloadTooLargeError(SanitizerError):
    """A request body is larger than the service accepts.

    Attributes:
        size: The body size in bytes.
        limit: The largest accepted body size in bytes.
    """

    status_code = 413

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"request body is {size} bytes; the limit is {limit} bytes. Send fewer instances "
            "per request."
        )
        self.size = size
        self.limit = limit


class PerturbationDetectedError(SanitizerError):
    """The perturbation detector flagged inputs as likely adversarial perturbations.

    Attributes:
        indices: Positions of the flagged instances in the batch.
        scores: Their detector scores.
        threshold: The calibrated threshold they exceeded.
    """

    status_code = 422

    def __init__(self, indices: list[int], scores: list[float], threshold: float) -> None:
        shown = ", ".join(
            f"instances[{i}] (score {s:.3f})" for i, s in zip(indices, scores, strict=True)
        )
        super().__init__(
            f"{len(indices)} instance(s) look adversarially perturbed: {shown}; the detection "
            f"threshold is {threshold:.3f}. Send unmodified inputs."
        )
        self.indices = indices
        self.scores = scores
        self.threshold = threshold


class CalibrationError(SanitizerError):
    """A detector cannot be calibrated, or a recorded calibration does not reproduce.

    Raised for too few inputs or a bad false-positive rate, and by
    :func:`~service.sanitizer.calibration.verify_calibration` when recomputing a calibration
    from the network and data gives another result (the message names the field).
    """
