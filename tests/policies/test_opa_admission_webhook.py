"""The admission webhook's OPA as the API server meets it: HTTPS, the v0 API, its own authz.

OPA runs with the flags the webhook's Deployment gives it (infra/admission.py): TLS with a
certificate from the local CA code (``ztml cluster config``), ``--authorization=basic``
(policies/system/authz), the decision-log configuration with the mask, and the policies
tree plus the stack's parameters file. The client is a plain TLS socket that trusts only
that CA and checks the name the API server dials.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.cluster.stackconfig import serving_certificate
from service.stack.processes import free_port
from service.toolchain.paths import POLICIES_DIR

pytestmark = pytest.mark.system

HOST = "ztml-admission.ztml-admission.svc"
WEBHOOK_PATH = "/v0/data/ztml/admission/webhook/response"
CONFIG_FILE = POLICIES_DIR / "config" / "opa-config.yaml"


@dataclass
class Webhook:
    """A running webhook OPA and how to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    diagnostic_port: int
    ca_file: Path
    log_path: Path

    def context(self, *, ca_file: Path | None = None) -> ssl.SSLContext:
        """A client context trusting ``ca_file`` (the webhook's CA by default)."""
        context = ssl.create_default_context(cafile=str(ca_file or self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def request(
        self, method: str, path: str, body: Any = None, *, ca_file: Path | None = None
    ) -> tuple[int, Any]:
        """Send one HTTPS request as ``HOST``; return the status and the JSON body (or None)."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            context = self.context(ca_file=ca_file)
            with context.wrap_socket(raw, server_hostname=HOST) as tls:
                tls.sendall(head + payload)
                chunks = []
                while chunk := tls.recv(65536):
                    chunks.append(chunk)
        response = b"".join(chunks)
        header, _, content = response.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        if b"Transfer-Encoding: chunked" in header:
            content = _unchunk(content)
        return status, json.loads(content) if content.strip() else None

    def decision_lines(self) -> list[str]:
        """The decision log lines OPA has written so far."""
        return [line for line in self.log_path.read_text().splitlines() if "Decision Log" in line]


def _unchunk(content: bytes) -> bytes:
    out = b""
    while content:
        size_line, _, rest = content.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        content = rest[size + 2 :]
    return out


def _healthy(port: int) -> bool:
    """GET /health as the kubelet's HTTPS probe does: TLS without verifying the certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
            context.wrap_socket(raw) as sock,
        ):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.fixture(scope="module")
def webhook(opa_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    """OPA started with the webhook Deployment's flags, stopped after the module."""
    work = tmp_path_factory.mktemp("webhook")
    certificate = serving_certificate(work / "home", HOST)
    files = {"tls.crt": certificate.cert_pem, "tls.key": certificate.key_pem}
    files["ca.crt"] = certificate.ca_pem
    for name, text in files.items():
        (work / name).write_text(text)
    # The stack's parameters, laid out as the webhook's ConfigMap lays them out.
    settings = work / "settings"
    (settings / "data").mkdir(parents=True)
    parameters = {"admission_webhook": {"parameters": {"external_services": ["ztml/open"]}}}
    (settings / "data" / "admission_webhook.json").write_text(json.dumps(parameters))
    port, diagnostic_port = free_port(), free_port()
    command = [
        str(opa_bin),
        "run",
        "--server",
        f"--addr=127.0.0.1:{port}",
        f"--tls-cert-file={work / 'tls.crt'}",
        f"--tls-private-key-file={work / 'tls.key'}",
        "--min-tls-version=1.2",
        "--authorization=basic",
        f"--diagnostic-addr=127.0.0.1:{diagnostic_port}",
        f"--config-file={CONFIG_FILE}",
        "--log-format=json",
        "--log-level=info",
        "--skip-version-check",
    ]
    for pattern in ("examples", "config", ".*", "*_test.rego"):
        command += ["--ignore", pattern]
    command += [str(POLICIES_DIR), str(settings)]
    log_path = work / "opa.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = Webhook(process, port, diagnostic_port, work / "ca.crt", log_path)
    deadline = time.monotonic() + 30
    while not _healthy(diagnostic_port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the webhook's OPA did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _review(case: str, **request: Any) -> dict[str, Any]:
    example = json.loads(
        (POLICIES_DIR / "examples" / "admission" / case / "input.json").read_text()
    )
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {**example["review"], "uid": f"uid-{case}", **request},
    }


def test_deny_a_bad_pod_with_the_policys_message_over_https(webhook: Webhook) -> None:
    status, review = webhook.request("POST", WEBHOOK_PATH, _review("bad-root-pod"))
    assert status == 200
    assert review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview"
    answer = review["response"]
    assert answer["uid"] == "uid-bad-root-pod"
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    assert 'container "shell" of Pod "debug" must not run as user 0' in answer["status"]["message"]


def test_allow_a_good_deployment(webhook: Webhook) -> None:
    _, review = webhook.request("POST", WEBHOOK_PATH, _review("good-deployment"))
    assert review["response"] == {"uid": "uid-good-deployment", "allowed": True}


def test_allow_what_the_stack_parameters_allow(webhook: Webhook) -> None:
    # The NodePort Service is listed in the parameters' external_services.
    review = _review("bad-nodeport-service")
    review["request"]["object"]["metadata"]["name"] = "open"
    review["request"]["name"] = "open"
    _, answer = webhook.request("POST", WEBHOOK_PATH, review)
    assert answer["response"]["allowed"] is True
    _, refused = webhook.request("POST", WEBHOOK_PATH, _review("bad-nodeport-service"))
    assert refused["response"]["allowed"] is False


def test_deny_a_body_that_is_not_an_admission_review(webhook: Webhook) -> None:
    status, review = webhook.request("POST", WEBHOOK_PATH, {"hello": "world"})
    assert status == 200
    assert review["response"]["allowed"] is False


def test_deny_policy_and_data_changes_and_reads(webhook: Webhook) -> None:
    for method, path, body in [
        ("PUT", "/v1/policies/open", None),
        ("DELETE", "/v1/policies/admission/admission.rego", None),
        ("PUT", "/v1/data/data/admission_webhook", {"parameters": {}}),
        ("GET", "/v1/data", None),
        ("GET", "/v1/policies", None),
        ("POST", "/v1/data/ztml/authz/decision", {"input": {}}),
    ]:
        status, _ = webhook.request(method, path, body)
        assert status == 401, f"{method} {path} answered {status}"


def test_allow_the_kubelets_health_probe_on_the_diagnostic_port(webhook: Webhook) -> None:
    # With a certificate, OPA serves the diagnostic port over TLS as well: the Deployment's
    # probes say HTTPS (the kubelet does not verify probe certificates).
    assert _healthy(webhook.diagnostic_port)
    with socket.create_connection(("127.0.0.1", webhook.diagnostic_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert not sock.recv(64).startswith(b"HTTP/1.1 200")


def test_deny_a_client_that_does_not_trust_the_webhooks_ca(
    webhook: Webhook, tmp_path: Path
) -> None:
    other = serving_certificate(tmp_path / "other-home", HOST)
    (tmp_path / "other-ca.crt").write_text(other.ca_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        webhook.request(
            "POST", WEBHOOK_PATH, _review("good-service"), ca_file=tmp_path / "other-ca.crt"
        )


def test_deny_logs_the_decision_without_env_values(webhook: Webhook) -> None:
    review = _review("bad-secret-env", operation="UPDATE")
    review["request"]["oldObject"] = review["request"]["object"]
    annotations = {"kubectl.kubernetes.io/last-applied-configuration": '{"value": "hunter2"}'}
    review["request"]["object"]["metadata"]["annotations"] = annotations
    _, answer = webhook.request("POST", WEBHOOK_PATH, review)
    assert answer["response"]["allowed"] is False
    assert "DB_PASSWORD" in answer["response"]["status"]["message"]
    deadline = time.monotonic() + 15
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [line for line in webhook.decision_lines() if "uid-bad-secret-env" in line]
        if lines:
            break
        time.sleep(0.1)
    assert lines, f"no decision log line:\n{webhook.log_path.read_text()[-3000:]}"
    (line,) = lines
    event = json.loads(line)
    assert "hunter2" not in line
    assert "/input/request/oldObject" in event["erased"]
    assert any(p.endswith("/env/0/value") for p in event["erased"]), event["erased"]
    assert event["path"] == "ztml/admission/webhook/response"
    assert event["result"]["response"]["allowed"] is False
