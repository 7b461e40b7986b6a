"""Errors of the local cluster command."""


class ClusterError(Exception):
    """Base error of ``ztml cluster``; the message says what failed and how to fix it."""


class ClusterToolError(ClusterError):
    """A pinned binary or a Debian package the cluster needs is missing or did not build."""


class ClusterStartError(ClusterError):
    """A component of the cluster did not start or did not become ready in time."""
