"""The service configuration: typed, read once, bad values named at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.app.config import load_config
from service.app.errors import ConfigError


def test_defaults_are_safe(tmp_path: Path) -> None:
    config = load_config({"ZTML_HOME": str(tmp_path)})
    assert config.ledger_url == str(tmp_path / "ledger.db")
    assert config.trust_dir == tmp_path / "keys"
    assert config.opa_url.startswith("http://127.0.0.1")
    assert config.workers == 1 and config.max_body_bytes > 0


def test_monitor_state_stays_in_sqlite_files_unless_a_shared_store_is_named(
    tmp_path: Path,
) -> None:
    config = load_config({"ZTML_HOME": str(tmp_path)})
    assert config.monitor_url is None
    assert config.monitor_store == tmp_path / "run" / "monitor.db"
    assert config.review_store == tmp_path / "review.db"
    shared = "postgresql://?service=ztml"
    config = load_config({"ZTML_HOME": str(tmp_path), "ZTML_MONITOR_URL": shared})
    assert config.monitor_store == config.review_store == shared


def test_a_shared_store_of_another_kind_is_refused_without_its_password(tmp_path: Path) -> None:
    env = {"ZTML_HOME": str(tmp_path), "ZTML_MONITOR_URL": "redis://:hunter2@cache:6379/0"}
    with pytest.raises(ConfigError, match="ZTML_MONITOR_URL") as caught:
        load_config(env)
    assert "hunter2" not in str(caught.value)


def test_oms_signers_follow_the_trust_directory_unless_named(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    config = load_config({"ZTML_HOME": str(tmp_path), "ZTML_TRUST_DIR": str(trust)})
    assert config.oms_signers_dir == trust / "oms_signers"
    named = tmp_path / "signers"
    env = {"ZTML_HOME": str(tmp_path), "ZTML_OMS_SIGNERS_DIR": str(named)}
    assert load_config(env).oms_signers_dir == named


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ZTML_WORKERS", "zero"),
        ("ZTML_WORKERS", "0"),
        ("ZTML_MAX_BODY_BYTES", "-5"),
        ("ZTML_RISK_TIER", "extreme"),
        ("ZTML_MODEL_DIGEST", "md5:abc"),
        ("ZTML_OPA_URL", "ftp://opa"),
        ("ZTML_AUDIT_STDOUT", "maybe"),
        ("ZTML_SQUEEZE_FPR", "nan"),
        ("ZTML_TENANT", "../etc"),
        ("ZTML_REQUEST_TIMEOUT_MS", "30000"),  # not below BentoML's own 30 s timeout
        ("ZTML_LEDGER_WITNESS_KEYS", "w.example/1+00000000+AAAA"),
    ],
)
def test_bad_value_is_named(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config({"ZTML_HOME": str(tmp_path), name: value})


def test_request_deadline_ends_before_bentomls_timeout(tmp_path: Path) -> None:
    from service.app.config import BENTOML_TIMEOUT_SECONDS

    config = load_config({"ZTML_HOME": str(tmp_path)})
    assert 0 < config.request_timeout_seconds < BENTOML_TIMEOUT_SECONDS
    config = load_config({"ZTML_HOME": str(tmp_path), "ZTML_REQUEST_TIMEOUT_MS": "1500"})
    assert config.request_timeout_seconds == 1.5


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config({"ZTML_HOME": str(tmp_path)})
    with pytest.raises(AttributeError):
        config.workers = 4  # type: ignore[misc]


def test_opa_tls_needs_all_three_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ZTML_OPA_KEY_FILE"):
        load_config(
            {
                "ZTML_HOME": str(tmp_path),
                "ZTML_OPA_URL": "https://127.0.0.1:8181",
                "ZTML_OPA_CA_FILE": "ca.crt",
                "ZTML_OPA_CERT_FILE": "tls.crt",
            }
        )


def test_opa_tls_needs_an_https_url(tmp_path: Path) -> None:
    files = {
        "ZTML_OPA_CA_FILE": "ca.crt",
        "ZTML_OPA_CERT_FILE": "tls.crt",
        "ZTML_OPA_KEY_FILE": "tls.key",
    }
    with pytest.raises(ConfigError, match="https"):
        load_config({"ZTML_HOME": str(tmp_path), "ZTML_OPA_URL": "http://127.0.0.1:1", **files})
    config = load_config(
        {"ZTML_HOME": str(tmp_path), "ZTML_OPA_URL": "https://127.0.0.1:1", **files}
    )
    assert config.opa_tls_files == (Path("ca.crt"), Path("tls.crt"), Path("tls.key"))


def test_witness_keys_are_read_and_default_to_none(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from service.chain.tlog import witness_verifier

    assert load_config({"ZTML_HOME": str(tmp_path)}).ledger_witnesses == ()
    witnesses = [
        witness_verifier(f"w.example/{n}", Ed25519PrivateKey.generate().public_key())
        for n in (1, 2)
    ]
    env = {
        "ZTML_HOME": str(tmp_path),
        "ZTML_LEDGER_WITNESS_KEYS": " ".join(w.vkey() for w in witnesses),
    }
    assert load_config(env).ledger_witnesses == tuple(witnesses)
