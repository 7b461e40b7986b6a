"""Errors of the model service: bad configuration and a refused start."""


class AppError(Exception):
    """Base class of model service errors."""


class ConfigError(AppError):
    """An environment variable of the service has a bad value (named in the message)."""


class StartRefusedError(AppError):
    """The service may not start; ``reasons`` names every problem and its fix.

    Attributes:
        reasons: every reason.
    """

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class ModelRefusedError(StartRefusedError):
    """The model may not be served: unregistered, mismatched, revoked or unapproved."""
