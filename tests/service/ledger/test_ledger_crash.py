"""A SIGKILLed appender leaves either its whole record or nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.keys.store import TrustStore
from service.ledger import open_ledger
from service.toolchain.postgres import fresh_database

APPENDER = """
import sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from service.keys.store import Signer
from service.ledger import open_ledger
url, key, run = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])
signer = Signer("trainer@test", Ed25519PrivateKey.from_private_bytes(key))
with open_ledger(url) as ledger:
    for i in range(100000):
        record = ledger.register(
            signer=signer, name="m", version=f"{run}.{i}",
            artifact={"digest": f"sha256:{run:032x}{i:032x}", "format": "bin", "size": i},
            training_data_digest="sha256:" + "d" * 64, code_revision="abc",
            hyperparameters={"blob": "x" * 20000},
            evaluation={"clean_accuracy": 0.9, "robust": []},
        )
        print(record.seq, flush=True)
"""


def _kill_appenders(url: str, kills: int) -> None:
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    ).hex()
    trust = TrustStore.from_public_keys([private.public_key()])
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    for run in range(kills):
        child = subprocess.Popen(
            [sys.executable, "-c", APPENDER, url, raw, str(run)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        last = -1
        for _ in range(rng.randint(3, 25)):
            line = child.stdout.readline()
            assert line, "the appender died on its own"
            last = int(line)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        with open_ledger(url, create=False) as ledger:
            report = ledger.verify(trust)
        # Everything reported is there; at most the append in flight was added as a whole.
        assert last + 1 <= report.count <= last + 2


@pytest.mark.slow
def test_killed_sqlite_appender_leaves_whole_records(tmp_path: Path) -> None:
    _kill_appenders(str(tmp_path / "ledger.db"), kills=4)


@pytest.mark.slow
@pytest.mark.system
@pytest.mark.postgres
def test_killed_postgres_appender_leaves_whole_records(postgres_url: str) -> None:
    _kill_appenders(fresh_database(postgres_url, "crash"), kills=3)
