"""Errors raised while training, evaluating, saving, loading or registering a model."""


class ModelError(Exception):
    """Base error of the model pipeline; the message says what is wrong and how to fix it."""


class ArtifactError(ModelError):
    """A model artifact is missing, corrupt, truncated, tampered with or does not match."""


class MetricsError(ModelError):
    """A metrics file is missing, malformed or does not describe the given artifact."""


class TrainingError(ModelError):
    """Training was asked for something it cannot do (unknown defense, profile, setting)."""


class RegistrationError(ModelError):
    """Writing the register record to the provenance ledger failed."""


class ModelSignatureError(ModelError):
    """The model's OMS signature is missing, untrusted or does not verify; nothing is signed."""


class ContractError(ModelError):
    """A model contract (``ztml-model.json``) is malformed; the message names the field."""


class PackageError(ModelError):
    """A model package cannot be opened: its code, weights or data do not fit its contract."""
