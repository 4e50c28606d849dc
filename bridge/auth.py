"""JWT authentication and what a token allows (PROTOCOL.md section 3, "Authentication").

Pure: a token and the current time in, a :class:`Principal` or an :class:`AuthError` out.
The algorithm is fixed by configuration, never taken from the token, so ``alg: none`` and
algorithm confusion (an HS256 token signed with the RS256 public key) are refused by PyJWT's
``algorithms=[...]`` check. Tokens are never logged.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import jwt

SCOPES = (
    "telemetry:read",
    "telemetry:write",
    "alerts:read",
    "alerts:write",
    "devices:read",
    "commands:write",
    "admin",
)
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
MIN_HMAC_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 8192
# RFC 7519 NumericDate claims. PyJWT accepts what int() accepts, so "exp": "1767225600" (a
# string) passed its check and then failed a comparison with a float (HTTP 500); checking
# them here, as JSON numbers within datetime's range, keeps every odd value a 401.
NUMERIC_DATES = ("exp", "nbf", "iat")
MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z


# Why a token check failed, as the front counts it (bridge_auth_failures_total{reason}): a
# fixed set, finer than the wire's ``error`` and never anything taken from the token.
AUTH_FAILURE_REASONS = (
    "missing",
    "malformed",
    "algorithm",
    "invalid_signature",
    "expired",
    "not_yet_valid",
    "audience",
    "issuer",
    "missing_claim",
    "invalid_claim",
    "invalid",
)


class AuthError(Exception):
    """A token that does not authenticate; ``error`` is the wire code, ``reason`` one of
    :data:`AUTH_FAILURE_REASONS` (what metrics count)."""

    def __init__(self, error: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.error = error  # "invalid_token" | "token_expired" | "unauthorized"
        self.message = message
        if reason is None:
            reason = "expired" if error == "token_expired" else "invalid"
        self.reason = reason


class AuthConfigError(ValueError):
    """The JWT settings cannot work (missing key, short secret, unknown algorithm)."""


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A device glob where only ``*`` is special (any run of characters)."""
    return re.compile(
        "".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern))
        + r"\Z"
    )


@dataclass(frozen=True)
class Principal:
    """Who is connected and what the token lets them do."""

    sub: str
    scopes: frozenset[str]
    # None: every device; otherwise ids and `*`-globs from the `devices` claim.
    devices: tuple[str, ...] | None = None
    expires_at: float = float("inf")
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    @cached_property
    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(glob_to_regex(p) for p in self.devices or () if "*" in p)

    @cached_property
    def exact_devices(self) -> frozenset[str]:
        return frozenset(p for p in self.devices or () if "*" not in p)

    @property
    def has_globs(self) -> bool:
        return bool(self._patterns)

    @property
    def all_devices(self) -> bool:
        return self.devices is None or "*" in self.devices

    def sees(self, device_id: str) -> bool:
        if self.all_devices or device_id in self.exact_devices:
            return True
        return any(p.match(device_id) for p in self._patterns)


def _parse_scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp", claims.get("scopes", "")))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return frozenset(raw)
    raise AuthError(
        "invalid_token",
        "scope claim must be a space-separated string or a list",
        "invalid_claim",
    )


def check_times(claims: dict[str, Any], now: float, leeway_s: float = 0.0) -> None:
    """``exp`` (required), ``nbf`` and ``iat``: their types, then whether the token is valid
    at ``now``; an :class:`AuthError` naming the claim otherwise."""
    for name in NUMERIC_DATES:
        value = claims.get(name)
        if value is None and name != "exp":
            continue
        if value is None:
            raise AuthError(
                "invalid_token", "token lacks the required claim 'exp'", "missing_claim"
            )
        # the range check also refuses NaN and infinities (every comparison with NaN is false)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not -MAX_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE
        ):
            raise AuthError(
                "invalid_token",
                f"{name} claim must be a number of seconds since 1970 (UTC)",
                "invalid_claim",
            )
    if claims["exp"] <= now - leeway_s:
        raise AuthError("token_expired", "token has expired")
    for name in ("nbf", "iat"):
        if claims.get(name) is not None and claims[name] > now + leeway_s:
            raise AuthError(
                "invalid_token", f"token not valid yet ({name} in the future)", "not_yet_valid"
            )


def _parse_devices(claims: dict[str, Any]) -> tuple[str, ...] | None:
    raw = claims.get("devices")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(d, str) and 0 < len(d) <= 128 for d in raw):
        raise AuthError(
            "invalid_token", "devices claim must be a list of ids or globs", "invalid_claim"
        )
    if len(raw) > 1000:
        raise AuthError(
            "invalid_token", "devices claim lists more than 1000 entries", "invalid_claim"
        )
    return tuple(raw)


