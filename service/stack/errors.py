"""Errors of the local stack; each message says what is wrong and how to fix it."""


class StackError(Exception):
    """Base class of ``ztml up`` / ``ztml down`` errors."""


class PortInUseError(StackError):
    """A port the stack needs is taken by another process."""


class StackStartError(StackError):
    """OPA or the model service did not start (the message points at its log)."""


class StackRunningError(StackError):
    """A detached stack is already running in this ZTML_HOME."""


class ProvisionError(StackError):
    """Keys, the demo issuer or the demo model could not be prepared."""
