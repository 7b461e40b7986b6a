"""Input sanitization: strict request validation and adversarial-perturbation detection.

``parse_instances``, ``check_body_size`` and ``check_json_depth`` need only numpy; the
feature squeezer imports torch when it runs.
"""

from service.sanitizer.detector import FeatureSqueezer, SqueezeResult, calibrate_threshold
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
    parse_instances,
)

__all__ = [
    "MAX_JSON_DEPTH",
    "BitDepth",
    "CalibrationError",
    "FeatureSqueezer",
    "InputValidationError",
    "MedianSmoothing",
    "PayloadTooLargeError",
    "PerturbationDetectedError",
    "Quantize",
    "SanitizerError",
    "SqueezeResult",
    "calibrate_threshold",
    "check_body_size",
    "check_json_depth",
    "default_squeezers",
    "parse_instances",
    "squeezer_from_name",
]
