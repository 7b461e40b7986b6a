"""Input sanitization: strict request validation and adversarial-perturbation detection.

``parse_instances`` and ``check_body_size`` need only numpy; the feature squeezer imports
torch when it runs.
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
from service.sanitizer.validation import check_body_size, parse_instances

__all__ = [
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
    "default_squeezers",
    "parse_instances",
    "squeezer_from_name",
]
