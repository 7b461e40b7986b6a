"""Attacks on the bearer-token verifier: every forged or malformed token is rejected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from service.authn import AuthenticationError, IssuerTrust, JWTVerifier, TrustedKey, issue_token
from service.authn.verifier import MAX_TOKEN_BYTES
from service.keys.store import Signer

ISS = "ztml-local"
AUD = "ztml-model-api"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(payload).encode())
    return f"{head}.{body}.{b64url(signature)}"


@pytest.fixture
def signer() -> Signer:
    return Signer(identity=ISS, private_key=Ed25519PrivateKey.generate())


@pytest.fixture
def trust(signer: Signer) -> IssuerTrust:
    key = TrustedKey(kid=signer.key_id, alg="EdDSA", iss=ISS, public_key=signer.public_key)
    return IssuerTrust(audience=AUD, keys={key.kid: key})


@pytest.fixture
def verifier(trust: IssuerTrust) -> JWTVerifier:
    return JWTVerifier(trust, leeway_seconds=30)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "roles": ["predictor"],
        "tenant": "demo",
        "scopes": ["predict"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(signer: Signer, payload: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        payload, signer.private_key, algorithm="EdDSA", headers={"kid": signer.key_id, **header}
    )


def reject(verifier: JWTVerifier, token: str, reason: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(f"Bearer {token}")
    assert info.value.reason == reason
    assert token not in str(info.value)


def test_valid_token_is_accepted(verifier: JWTVerifier, signer: Signer) -> None:
    token = issue_token(
        signer,
        issuer=ISS,
        audience=AUD,
        sub="alice",
        roles=["predictor", "analyst"],
        tenant="demo",
        scopes=["predict", "explain"],
        ttl_seconds=600,
    )
    got = verifier.verify(f"Bearer {token}")
    assert (got.sub, got.roles, got.tenant, got.scopes) == (
        "alice",
        ("predictor", "analyst"),
        "demo",
        ("predict", "explain"),
    )
    assert got.iss == ISS
    assert got.jti
    assert got.subject() == {
        "sub": "alice",
        "roles": ["predictor", "analyst"],
        "tenant": "demo",
        "scopes": ["predict", "explain"],
    }


def test_forged_signature_with_another_key_is_rejected(
    verifier: JWTVerifier, signer: Signer
) -> None:
    attacker = Ed25519PrivateKey.generate()
    token = jwt.encode(claims(), attacker, algorithm="EdDSA", headers={"kid": signer.key_id})
    reject(verifier, token, "bad signature")


def test_alg_none_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    token = craft({"alg": "none", "kid": signer.key_id, "typ": "JWT"}, claims())
    with pytest.raises(AuthenticationError):
        verifier.verify(f"Bearer {token}")
    token_with_sig = craft({"alg": "none", "kid": signer.key_id}, claims(), b"x")
    reject(verifier, token_with_sig, "unsupported algorithm")


def test_hs256_confusion_with_public_key_pem_is_rejected(
    verifier: JWTVerifier, trust: IssuerTrust, signer: Signer
) -> None:
    secret = trust.keys[signer.key_id].public_key_pem.encode()
    head = b64url(json.dumps({"alg": "HS256", "kid": signer.key_id, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims()).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    reject(verifier, f"{head}.{body}.{b64url(mac)}", "unsupported algorithm")


def test_rs256_with_attacker_key_and_same_kid_is_rejected(
    verifier: JWTVerifier, signer: Signer
) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), attacker, algorithm="RS256", headers={"kid": signer.key_id})
    reject(verifier, token, "unsupported algorithm")


def test_es256_token_for_an_eddsa_key_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), attacker, algorithm="ES256", headers={"kid": signer.key_id})
    reject(verifier, token, "algorithm does not match key")


def test_es256_key_is_accepted_when_configured(trust: IssuerTrust) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    key = TrustedKey(kid="ops-es256", alg="ES256", iss="ops", public_key=private.public_key())
    verifier = JWTVerifier(trust.with_key(key))
    token = jwt.encode(claims(iss="ops"), private, algorithm="ES256", headers={"kid": "ops-es256"})
    assert verifier.verify(f"Bearer {token}").iss == "ops"


def test_token_of_one_issuer_with_another_issuers_iss_is_rejected(trust: IssuerTrust) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    key = TrustedKey(kid="ops-es256", alg="ES256", iss="ops", public_key=private.public_key())
    verifier = JWTVerifier(trust.with_key(key))
    token = jwt.encode(claims(iss=ISS), private, algorithm="ES256", headers={"kid": "ops-es256"})
    reject(verifier, token, "wrong issuer")


def test_unknown_key_id_is_rejected(verifier: JWTVerifier) -> None:
    other = Signer(identity="x", private_key=Ed25519PrivateKey.generate())
    reject(verifier, sign(other, claims()), "unknown key id")


def test_missing_key_id_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    token = jwt.encode(claims(), signer.private_key, algorithm="EdDSA")
    reject(verifier, token, "missing key id")


def test_expired_token_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    now = int(time.time())
    token = sign(signer, claims(iat=now - 3600, nbf=now - 3600, exp=now - 120))
    reject(verifier, token, "token expired")


def test_expiry_within_leeway_is_accepted(verifier: JWTVerifier, signer: Signer) -> None:
    now = int(time.time())
    token = sign(signer, claims(iat=now - 600, nbf=now - 600, exp=now - 5))
    assert verifier.verify(f"Bearer {token}").sub == "alice"


def test_not_yet_valid_token_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    now = int(time.time())
    token = sign(signer, claims(nbf=now + 3600, exp=now + 7200))
    reject(verifier, token, "token not yet valid")


def test_token_issued_in_the_future_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    now = int(time.time())
    token = sign(signer, claims(iat=now + 3600, exp=now + 7200))
    reject(verifier, token, "token not yet valid")


def test_wrong_audience_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    reject(verifier, sign(signer, claims(aud="another-api")), "wrong audience")


def test_wrong_issuer_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    reject(verifier, sign(signer, claims(iss="evil")), "wrong issuer")


@pytest.mark.parametrize("claim", ["sub", "exp", "iat", "nbf", "aud", "iss"])
def test_missing_registered_claim_is_rejected(
    verifier: JWTVerifier, signer: Signer, claim: str
) -> None:
    reject(verifier, sign(signer, claims(**{claim: None})), f"missing claim {claim}")


@pytest.mark.parametrize("claim", ["tenant", "roles"])
def test_missing_custom_claim_is_rejected(
    verifier: JWTVerifier, signer: Signer, claim: str
) -> None:
    reject(verifier, sign(signer, claims(**{claim: None})), f"missing claim {claim}")


@pytest.mark.parametrize("roles", ["admin", [1, 2], {"admin": True}, [""], [["admin"]]])
def test_roles_not_a_list_of_strings_is_rejected(
    verifier: JWTVerifier, signer: Signer, roles: object
) -> None:
    reject(verifier, sign(signer, claims(roles=roles)), "claim roles must be a list of strings")


def test_scopes_not_a_list_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    reject(
        verifier, sign(signer, claims(scopes="predict")), "claim scopes must be a list of strings"
    )


@pytest.mark.parametrize("tenant", [7, "", ["demo"]])
def test_tenant_not_a_string_is_rejected(
    verifier: JWTVerifier, signer: Signer, tenant: object
) -> None:
    reject(verifier, sign(signer, claims(tenant=tenant)), "claim tenant must be a non-empty string")


def test_sub_not_a_string_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    with pytest.raises(AuthenticationError):
        verifier.verify(f"Bearer {sign(signer, claims(sub=42))}")


def test_tampered_payload_with_original_signature_is_rejected(
    verifier: JWTVerifier, signer: Signer
) -> None:
    head, _, sig = sign(signer, claims()).split(".")
    forged_body = b64url(json.dumps(claims(roles=["admin"], tenant="acme")).encode())
    reject(verifier, f"{head}.{forged_body}.{sig}", "bad signature")


def test_tampered_header_with_original_signature_is_rejected(
    verifier: JWTVerifier, signer: Signer
) -> None:
    _, body, sig = sign(signer, claims()).split(".")
    head = b64url(json.dumps({"alg": "EdDSA", "kid": signer.key_id, "x": 1}).encode())
    reject(verifier, f"{head}.{body}.{sig}", "bad signature")


def test_critical_header_extension_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    token = sign(signer, claims(), crit=["urn:x"], **{"urn:x": 1})
    with pytest.raises(AuthenticationError):
        verifier.verify(f"Bearer {token}")


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b", "a.b.c", "...", "a.b.c.d", "eyJ.eyJ.", "ü.ä.ö", "a b.c.d", "YQ.YQ.YQ"],
)
def test_garbage_token_is_rejected(verifier: JWTVerifier, token: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(f"Bearer {token}")
    assert info.value.reason in {"malformed token", "authorization header must be 'Bearer <token>'"}


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_random_header_values_are_rejected_cleanly(header: str) -> None:
    signer = Signer(identity=ISS, private_key=Ed25519PrivateKey.generate())
    key = TrustedKey(kid=signer.key_id, alg="EdDSA", iss=ISS, public_key=signer.public_key)
    verifier = JWTVerifier(IssuerTrust(audience=AUD, keys={key.kid: key}))
    with pytest.raises(AuthenticationError):
        verifier.verify(header)


@pytest.mark.parametrize(
    "form", ["{token}", "Token {token}", "Basic {token}", "Bearer", "Bearer ", "Bearer: {token}"]
)
def test_token_in_wrong_header_form_is_rejected(
    verifier: JWTVerifier, signer: Signer, form: str
) -> None:
    token = sign(signer, claims())
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(form.format(token=token))
    assert token not in str(info.value)


def test_missing_header_is_rejected(verifier: JWTVerifier) -> None:
    with pytest.raises(AuthenticationError, match="missing bearer token"):
        verifier.verify(None)


def test_lowercase_bearer_scheme_is_accepted(verifier: JWTVerifier, signer: Signer) -> None:
    assert verifier.verify(f"bearer {sign(signer, claims())}").sub == "alice"


def test_oversized_token_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    token = sign(signer, claims(padding="x" * MAX_TOKEN_BYTES))
    reject(verifier, token, "token too large")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["sub", "roles", "tenant", "scopes", "exp", "nbf", "iat", "aud", "iss", "jti"]
        ),
        json_values,
        max_size=10,
    )
)
def test_validly_signed_odd_claims_never_crash_the_verifier(overrides: dict[str, Any]) -> None:
    signer = Signer(identity=ISS, private_key=Ed25519PrivateKey.generate())
    key = TrustedKey(kid=signer.key_id, alg="EdDSA", iss=ISS, public_key=signer.public_key)
    verifier = JWTVerifier(IssuerTrust(audience=AUD, keys={key.kid: key}))
    payload = {**claims(), **overrides}
    head = b64url(json.dumps({"alg": "EdDSA", "kid": signer.key_id}).encode())
    body = b64url(json.dumps(payload).encode())
    sig = signer.sign(f"{head}.{body}".encode())
    try:
        got = verifier.verify(f"Bearer {head}.{body}.{b64url(sig)}")
    except AuthenticationError:
        return
    assert isinstance(got.sub, str) and got.sub
    assert isinstance(got.tenant, str) and got.tenant
    assert all(isinstance(r, str) for r in got.roles)
    assert all(isinstance(s, str) for s in got.scopes)


# -- duplicate members: no parser differential with proxies and log pipelines ---------------


def sign_raw(signer: Signer, header_json: str, payload_json: str) -> str:
    """Sign header and claims given as raw JSON text (which may repeat a member)."""
    head = b64url(header_json.encode())
    body = b64url(payload_json.encode())
    return f"{head}.{body}.{b64url(signer.sign(f'{head}.{body}'.encode()))}"


def test_header_with_a_duplicate_member_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    header = f'{{"alg": "EdDSA", "kid": "{signer.key_id}", "kid": "{signer.key_id}"}}'
    reject(
        verifier,
        sign_raw(signer, header, json.dumps(claims())),
        "duplicate member in token header",
    )


def test_header_with_an_escaped_duplicate_alg_is_rejected(
    verifier: JWTVerifier, signer: Signer
) -> None:
    # "\u0061lg" is "alg": a proxy comparing raw member names sees two different ones.
    header = f'{{"alg": "none", "kid": "{signer.key_id}", "\\u0061lg": "EdDSA"}}'
    reject(
        verifier,
        sign_raw(signer, header, json.dumps(claims())),
        "duplicate member in token header",
    )


def test_header_with_a_duplicate_member_in_a_nested_object_is_rejected(
    verifier: JWTVerifier, signer: Signer
) -> None:
    header = f'{{"alg": "EdDSA", "kid": "{signer.key_id}", "x": {{"a": 1, "a": 2}}}}'
    reject(
        verifier,
        sign_raw(signer, header, json.dumps(claims())),
        "duplicate member in token header",
    )


def test_header_without_duplicates_signed_the_same_way_is_accepted(
    verifier: JWTVerifier, signer: Signer
) -> None:
    header = f'{{"alg": "EdDSA", "kid": "{signer.key_id}", "x": {{"a": 1, "A": 2}}}}'
    token = sign_raw(signer, header, json.dumps(claims()))
    assert verifier.verify(f"Bearer {token}").sub == "alice"


def test_claims_with_a_duplicate_sub_are_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    body = json.dumps(claims())[:-1] + ', "sub": "admin"}'
    header = json.dumps({"alg": "EdDSA", "kid": signer.key_id})
    reject(verifier, sign_raw(signer, header, body), "duplicate member in token claims")


# -- clock-skew leeway at its exact boundaries ---------------------------------------------

T0 = 1_800_000_000  # a fixed "now" of the verifier's clock
LEEWAY = 30


def at(trust: IssuerTrust, now: float) -> JWTVerifier:
    return JWTVerifier(trust, leeway_seconds=LEEWAY, clock=lambda: now)


def timed(**times: int) -> dict[str, Any]:
    return claims(**{"iat": T0 - 600, "nbf": T0 - 600, "exp": T0 + 600, **times})


def test_default_leeway_is_30_seconds(trust: IssuerTrust) -> None:
    assert JWTVerifier(trust).leeway_seconds == LEEWAY


def test_token_expired_one_second_less_than_the_leeway_ago_is_accepted(
    trust: IssuerTrust, signer: Signer
) -> None:
    token = sign(signer, timed(exp=T0))
    assert at(trust, T0 + LEEWAY - 1).verify(f"Bearer {token}").sub == "alice"


def test_token_expired_exactly_the_leeway_ago_is_rejected(
    trust: IssuerTrust, signer: Signer
) -> None:
    reject(at(trust, T0 + LEEWAY), sign(signer, timed(exp=T0)), "token expired")


def test_token_expired_one_second_past_the_leeway_is_rejected(
    trust: IssuerTrust, signer: Signer
) -> None:
    reject(at(trust, T0 + LEEWAY + 1), sign(signer, timed(exp=T0)), "token expired")


def test_token_not_valid_before_exactly_the_leeway_from_now_is_accepted(
    trust: IssuerTrust, signer: Signer
) -> None:
    token = sign(signer, timed(nbf=T0 + LEEWAY))
    assert at(trust, T0).verify(f"Bearer {token}").sub == "alice"


def test_token_not_valid_before_one_second_past_the_leeway_is_rejected(
    trust: IssuerTrust, signer: Signer
) -> None:
    reject(at(trust, T0), sign(signer, timed(nbf=T0 + LEEWAY + 1)), "token not yet valid")


def test_token_issued_exactly_the_leeway_ahead_is_accepted(
    trust: IssuerTrust, signer: Signer
) -> None:
    token = sign(signer, timed(iat=T0 + LEEWAY, nbf=T0))
    assert at(trust, T0).verify(f"Bearer {token}").sub == "alice"


def test_token_issued_one_second_past_the_leeway_ahead_is_rejected(
    trust: IssuerTrust, signer: Signer
) -> None:
    token = sign(signer, timed(iat=T0 + LEEWAY + 1, nbf=T0))
    reject(at(trust, T0), token, "token not yet valid")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["1800000000", True, [T0]])
def test_time_claim_that_is_not_a_number_is_rejected(
    trust: IssuerTrust, signer: Signer, claim: str, value: object
) -> None:
    reject(at(trust, T0), sign(signer, timed(**{claim: value})), f"claim {claim} must be a number")


def test_negative_leeway_is_refused(trust: IssuerTrust) -> None:
    with pytest.raises(ValueError, match="leeway"):
        JWTVerifier(trust, leeway_seconds=-1)


# -- aud as a list: only the service's own audience, alone ---------------------------------


def test_audience_as_a_one_element_list_is_accepted(verifier: JWTVerifier, signer: Signer) -> None:
    assert verifier.verify(f"Bearer {sign(signer, claims(aud=[AUD]))}").sub == "alice"


@pytest.mark.parametrize(
    "aud", [[AUD, "billing-api"], ["billing-api", AUD], [AUD, AUD], ["billing-api"]]
)
def test_audience_list_naming_another_audience_is_rejected(
    verifier: JWTVerifier, signer: Signer, aud: list[str]
) -> None:
    reject(verifier, sign(signer, claims(aud=aud)), "wrong audience")


def test_empty_audience_list_is_rejected(verifier: JWTVerifier, signer: Signer) -> None:
    reject(verifier, sign(signer, claims(aud=[])), "missing claim aud")
