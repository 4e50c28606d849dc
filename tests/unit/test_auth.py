"""The JWT matrix of PROTOCOL.md against the pure verifier."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.auth import (
    AUTH_FAILURE_REASONS,
    AuthConfigError,
    AuthError,
    CountingVerifier,
    JwtVerifier,
    Principal,
    glob_to_regex,
    mint,
)

SECRET = "s" * 48
NOW = time.time()  # at import: a busy machine's suite can reach these tests many minutes later
DAY = 86_400


def hs(
    claims: dict[str, object], key: str = SECRET, alg: str = "HS256", headers: dict | None = None
) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def good(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "exp": int(NOW) + DAY, "scope": "telemetry:read", **extra}


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_valid_token() -> None:
    p = JwtVerifier("HS256", SECRET).verify(hs(good(devices=["d1", "plant-*"])))
    assert p.sub == "alice" and p.has("telemetry:read") and not p.has("alerts:read")
    assert p.sees("d1") and p.sees("plant-7") and not p.sees("d2")


def unsigned(claims: dict[str, object]) -> str:
    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


BAD = [
    ("", "invalid_token", "missing"),
    ("not.a.jwt", "invalid_token", "malformed"),
    (hs(good(), key="x" * 48), "invalid_token", "invalid_signature"),
    (hs(good(exp=int(NOW) - 10)), "token_expired", "expired"),
    (hs({"sub": "alice", "scope": ""}), "invalid_token", "missing_claim"),  # no exp
    (hs({"exp": int(NOW) + DAY}), "invalid_token", "missing_claim"),  # no sub
    (hs(good(sub="")), "invalid_token", "invalid_claim"),
    (hs(good(nbf=int(NOW) + DAY)), "invalid_token", "not_yet_valid"),
    # HS512 is not configured (a key long enough for it, so pyjwt does not warn)
    (hs(good(), key=SECRET * 2, alg="HS512"), "invalid_token", "algorithm"),
    (hs(good(), headers={"crit": ["exp"]}), "invalid_token", "malformed"),
    (hs(good(scope=5)), "invalid_token", "invalid_claim"),
    (hs(good(devices=[1])), "invalid_token", "invalid_claim"),
    (unsigned(good()), "invalid_token", "algorithm"),
]


@pytest.mark.parametrize(("token", "error", "reason"), BAD)
def test_rejections(token: str, error: str, reason: str) -> None:
    with pytest.raises(AuthError) as err:
        JwtVerifier("HS256", SECRET).verify(token)
    assert err.value.error == error
    assert err.value.reason == reason  # what bridge_auth_failures_total{reason} counts
    assert (SECRET not in err.value.message and token[:20] not in err.value.message) or not token


def test_counting_verifier_counts_failures_by_reason() -> None:
    failures: Counter[str] = Counter()
    verifier = CountingVerifier.wrapping(JwtVerifier("HS256", SECRET, leeway_s=5), failures)
    assert verifier.leeway_s == 5  # the wrapped verifier's settings
    assert verifier.verify(hs(good())).sub == "alice"
    for token, _error, _reason in BAD:
        with pytest.raises(AuthError):
            verifier.verify(token)
    assert failures == Counter(reason for _token, _error, reason in BAD)
    assert set(failures) <= set(AUTH_FAILURE_REASONS)


def raw_hs(claims_json: str, key: str = SECRET) -> str:
    """HS256 over exactly this JSON (PyJWT's encoder refuses some of the claims below)."""
    import hashlib
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(claims_json.encode())
    return f"{head}.{b64(hmac.new(key.encode(), head.encode(), hashlib.sha256).digest())}"


SOON = int(NOW) + 600
_ALICE = '"sub":"alice","scope":"admin"'
# Correctly signed tokens whose claims have the wrong type or size: each a 401 naming the
# claim, never an exception the front would turn into a 500.
BAD_CLAIMS = [
    (f'{{{_ALICE},"exp":"{SOON}"}}', "invalid_token", "exp claim must be a number"),
    (f'{{{_ALICE},"exp":"soon"}}', "invalid_token", "exp claim must be a number"),
    (f'{{{_ALICE},"exp":[{SOON}]}}', "invalid_token", "exp claim must be a number"),
    (f'{{{_ALICE},"exp":true}}', "invalid_token", "exp claim must be a number"),
    (f'{{{_ALICE},"exp":{"9" * 400}}}', "invalid_token", "exp claim must be a number"),
    (f'{{{_ALICE},"exp":1e400}}', "invalid_token", "exp claim must be a number"),
    (f'{{{_ALICE},"exp":NaN}}', "invalid_token", "exp claim must be a number"),
    (f'{{{_ALICE},"exp":null}}', "invalid_token", "required claim 'exp'"),
    (f'{{{_ALICE},"exp":{SOON},"nbf":"{SOON - 900}"}}', "invalid_token", "nbf claim"),
    (f'{{{_ALICE},"exp":{SOON},"nbf":{"9" * 400}}}', "invalid_token", "nbf claim"),
    (f'{{{_ALICE},"exp":{SOON},"nbf":{SOON}}}', "invalid_token", "nbf in the future"),
    (f'{{{_ALICE},"exp":{SOON},"iat":"{SOON - 900}"}}', "invalid_token", "iat claim"),
    (f'{{{_ALICE},"exp":{SOON},"iat":{{}}}}', "invalid_token", "iat claim"),
    (f'{{{_ALICE},"exp":{SOON},"iat":{SOON}}}', "invalid_token", "iat in the future"),
    (f'{{{_ALICE},"exp":{int(NOW) - 5}}}', "token_expired", "expired"),
    (f'{{"sub":"alice","scope":5,"exp":{SOON}}}', "invalid_token", "scope claim"),
    (f'{{"sub":"alice","scope":{{"a":1}},"exp":{SOON}}}', "invalid_token", "scope claim"),
    (f'{{"sub":"alice","scp":[1],"exp":{SOON}}}', "invalid_token", "scope claim"),
    (f'{{{_ALICE},"devices":5,"exp":{SOON}}}', "invalid_token", "devices claim"),
    (f'{{{_ALICE},"devices":{{"d1":true}},"exp":{SOON}}}', "invalid_token", "devices claim"),
    (f'{{{_ALICE},"devices":[1],"exp":{SOON}}}', "invalid_token", "devices claim"),
    (f'{{"scope":"admin","exp":{SOON}}}', "invalid_token", "required claim 'sub'"),
    (f'{{"sub":5,"scope":"admin","exp":{SOON}}}', "invalid_token", "sub claim"),
    (f'{{"sub":["alice"],"scope":"admin","exp":{SOON}}}', "invalid_token", "sub claim"),
    (f'{{"sub":"{"a" * 300}","scope":"admin","exp":{SOON}}}', "invalid_token", "sub claim"),
    (f'{{{_ALICE},"exp":{SOON},"jti":5}}', "invalid_token", "jti claim"),
    ("[1, 2]", "invalid_token", "well-formed"),
    ('"alice"', "invalid_token", "well-formed"),
    (f'{{{_ALICE},"exp":{SOON},"pad":"{"x" * 9000}"}}', "invalid_token", "longer than 8192"),
]


@pytest.mark.parametrize(("claims", "error", "words"), BAD_CLAIMS)
def test_claims_of_the_wrong_type_or_size(claims: str, error: str, words: str) -> None:
    with pytest.raises(AuthError) as err:
        JwtVerifier("HS256", SECRET).verify(raw_hs(claims), now=NOW)
    assert err.value.error == error and words in err.value.message
    assert err.value.reason in AUTH_FAILURE_REASONS and err.value.reason != "invalid"


@pytest.mark.parametrize(
    "claims",
    [
        f'{{{_ALICE},"exp":{SOON}.5}}',  # NumericDate may be fractional
        f'{{{_ALICE},"exp":{SOON},"nbf":{int(NOW) - 60},"iat":{int(NOW) - 60}}}',
        f'{{{_ALICE},"exp":{SOON},"nbf":null}}',  # null is as good as absent
    ],
)
def test_numeric_dates_that_are_fine(claims: str) -> None:
    assert JwtVerifier("HS256", SECRET).verify(raw_hs(claims), now=NOW).sub == "alice"


def test_audience_and_issuer_when_configured() -> None:
    v = JwtVerifier("HS256", SECRET, audience="bridge", issuer="https://idp.example")
    ok = hs(good(aud="bridge", iss="https://idp.example"))
    assert v.verify(ok).sub == "alice"
    for claims in (
        good(aud="other", iss="https://idp.example"),
        good(iss="https://idp.example"),
        good(aud="bridge", iss="https://idp.example.evil"),
        good(aud="bridge", iss="https://idp"),  # issuer substring
    ):
        with pytest.raises(AuthError):
            v.verify(hs(claims))


def test_rs256_and_algorithm_confusion(rsa_keys: tuple[str, str]) -> None:
    private, public = rsa_keys
    v = JwtVerifier("RS256", public)
    assert v.verify(jwt.encode(good(), private, algorithm="RS256")).sub == "alice"
    # HS256 signed with the public key as the HMAC secret: the classic confusion attack
    forged = _hmac_with_public(public)
    with pytest.raises(AuthError):
        v.verify(forged)


def _hmac_with_public(public: str) -> str:
    import hashlib
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(good()).encode())
    sig = hmac.new(public.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("HS256", "short"),
        ("RS256", "not a pem"),
        ("none", SECRET),
        ("HS256", "-----BEGIN PUBLIC KEY-----" + "x" * 40),
    ],
)
def test_bad_configuration_is_refused_at_start(alg: str, key: str) -> None:
    with pytest.raises(AuthConfigError):
        JwtVerifier(alg, key)


def test_expiry_against_the_given_clock() -> None:
    now = time.time()
    token = hs(good(exp=int(now) + 30))
    v = JwtVerifier("HS256", SECRET)
    assert v.verify(token, now=now).expires_at == int(now) + 30
    with pytest.raises(AuthError) as err:
        v.verify(token, now=now + 40)
    assert err.value.error == "token_expired"


def test_admin_implies_every_scope_and_globs_only_expand_star() -> None:
    p = Principal("root", frozenset({"admin"}), devices=("a.b*",))
    assert p.has("commands:write")
    assert p.sees("a.bc") and not p.sees("aXbc")  # '.' is literal
    assert glob_to_regex("x*y").match("x/#/y")  # globs match text; ids are validated elsewhere


def test_mint_round_trip() -> None:
    token = mint(
        key=SECRET, algorithm="HS256", sub="bob", scopes="alerts:read", devices=["d1"], ttl_s=60
    )
    p = JwtVerifier("HS256", SECRET).verify(token)
    assert p.sub == "bob" and p.devices == ("d1",) and p.has("alerts:read")
