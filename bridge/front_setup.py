"""From settings to the front's runtime objects: JWT verifier, the embedded deployment's
secret, TLS context and the front's configuration and limits. Errors name the setting."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path

from bridge.auth import HMAC_ALGORITHMS, JwtVerifier
from bridge.config import Settings
from bridge.front_config import FrontConfig
from bridge.limits import FrontLimits


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says which and how to fix it."""


def jwt_verifier(settings: Settings) -> JwtVerifier | None:
    """From the settings; None when no key is configured (then only anonymous access works)."""
    alg = settings.jwt_algorithm
    if alg in HMAC_ALGORITHMS:
        secret = settings.jwt_secret or state_secret(settings, create=False)
        return (
            JwtVerifier(alg, secret, settings.jwt_audience, settings.jwt_issuer) if secret else None
        )
    key = settings.jwt_public_key
    if key and "BEGIN" not in key:
        path = Path(key).expanduser()
        if not path.is_file():
            raise ConfigError(f"BRIDGE_JWT_PUBLIC_KEY: {path} is not a file (give a PEM or a path)")
        key = path.read_text()
    if not key:
        raise ConfigError(f"BRIDGE_JWT_ALGORITHM={alg} needs BRIDGE_JWT_PUBLIC_KEY")
    return JwtVerifier(alg, key, settings.jwt_audience, settings.jwt_issuer)


def state_secret(settings: Settings, *, create: bool) -> str | None:
    """The embedded deployment's HMAC secret, kept in the state directory (mode 0600)."""
    path = settings.state_dir / "jwt_secret"
    if path.is_file():
        return path.read_text().strip()
    if not create:
        return None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The front's TLS context when a certificate and key are configured (both or neither)."""
    cert, key = settings.ws_tls_cert, settings.ws_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError(
            "set both BRIDGE_WS_TLS_CERT and BRIDGE_WS_TLS_KEY to serve wss:// (or neither)"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"BRIDGE_WS_TLS_CERT/KEY: no such file {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"BRIDGE_WS_TLS_CERT/KEY: cannot load {cert} with {key} ({exc}); both must be PEM "
            "and the key must belong to the certificate"
        ) from None
    return context


def front_config(settings: Settings) -> FrontConfig:
    return FrontConfig(
        host=settings.ws_host,
        port=settings.ws_port,
        auth_required=settings.auth_required,
        allowed_origins=tuple(o.strip() for o in settings.allowed_origins.split(",") if o.strip()),
        max_connections=settings.ws_max_connections,
        max_connections_per_sub=settings.ws_max_connections_per_sub,
        new_connections_per_ip_per_min=settings.ws_new_connections_per_ip_per_min,
        compression=settings.ws_compression,
        reuse_port=settings.ws_reuse_port,
        trusted_proxies=settings.trusted_networks(),
        tls=tls_context(settings),
        export_max_concurrent=settings.export_max_concurrent,
        export_max_per_subject=settings.export_max_per_subject,
        export_write_timeout_s=settings.export_write_timeout_s,
        export_max_duration_s=settings.export_max_duration_s,
        limits=FrontLimits(
            messages_per_s=settings.ws_messages_per_s,
            burst=settings.ws_burst,
            max_subscriptions=settings.ws_max_subscriptions,
            queue_capacity=settings.ws_queue_size,
            max_behind_s=settings.ws_max_behind_s,
            max_frame_bytes=settings.ws_max_frame_bytes,
            replay_max=settings.replay_max_messages,
            heartbeat_s=settings.ws_heartbeat_s,
            queue_max_bytes=settings.ws_queue_max_bytes,
            room_bytes=settings.ws_queue_max_bytes // 4,
            frames_per_s=settings.ws_frames_per_s,
            frame_burst=2 * settings.ws_frames_per_s,
            auth_timeout_s=settings.ws_auth_timeout_s,
        ),
        queue_budget_bytes=settings.ws_queue_budget_bytes,
    )
