"""Input sanitization: strict request validation and adversarial-perturbation detection.

``parse_instances``, ``check_body_size`` and ``check_json_depth`` need only numpy; the
detectors import torch when they run.
"""

from service.sanitizer.calibration import (
    DETECTORS,
    Calibration,
    DetectionResult,
    Detector,
    build_detector,
    calibrate_detector,
    data_digest,
    verify_calibration,
)
from service.sanitizer.detector import (
    FeatureSqueezer,
    SqueezeResult,
    calibrate_threshold,
    threshold_for,
)
from service.sanitizer.errors import (
    CalibrationError,
    InputValidationError,
    PayloadTooLargeError,
    PerturbationDetectedError,
    SanitizerError,
)
from service.sanitizer.squeezers import (
    BitDepth,
    MedianSmoothing,
    Quantize,
    default_squeezers,
    squeezer_from_name,
)
from service.sanitizer.validation import (
    MAX_JSON_DEPTH,
    check_body_size,
    check_json_depth,
    max_json_depth,
    parse_instances,
)

__all__ = [
    "DETECTORS",
    "MAX_JSON_DEPTH",
    "BitDepth",
    "Calibration",
    "CalibrationError",
    "DetectionResult",
    "Detector",
    "FeatureSqueezer",
    "InputValidationError",
    "MedianSmoothing",
    "PayloadTooLargeError",
    "PerturbationDetectedError",
    "Quantize",
    "SanitizerError",
    "SqueezeResult",
    "build_detector",
    "calibrate_detector",
    "calibrate_threshold",
    "check_body_size",
    "check_json_depth",
    "data_digest",
    "default_squeezers",
    "max_json_depth",
    "parse_instances",
    "squeezer_from_name",
    "threshold_for",
    "verify_calibration",
]
