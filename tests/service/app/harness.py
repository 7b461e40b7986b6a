"""Shared helpers of the system tests: a cached demo model, tokens and the audit trail."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.stack.processes import stop_group


def restart_opa(argv: Sequence[str], *, socket_path: Path, log: Path, env: dict[str, str]) -> int:
    """Start OPA again with its original command line, as the user the stack runs as.

    A killed OPA leaves its socket file behind: it is removed first. Started as root,
    the stack's servers run as the unprivileged service user, whose service can only
    open a socket that user owns. Returns the new process group.
    """
    import subprocess

    from service.stack.privileges import service_account

    socket_path.unlink(missing_ok=True)
    account = service_account()
    identity: dict[str, Any] = {}
    if account is not None:
        identity = {"user": account.uid, "group": account.gid, "extra_groups": []}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            **identity,
        )
    return proc.pid


def caller_tls(home: Path, *, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A caller's TLS context: trusts the stack's CA in ``home``, presents ``client``."""
    context = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


def own_client(home: Path) -> tuple[Path, Path]:
    """The stack's own client certificate and key (CN ztml-client, signed by its CA)."""
    return home / "tls" / "client.pem", home / "tls" / "client.key"


#: The demo model of the tests: PGD-trained, tiny profile, evaluated at eps 0.1 as the gate
#: requires (PGD with 100 steps and 10 restarts, and AutoAttack).
TEST_PROFILE = "tiny"
TEST_OVERRIDES: dict[str, Any] = {"epochs": 16, "train_steps": 5, "train_eps": 0.2}


def cached_demo_model(config: pytest.Config) -> Path:
    """Return a directory with model.safetensors and metrics.json, training once per cache."""
    from service.model.config import EvalConfig
    from service.model.pipeline import build_model

    name = "ztml-demo-model-pgd-tiny-v3"
    cache_provider = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    if cache_provider is not None:
        cache = Path(cache_provider.mkdir(name))
    else:
        cache = Path(tempfile.gettempdir()) / name
        cache.mkdir(exist_ok=True)
    if not (cache / "model.safetensors").exists() or not (cache / "metrics.json").exists():
        build_model(
            "pgd",
            TEST_PROFILE,
            out_dir=cache,
            eval=EvalConfig(epsilons=(0.1,)),
            **TEST_OVERRIDES,
        )
    return cache


def install_demo_model(home: Path, source: Path) -> Any:
    """Copy the cached model into ``home`` and register and approve it there."""
    from service.stack.provision import demo_model_dir, ensure_demo_model, ensure_keys_and_issuer

    ensure_keys_and_issuer(home)
    target = demo_model_dir(home)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "metrics.json"):
        shutil.copy2(source / name, target / name)
    return ensure_demo_model(home, retrain=False, progress=lambda *_: None)


def install_unapproved_demo_model(home: Path, source: Path) -> Path:
    """Copy the cached model into ``home``, OMS-sign and register it there, not approve it.

    Returns the weights' path.
    """
    from service.model.register import register_model
    from service.oms import default_signing_key, sign_model
    from service.stack.provision import demo_model_dir, ensure_keys_and_issuer

    ensure_keys_and_issuer(home)
    target = demo_model_dir(home)
    shutil.copytree(source, target)
    sign_model(target, key=default_signing_key(home / "keys"))
    register_model(
        target / "model.safetensors",
        target / "metrics.json",
        ledger_url=home / "ledger.db",
        key_path=home / "keys" / "trainer.key",
        identity="trainer@ztml-local",
        oms_signers=home / "keys" / "oms_signers",
    )
    return target / "model.safetensors"


