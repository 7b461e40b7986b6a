"""The PostgreSQL backend against a real server started by the test setup."""

from __future__ import annotations

import socket
from typing import Any

import psycopg
import pytest

from service.keys.store import Signer, TrustStore
from service.ledger import (
    BackendError,
    LedgerIntegrityError,
    LedgerNotFoundError,
    NotRegisteredError,
    open_ledger,
)
from service.ledger.storage.postgres import PostgresBackend
from service.toolchain.postgres import fresh_database

pytestmark = [pytest.mark.system, pytest.mark.postgres]


def test_postgres_url_selects_postgres(postgres_url: str) -> None:
    with open_ledger(fresh_database(postgres_url, "select_backend")) as ledger:
        assert isinstance(ledger.backend, PostgresBackend)


def test_postgres_ledger_round_trip(
    postgres_url: str,
    trainer: Signer,
    approver: Signer,
    trust: TrustStore,
    register_model: Any,
    digest_of: Any,
) -> None:
    url = fresh_database(postgres_url, "round_trip")
    with open_ledger(url) as ledger:
        register_model(ledger, trainer, 1)
        ledger.approve(digest_of(1), signer=approver, comment="ok")
        with pytest.raises(NotRegisteredError):
            ledger.approve(digest_of(2), signer=approver)
    with open_ledger(url, create=False) as ledger:
        assert ledger.verify(trust).models == {digest_of(1): "approved"}


def test_postgres_tampering_is_detected(
    postgres_url: str, trainer: Signer, trust: TrustStore, register_model: Any
) -> None:
    url = fresh_database(postgres_url, "tamper")
    with open_ledger(url) as ledger:
        register_model(ledger, trainer, 1)
        register_model(ledger, trainer, 2)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ztml_ledger SET record = replace(record, '0123abc', 'evil00') WHERE seq = 1"
        )
    with open_ledger(url) as ledger, pytest.raises(LedgerIntegrityError) as caught:
        ledger.verify(trust)
    assert caught.value.position == "seq 1"


def test_missing_postgres_table_is_not_created_when_reading(postgres_url: str) -> None:
    with pytest.raises(LedgerNotFoundError, match="ztml ledger init"):
        open_ledger(fresh_database(postgres_url, "empty"), create=False)


def test_unreachable_server_is_a_backend_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BackendError, match="Cannot open ledger") as caught:
        open_ledger(f"postgresql://postgres:hunter2@127.0.0.1:{port}/nope")
    assert "hunter2" not in str(caught.value)
