"""The example request ``ztml up`` prints: a real digit and a freshly issued demo token."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

DEMO_SUBJECT = "demo-analyst"
DEMO_TENANT = "demo"
DEMO_ROLES = ("analyst",)
DEMO_SCOPES = ("predict", "explain", "metadata")
TOKEN_TTL_SECONDS = 8 * 3600


def demo_token(home: Path) -> str:
    """Issue a demo token (role analyst, tenant demo) signed by the local issuer."""
    from service.authn.issuer import issue_local_token

    return issue_local_token(
        home,
        sub=DEMO_SUBJECT,
        roles=DEMO_ROLES,
        tenant=DEMO_TENANT,
        scopes=DEMO_SCOPES,
        ttl_seconds=TOKEN_TTL_SECONDS,
    )


def demo_instance() -> list[float]:
    """Return one test-split digit as 64 numbers in [0, 1]."""
    from service.model.data import load_splits

    return [round(float(v), 4) for v in load_splits().x_test[0]]


def example_command(
    url: str,
    token: str,
    *,
    ca_file: str | None = None,
    client_cert: tuple[Path, Path] | None = None,
) -> str:
    """Return a curl command that asks the service for one prediction.

    Args:
        url: The service's base URL.
        token: A bearer token.
        ca_file: The CA certificate that verifies the service (``--cacert``).
        client_cert: A client certificate and its key to present (``--cert``, ``--key``).
    """
    body = json.dumps({"instances": [demo_instance()]}, separators=(",", ":"))
    tls = f"--cacert {shlex.quote(ca_file)} " if ca_file else ""
    if client_cert is not None:
        cert, key = client_cert
        tls += f"--cert {shlex.quote(str(cert))} --key {shlex.quote(str(key))} "
    return (
        f"curl -sS {tls}-X POST {url}/predict "
        f"-H {shlex.quote('Authorization: Bearer ' + token)} "
        f"-H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)}"
    )


def write_example(home: Path, command: str) -> Path:
    """Save the example (it holds a token) as ``$ZTML_HOME/run/example-request.sh`` (0600)."""
    path = home / "run" / "example-request.sh"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("#!/bin/sh\n" + command + "\n")
    return path