def serve_until_exit(
    home: Path, env: dict[str, str], *, target: str | None = None
) -> tuple[int, str]:
    """Run ``bentoml serve`` of the stack's service (or ``target``) over ``home`` until it exits.

    ``env`` is added to this process's environment (``ZTML_MODEL_PATH`` is dropped unless it is
    given). Plain HTTP: the tests that use this are about the model or the worker, not the
    transport. Returns the exit code and the merged stdout and stderr; a server still running
    after 180 s is stopped (and the test sees its output).
    """
    import os
    import subprocess

    from service.stack.processes import free_port
    from service.stack.runner import SERVICE_TARGET, service_command
    from service.toolchain.paths import PROJECT_ROOT

    base = {key: value for key, value in os.environ.items() if key != "ZTML_MODEL_PATH"}
    full = {
        **base,
        "ZTML_HOME": str(home),
        "BENTOML_HOME": str(home / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "ZTML_INSECURE_PLAIN_HTTP": "true",
        **env,
    }
    proc = subprocess.Popen(
        service_command(free_port(), target=target or SERVICE_TARGET),
        env=full,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        stop_group(proc.pid)
        output, _ = proc.communicate()
    finally:
        if proc.poll() is None:
            stop_group(proc.pid)
    return proc.returncode, output


def token(
    home: Path,
    sub: str,
    *,
    roles: Sequence[str] = ("predictor",),
    tenant: str = "demo",
    scopes: Sequence[str] | None = None,
    ttl_seconds: int = 600,
    now: float | None = None,
) -> str:
    """Issue a token signed by the local issuer of ``home``."""
    from service.authn.issuer import issue_local_token

    return issue_local_token(
        home,
        sub=sub,
        roles=roles,
        tenant=tenant,
        scopes=scopes if scopes is not None else ("predict", "explain", "metadata"),
        ttl_seconds=ttl_seconds,
        now=now,
    )


def b64url(data: bytes) -> str:
    """Base64url without padding (JWT encoding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def audit_events(home: Path) -> list[dict[str, Any]]:
    """Every event in every audit chain of ``home``, in file order."""
    events = []
    for segment in sorted((home / "audit").glob("*/segment-*.jsonl")):
        for line in segment.read_text().splitlines():
            record = json.loads(line)
            if "event" in record:
                events.append(record["event"])
    return events


def events_for(home: Path, request_id: str) -> list[dict[str, Any]]:
    """The audit events of one request."""
    return [e for e in audit_events(home) if e.get("request_id") == request_id]


def digit_rows(count: int, *, start: int = 0) -> list[list[float]]:
    """Real test-split digits as JSON-ready rows."""
    from service.model.data import load_splits

    x = load_splits().x_test[start : start + count]
    return [[float(v) for v in row] for row in x]


@dataclass
class Stack:
    """A running stack of the tests (OPA may be restarted by a test).

    ``tls`` is a caller's context: it trusts the stack's CA and presents no certificate.
    """

    home: Path
    url: str
    opa_port: int
    opa_pid: int
    service_pid: int
    digest: str
    model_path: Path
    tls: ssl.SSLContext
    opa_socket: Path
    extra_pids: list[int] = field(default_factory=list)

    @classmethod
    def started(cls, home: Path, state: Any, model: Any) -> Stack:
        """The stack ``start_stack`` started in ``home`` (its state) serving ``model``."""
        return cls(
            home=home,
            url=state.service_url,
            opa_port=state.opa.port,
            opa_pid=state.opa.pid,
            service_pid=state.service.pid,
            digest=model.digest,
            model_path=model.path,
            tls=caller_tls(home),
            opa_socket=Path(state.opa_socket),
        )

    def connect(self, *, timeout: float) -> ssl.SSLSocket:
        """A raw TLS connection to the service (for requests no HTTP client would send)."""
        url = urlsplit(self.url)
        assert url.hostname and url.port
        raw = socket.create_connection((url.hostname, url.port), timeout=timeout)
        return self.tls.wrap_socket(raw, server_hostname=url.hostname)

    def headers(self, sub: str, **kwargs: Any) -> dict[str, str]:
        """Authorization header with a fresh token."""
        return {"Authorization": f"Bearer {token(self.home, sub, **kwargs)}"}

    def stop(self) -> None:
        """Stop every server the tests started."""
        stop_group(self.service_pid)
        stop_group(self.opa_pid)
        for pid in self.extra_pids:
            stop_group(pid)


def wait_for(predicate: Any, *, timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # not up yet
            if predicate():
                return True
        time.sleep(0.2)
    return False