@dataclass(frozen=True)
class JwtVerifier:
    algorithm: str
    key: str  # HMAC secret or PEM public key
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 0.0

    def __post_init__(self) -> None:
        if self.algorithm in HMAC_ALGORITHMS:
            if len(self.key.encode()) < MIN_HMAC_SECRET_BYTES:
                raise AuthConfigError(
                    f"BRIDGE_JWT_SECRET must be at least {MIN_HMAC_SECRET_BYTES} bytes for "
                    f"{self.algorithm}; generate one with: "
                    "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
                )
            if "BEGIN" in self.key and "KEY" in self.key:
                raise AuthConfigError(
                    "a PEM key was given as an HMAC secret; set BRIDGE_JWT_ALGORITHM"
                )
        elif self.algorithm in PUBLIC_KEY_ALGORITHMS:
            if "BEGIN" not in self.key:
                raise AuthConfigError(
                    f"{self.algorithm} needs BRIDGE_JWT_PUBLIC_KEY "
                    "(a PEM public key or a path to one)"
                )
        else:
            raise AuthConfigError(
                f"unsupported BRIDGE_JWT_ALGORITHM {self.algorithm!r}; use one of "
                f"{', '.join(HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS)}"
            )

    def verify(self, token: str, now: float | None = None) -> Principal:
        if not isinstance(token, str) or not token:
            raise AuthError("invalid_token", "token missing or malformed", "missing")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(
                "invalid_token", f"token longer than {MAX_TOKEN_CHARS} characters", "malformed"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "token is not a JWT", "malformed") from None
        if "crit" in header:
            # RFC 7515 4.1.11: we understand no critical extensions, so we must refuse.
            raise AuthError(
                "invalid_token", "token uses unsupported critical header parameters", "malformed"
            )
        if header.get("alg") != self.algorithm:
            raise AuthError("invalid_token", "token algorithm not accepted", "algorithm")
        options: Any = {
            "require": ["exp", "sub"],
            "verify_aud": self.audience is not None,
            # the times are checked by check_times(), which also checks their types
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        }
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options=options,
            )
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_token", *_reason(exc)) from None
        check_times(claims, time.time() if now is None else now, self.leeway_s)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            raise AuthError(
                "invalid_token", "sub claim must be a non-empty string", "invalid_claim"
            )
        return Principal(
            sub=sub,
            scopes=_parse_scopes(claims),
            devices=_parse_devices(claims),
            expires_at=float(claims["exp"]),
            claims=claims,
        )


@dataclass(frozen=True)
class CountingVerifier(JwtVerifier):
    """A :class:`JwtVerifier` that counts its failures by reason into ``failures``: the
    front verifies every token (handshake, ``auth`` message, REST) through one of these, so
    no place that checks a token can be left out of ``bridge_auth_failures_total``."""

    failures: Counter[str] = field(default_factory=Counter, compare=False, repr=False)

    @classmethod
    def wrapping(cls, verifier: JwtVerifier, failures: Counter[str]) -> CountingVerifier:
        settings = {f.name: getattr(verifier, f.name) for f in fields(JwtVerifier)}
        return cls(**settings, failures=failures)

    def verify(self, token: str, now: float | None = None) -> Principal:
        try:
            return super().verify(token, now)
        except AuthError as exc:
            self.failures[exc.reason] += 1
            raise


def _reason(exc: Exception) -> tuple[str, str]:
    """A short, fixed description (never echo token contents back) and the failure's reason
    (:data:`AUTH_FAILURE_REASONS`)."""
    if isinstance(exc, jwt.InvalidAudienceError):
        return "token audience not accepted", "audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token issuer not accepted", "issuer"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not valid yet (nbf/iat in the future)", "not_yet_valid"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the required claim {exc.claim!r}", "missing_claim"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "token signature invalid", "invalid_signature"
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return "sub claim must be a non-empty string", "invalid_claim"
    if isinstance(exc, jwt.exceptions.InvalidJTIError):
        return "jti claim must be a string", "invalid_claim"
    if isinstance(exc, jwt.DecodeError):
        return (
            "token is not a well-formed JWT (its parts must be base64url JSON objects)",
            "malformed",
        )
    return "token invalid", "invalid"


def mint(
    *,
    key: str,
    algorithm: str,
    sub: str,
    scopes: str,
    devices: list[str] | None = None,
    ttl_s: int = 3600,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """Create a token (``telemetry-bridge token``); ``key`` is the secret or a private PEM."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": sub, "scope": scopes, "iat": issued, "exp": issued + ttl_s}
    if devices:
        claims["devices"] = devices
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm=algorithm)
