"""Mutual TLS with the development CA: a client without a certificate cannot connect."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from service.authn.tls import DevCertificates, make_dev_ca


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return make_dev_ca(tmp_path_factory.mktemp("tls") / "ca")


@pytest.fixture
def server(certs: DevCertificates) -> Iterator[int]:
    """A one-thread TLS echo server requiring client certificates; yields its port."""
    context = certs.server_context()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
                raw.settimeout(5)
            except (TimeoutError, OSError):
                continue
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.sendall(conn.recv(64))
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    listener.close()
    thread.join(timeout=5)


def talk(
    certs: DevCertificates,
    port: int,
    *,
    with_certificate: bool,
    client: DevCertificates | None = None,
) -> bytes:
    """Connect trusting ``certs``' CA, presenting ``client``'s certificate (default: certs)."""
    context = certs.client_context(with_certificate=False)
    if with_certificate:
        own = client or certs
        context.load_cert_chain(str(own.client_cert), str(own.client_key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        conn.sendall(b"ping")
        return conn.recv(64)


def test_handshake_with_client_certificate_succeeds(certs: DevCertificates, server: int) -> None:
    assert talk(certs, server, with_certificate=True) == b"ping"


def test_handshake_without_client_certificate_fails(certs: DevCertificates, server: int) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talk(certs, server, with_certificate=False)


def test_client_certificate_from_another_ca_is_refused(
    certs: DevCertificates, server: int, tmp_path: Path
) -> None:
    rogue = make_dev_ca(tmp_path / "rogue")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talk(certs, server, with_certificate=True, client=rogue)


def test_private_keys_are_owner_only(certs: DevCertificates) -> None:
    assert stat.S_IMODE(certs.directory.stat().st_mode) == 0o700
    for key in (certs.ca_key, certs.server_key, certs.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_server_certificate_names_localhost_and_loopback(certs: DevCertificates) -> None:
    cert = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_existing_valid_certificates_are_kept(certs: DevCertificates) -> None:
    before = certs.server_cert.read_bytes()
    assert make_dev_ca(certs.directory).server_cert.read_bytes() == before


def test_default_directory_is_in_ztml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.authn.tls import default_tls_dir

    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    assert default_tls_dir() == tmp_path / "tls"
