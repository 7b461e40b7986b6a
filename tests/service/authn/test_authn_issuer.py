"""The local issuer: key and trust file creation, token issuance limits."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.authn import (
    IssuerConfigError,
    IssuerTrust,
    JWTVerifier,
    TokenIssueError,
    ensure_local_issuer,
    issue_token,
)
from service.keys.store import Signer


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    return tmp_path


def local_token(home: Path, **overrides: object) -> str:
    signer = Signer.from_file(home / "keys" / "issuer.key", identity="ztml-local")
    args: dict[str, object] = {
        "issuer": "ztml-local",
        "audience": "ztml-model-api",
        "sub": "alice",
        "roles": ["predictor"],
        "tenant": "demo",
        "scopes": ["predict"],
        "ttl_seconds": 60,
    }
    args.update(overrides)
    return issue_token(signer, **args)  # type: ignore[arg-type]


def test_local_issuer_writes_private_trust_file(home: Path) -> None:
    trust = ensure_local_issuer(home)
    path = home / "issuers.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["audience"] == "ztml-model-api"
    assert data["issuers"][0]["iss"] == "ztml-local"
    (kid,) = trust.keys
    assert data["issuers"][0]["keys"][0]["kid"] == kid
    assert kid.startswith("ed25519:")


def test_local_issuer_tokens_verify_after_reload(home: Path) -> None:
    ensure_local_issuer(home)
    verifier = JWTVerifier(IssuerTrust.load(home / "issuers.json"))
    assert verifier.verify(f"Bearer {local_token(home)}").tenant == "demo"


def test_local_issuer_is_idempotent_and_keeps_other_keys(home: Path) -> None:
    first = ensure_local_issuer(home)
    other = Signer(identity="ops", private_key=Ed25519PrivateKey.generate())
    from service.authn import TrustedKey

    extra = TrustedKey(kid=other.key_id, alg="EdDSA", iss="ops", public_key=other.public_key)
    first.with_key(extra).save(home / "issuers.json")
    again = ensure_local_issuer(home)
    assert set(again.keys) == set(first.keys) | {other.key_id}


def test_trust_file_binding_local_key_to_other_issuer_is_refused(home: Path) -> None:
    trust = ensure_local_issuer(home)
    data = trust.to_dict()
    data["issuers"][0]["iss"] = "someone-else"
    (home / "issuers.json").write_text(json.dumps(data))
    with pytest.raises(IssuerConfigError, match="must be 'ztml-local'"):
        ensure_local_issuer(home)


def test_trust_file_with_mismatched_kid_is_refused(home: Path) -> None:
    data = ensure_local_issuer(home).to_dict()
    data["issuers"][0]["keys"][0]["kid"] = "ed25519:0000000000000000"
    (home / "issuers.json").write_text(json.dumps(data))
    with pytest.raises(IssuerConfigError, match="does not match its key"):
        IssuerTrust.load(home / "issuers.json")


@pytest.mark.parametrize("alg", ["HS256", "RS256", "none"])
def test_trust_file_with_other_algorithms_is_refused(home: Path, alg: str) -> None:
    data = ensure_local_issuer(home).to_dict()
    data["issuers"][0]["keys"][0]["alg"] = alg
    (home / "issuers.json").write_text(json.dumps(data))
    with pytest.raises(IssuerConfigError, match="only EdDSA, ES256"):
        IssuerTrust.load(home / "issuers.json")


def test_trust_file_with_duplicate_kid_is_refused(home: Path) -> None:
    data = ensure_local_issuer(home).to_dict()
    data["issuers"].append({"iss": "copy", "keys": data["issuers"][0]["keys"]})
    (home / "issuers.json").write_text(json.dumps(data))
    with pytest.raises(IssuerConfigError, match="appears twice"):
        IssuerTrust.load(home / "issuers.json")


def test_missing_trust_file_names_the_fix(home: Path) -> None:
    with pytest.raises(IssuerConfigError, match="ztml token issue"):
        IssuerTrust.load(home / "issuers.json")


def test_invalid_json_trust_file_is_refused(home: Path) -> None:
    (home / "issuers.json").write_text("{not json")
    with pytest.raises(IssuerConfigError, match="not valid JSON"):
        IssuerTrust.load(home / "issuers.json")


@pytest.mark.parametrize("ttl", [0, -5, 8 * 24 * 3600])
def test_out_of_range_ttl_is_refused(home: Path, ttl: int) -> None:
    ensure_local_issuer(home)
    with pytest.raises(TokenIssueError, match="ttl_seconds"):
        local_token(home, ttl_seconds=ttl)


def test_roles_as_a_single_string_is_refused(home: Path) -> None:
    ensure_local_issuer(home)
    with pytest.raises(TokenIssueError, match="roles must be a list"):
        local_token(home, roles="admin")


def test_empty_subject_is_refused(home: Path) -> None:
    ensure_local_issuer(home)
    with pytest.raises(TokenIssueError, match="non-empty"):
        local_token(home, sub="  ")


def test_a_local_token_verifies_against_the_local_issuer(tmp_path):
    from service.authn import JWTVerifier
    from service.authn.issuer import ensure_local_issuer, issue_local_token

    trust = ensure_local_issuer(tmp_path)
    token = issue_local_token(
        tmp_path, sub="ada", roles=("analyst",), tenant="demo", scopes=("predict",), ttl_seconds=60
    )
    claims = JWTVerifier(trust).verify(f"Bearer {token}")
    assert (claims.sub, claims.roles, claims.tenant, claims.scopes) == (
        "ada",
        ("analyst",),
        "demo",
        ("predict",),
    )
