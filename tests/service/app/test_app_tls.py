"""TLS on the service port: the settings, the protocol floor, and the real server's answers.

The test stack serves TLS from its local CA and takes client certificates when offered
(``optional``), so callers with and without one, and with one of another CA, meet the
real server.
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import httpx
import pytest

from service.app.config import AppConfig, load_config
from service.app.errors import ConfigError, StartRefusedError
from service.app.tls import bentoml_ssl, check_transport, harden, refusal, server_context
from service.authn.tls import DevCertificates, make_dev_ca
from tests.service.app.harness import Stack, audit_events, caller_tls, events_for, own_client

# -- configuration -------------------------------------------------------------------------


def config_with(tmp_path: Path, **env: str) -> AppConfig:
    return load_config({"ZTML_HOME": str(tmp_path), **env})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return make_dev_ca(tmp_path_factory.mktemp("tls"))


def test_tls_files_and_client_auth_come_from_the_environment(
    tmp_path: Path, certs: DevCertificates
) -> None:
    config = config_with(
        tmp_path,
        ZTML_TLS_CERT=str(certs.server_cert),
        ZTML_TLS_KEY=str(certs.server_key),
        ZTML_TLS_CLIENT_CA=str(certs.ca_cert),
    )
    assert config.tls is not None
    assert config.tls.client_auth == "required"  # the default once a client CA is given
    settings = bentoml_ssl(config)
    assert settings["enabled"] is True
    assert settings["cert_reqs"] == ssl.CERT_REQUIRED
    assert settings["ca_certs"] == str(certs.ca_cert)


def test_optional_client_auth_asks_for_but_does_not_require_a_certificate(
    tmp_path: Path, certs: DevCertificates
) -> None:
    config = config_with(
        tmp_path,
        ZTML_TLS_CERT=str(certs.server_cert),
        ZTML_TLS_KEY=str(certs.server_key),
        ZTML_TLS_CLIENT_CA=str(certs.ca_cert),
        ZTML_TLS_CLIENT_AUTH="optional",
    )
    assert bentoml_ssl(config)["cert_reqs"] == ssl.CERT_OPTIONAL


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ZTML_TLS_CERT": "/x.pem"}, "ZTML_TLS_KEY"),
        ({"ZTML_TLS_KEY": "/x.key"}, "ZTML_TLS_CERT"),
        (
            {"ZTML_TLS_CERT": "/x", "ZTML_TLS_KEY": "/y", "ZTML_TLS_CLIENT_AUTH": "required"},
            "ZTML_TLS_CLIENT_CA",
        ),
        (
            {
                "ZTML_TLS_CERT": "/x",
                "ZTML_TLS_KEY": "/y",
                "ZTML_TLS_CLIENT_CA": "/z",
                "ZTML_TLS_CLIENT_AUTH": "off",
            },
            "ZTML_TLS_CLIENT_AUTH=off",
        ),
        ({"ZTML_TLS_CLIENT_AUTH": "sometimes"}, "ZTML_TLS_CLIENT_AUTH"),
        ({"ZTML_INSECURE_PLAIN_HTTP": "true", "ZTML_TLS_CERT": "/x"}, "ZTML_TLS_CERT"),
    ],
)
def test_contradicting_tls_settings_are_named(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        config_with(tmp_path, **env)


def test_the_service_refuses_to_start_without_tls_or_the_named_opt_out(tmp_path: Path) -> None:
    with pytest.raises(StartRefusedError, match="ZTML_INSECURE_PLAIN_HTTP=true"):
        check_transport(config_with(tmp_path))
    check_transport(config_with(tmp_path, ZTML_INSECURE_PLAIN_HTTP="true"))


def test_unusable_tls_files_refuse_the_start_with_the_variable_named(
    tmp_path: Path, certs: DevCertificates
) -> None:
    config = config_with(
        tmp_path, ZTML_TLS_CERT=str(certs.server_cert), ZTML_TLS_KEY=str(certs.client_key)
    )
    with pytest.raises(StartRefusedError, match="ZTML_TLS_KEY"):
        check_transport(config)


def test_server_context_has_the_tls12_floor(certs: DevCertificates) -> None:
    config = load_config(
        {"ZTML_TLS_CERT": str(certs.server_cert), "ZTML_TLS_KEY": str(certs.server_key)}
    )
    assert config.tls is not None
    context = server_context(config.tls)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)).minimum_version >= (
        ssl.TLSVersion.TLSv1_2
    )


@pytest.mark.parametrize(
    ("error", "status", "fragment"),
    [
        (ssl.SSLError(1, "x"), 400, "TLS handshake refused"),
        (ssl.SSLCertVerificationError(1, "x"), 495, "not trusted"),
    ],
)
def test_refused_handshakes_are_classified(error: ssl.SSLError, status: int, fragment: str) -> None:
    assert refusal(error)[0] == status
    assert fragment in refusal(error)[1]


# -- the real server ------------------------------------------------------------------------


def metadata(stack: Stack, context: ssl.SSLContext | bool, **token: object) -> httpx.Response:
    sub = str(token.pop("sub", "tls-caller"))
    headers = stack.headers(sub, **token)
    return httpx.get(f"{stack.url}/metadata", headers=headers, verify=context, timeout=30)


def refusals(stack: Stack, status: int) -> list[dict[str, object]]:
    return [
        e
        for e in audit_events(stack.home)
        if e.get("action") == "tls_handshake" and e.get("status") == status
    ]


def wait_for_refusal(stack: Stack, status: int, before: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(refusals(stack, status)) <= before:
        time.sleep(0.1)
    return refusals(stack, status)


@pytest.mark.system
def test_handshake_with_the_stacks_ca_negotiates_tls13(stack: Stack) -> None:
    with stack.connect(timeout=10) as conn:
        assert conn.version() == "TLSv1.3"


@pytest.mark.system
def test_a_tls12_client_is_served(stack: Stack) -> None:
    context = caller_tls(stack.home)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert metadata(stack, context).status_code == 200


@pytest.mark.system
def test_a_client_below_tls12_cannot_connect(stack: Stack) -> None:
    context = caller_tls(stack.home)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(httpx.HTTPError):
        metadata(stack, context)


@pytest.mark.system
def test_a_caller_without_the_ca_gets_a_certificate_verify_error(stack: Stack) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        metadata(stack, True)


@pytest.mark.system
def test_plain_http_to_the_tls_port_is_refused_and_audited(stack: Stack) -> None:
    before = len(refusals(stack, 497))
    try:
        status = httpx.get(stack.url.replace("https://", "http://") + "/livez").status_code
    except httpx.HTTPError:
        status = None
    assert status in (None, 400)
    assert len(wait_for_refusal(stack, 497, before)) == before + 1


@pytest.mark.system
@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
def test_probes_answer_over_tls_without_a_client_certificate(stack: Stack, path: str) -> None:
    assert httpx.get(f"{stack.url}{path}", verify=stack.tls, timeout=10).status_code == 200


@pytest.mark.system
def test_a_certificate_from_another_ca_is_refused_and_audited(stack: Stack, tmp_path: Path) -> None:
    rogue = make_dev_ca(tmp_path / "rogue")
    context = caller_tls(stack.home, client=(rogue.client_cert, rogue.client_key))
    before = len(refusals(stack, 495))
    with pytest.raises(httpx.HTTPError):
        metadata(stack, context)
    events = wait_for_refusal(stack, 495, before)
    assert len(events) == before + 1
    reasons = events[-1]["decision"]["reasons"]  # type: ignore[index]
    assert "client certificate not trusted" in reasons[0]


@pytest.mark.system
def test_a_caller_without_a_certificate_is_served_when_optional(stack: Stack) -> None:
    assert metadata(stack, stack.tls).status_code == 200


@pytest.mark.system
def test_the_certificate_identity_grants_the_service_role(stack: Stack) -> None:
    with_cert = caller_tls(stack.home, client=own_client(stack.home))
    response = metadata(stack, with_cert, sub="ztml-client", roles=("service",))
    assert response.status_code == 200, response.text


@pytest.mark.system
def test_the_service_role_without_a_certificate_is_denied(stack: Stack) -> None:
    response = metadata(stack, stack.tls, sub="ztml-client", roles=("service",))
    assert response.status_code == 403
    assert "requires a TLS client certificate" in response.json()["error"]["reasons"][0]


@pytest.mark.system
def test_the_service_role_with_a_certificate_naming_someone_else_is_denied(stack: Stack) -> None:
    with_cert = caller_tls(stack.home, client=own_client(stack.home))
    response = metadata(stack, with_cert, sub="svc-impostor", roles=("service",))
    assert response.status_code == 403
    assert '["ztml-client"]' in response.json()["error"]["reasons"][0]


@pytest.mark.system
def test_the_certificate_identity_is_in_the_decision_log_input(stack: Stack) -> None:
    with_cert = caller_tls(stack.home, client=own_client(stack.home))
    response = metadata(stack, with_cert, sub="logged-caller", roles=("viewer",))
    assert response.status_code == 200
    (decision,) = [
        e
        for e in events_for(stack.home, response.headers["x-request-id"])
        if e["kind"] == "policy_decision"
    ]
    decision_id = decision["decision"]["decision_id"]
    deadline = time.monotonic() + 10
    logged = None
    while logged is None and time.monotonic() < deadline:
        for log in (stack.home / "logs").glob("opa*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if decision_id in line and line.startswith("{"):
                    logged = json.loads(line)
        time.sleep(0.1)
    assert logged is not None, "no decision log line"
    client_cert = logged["input"]["client_cert"]
    assert client_cert["common_name"] == "ztml-client"
    assert client_cert["identities"] == ["ztml-client"]
    assert client_cert["subject"] == "CN=ztml-client,O=ztml development"
