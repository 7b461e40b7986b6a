"""`ztml up` and TLS: client certificates required, an operator's pair, the plain-HTTP opt-out."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from service.authn.tls import DevCertificates, make_dev_ca
from service.stack.errors import StackError
from service.stack.runner import StackOptions, opa_socket, service_env
from service.stack.state import StackState, read_state
from service.stack.tls import service_tls
from tests.service.app.harness import audit_events, token
from tests.service.stack.test_stack_up import ztml

# -- options ------------------------------------------------------------------------------


def options(home: Path) -> StackOptions:
    return StackOptions(home=home, model_path=home / "m", model_digest="sha256:" + "0" * 64)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"insecure_plain_http": True, "client_auth": "optional"}, "--insecure-plain-http"),
        ({"tls_cert": Path("/x.pem")}, "--tls-cert and --tls-key"),
        ({"client_ca": Path("/ca.pem")}, "--client-ca needs --client-auth"),
    ],
)
def test_contradicting_tls_options_are_refused(
    tmp_path: Path, kwargs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(StackError, match=fragment):
        service_tls(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    theirs = make_dev_ca(tmp_path / "theirs")
    with pytest.raises(StackError, match="matching key"):
        service_tls(tmp_path, tls_cert=theirs.server_cert, tls_key=theirs.client_key)


def test_the_stacks_ca_is_always_an_accepted_client_issuer(tmp_path: Path) -> None:
    partner = make_dev_ca(tmp_path / "partner")
    tls = service_tls(tmp_path, client_ca=partner.ca_cert, client_auth="required")
    assert tls is not None and tls.client_ca is not None
    bundle = tls.client_ca.read_text()
    assert partner.ca_cert.read_text().strip() in bundle
    assert tls.own.ca_cert.read_text().strip() in bundle


def test_opas_socket_is_under_the_home_run_directory(tmp_path: Path) -> None:
    assert opa_socket(tmp_path) == tmp_path / "run" / "opa" / "opa.sock"


# -- the real stack -----------------------------------------------------------------------


def run_example(stdout: str, **env: str) -> dict[str, object]:
    command = next(line for line in stdout.splitlines() if line.startswith("curl "))
    result = subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def handshake_refusals(home: Path, status: int) -> int:
    return sum(
        1
        for e in audit_events(home)
        if e.get("action") == "tls_handshake" and e.get("status") == status
    )


def get_metadata(state: StackState, home: Path, context: ssl.SSLContext) -> int:
    headers = {"Authorization": f"Bearer {token(home, 'mtls-caller', roles=('viewer',))}"}
    return httpx.get(
        f"{state.service_url}/metadata", headers=headers, verify=context, timeout=30
    ).status_code


def caller(ca: Path, client: DevCertificates | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client.client_cert), str(client.client_key))
    return context


def test_required_client_certificates_refuse_and_audit_callers_without_a_trusted_one(
    up_home: Path, tmp_path: Path
) -> None:
    partner = make_dev_ca(tmp_path / "partner")  # the operator's client CA
    stranger = make_dev_ca(tmp_path / "stranger")  # nobody trusts it
    result = ztml(up_home, "up", "--detach", "--client-ca", str(partner.ca_cert))
    assert result.returncode == 0, result.stdout + result.stderr
    state = read_state(up_home)
    assert state is not None
    try:
        assert state.client_auth == "required" and state.ca_file is not None
        answer = run_example(result.stdout)  # presents the stack's own client certificate
        assert answer["model"]["digest"] == state.model_digest  # type: ignore[index]
        ca = Path(state.ca_file)
        assert get_metadata(state, up_home, caller(ca, partner)) == 200
        for client, status in ((None, 496), (stranger, 495)):
            before = handshake_refusals(up_home, status)
            with pytest.raises(httpx.HTTPError):
                get_metadata(state, up_home, caller(ca, client))
            deadline = time.monotonic() + 10
            while handshake_refusals(up_home, status) == before and time.monotonic() < deadline:
                time.sleep(0.2)
            assert handshake_refusals(up_home, status) == before + 1
    finally:
        assert ztml(up_home, "down").returncode == 0


def test_an_operators_certificate_is_served(up_home: Path, tmp_path: Path) -> None:
    theirs = make_dev_ca(tmp_path / "operator")
    result = ztml(
        up_home,
        "up",
        "--detach",
        "--tls-cert",
        str(theirs.server_cert),
        "--tls-key",
        str(theirs.server_key),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    state = read_state(up_home)
    assert state is not None
    try:
        assert state.ca_file is None
        assert "--cacert" not in result.stdout  # the caller trusts the operator's issuer
        answer = run_example(result.stdout, CURL_CA_BUNDLE=str(theirs.ca_cert))
        assert answer["model"]["digest"] == state.model_digest  # type: ignore[index]
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            get_metadata(state, up_home, caller(up_home / "tls" / "ca.pem", None))
    finally:
        assert ztml(up_home, "down").returncode == 0


def test_plain_http_only_behind_the_named_opt_out_which_is_loud_and_recorded(
    up_home: Path,
) -> None:
    result = ztml(up_home, "up", "--detach", "--insecure-plain-http")
    assert result.returncode == 0, result.stdout + result.stderr
    state = read_state(up_home)
    assert state is not None
    try:
        assert state.service_url.startswith("http://")
        assert "WARNING" in result.stderr and "plain HTTP" in result.stderr
        answer = run_example(result.stdout)
        assert answer["model"]["digest"] == state.model_digest  # type: ignore[index]
        log = Path(state.service.log).read_text()
        assert "WARNING: serving plain HTTP" in log
        starts = [e["action"] for e in audit_events(up_home) if e.get("kind") == "service"]
        assert "start_insecure_plain_http" in starts
    finally:
        assert ztml(up_home, "down").returncode == 0


def test_the_service_env_replaces_inherited_transport_settings_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZTML_INSECURE_PLAIN_HTTP", "true")
    monkeypatch.setenv("ZTML_OPA_URL", "http://127.0.0.1:8181")
    monkeypatch.setenv("ZTML_OPA_TIMEOUT_MS", "1000")
    env = service_env(options(tmp_path), service_tls(tmp_path))
    assert "ZTML_INSECURE_PLAIN_HTTP" not in env
    assert env["ZTML_OPA_URL"] == f"unix://{opa_socket(tmp_path)}"
    assert env["ZTML_OPA_TIMEOUT_MS"] == "1000"
    assert env["ZTML_TLS_CERT"] == str(tmp_path / "tls" / "server.pem")
