"""Errors raised while finding or installing external tools."""


class ToolchainError(Exception):
    """Base error for tool discovery and installation."""


class ToolMissingError(ToolchainError):
    """A required tool is not installed; the message says how to get it."""


class ToolInstallError(ToolchainError):
    """Installing a tool failed; the message carries the installer's last words."""


class PostgresServerError(ToolchainError):
    """A throwaway PostgreSQL server did not start; the message carries its log."""
