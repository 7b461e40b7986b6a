"""Errors of the model service: bad configuration and a refused model."""


class AppError(Exception):
    """Base class of model service errors."""


class ConfigError(AppError):
    """An environment variable of the service has a bad value (named in the message)."""


class ModelRefusedError(AppError):
    """The model may not be served: unregistered, mismatched, revoked or unapproved.

    Attributes:
        reasons: every reason the provenance gate gave.
    """

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons
