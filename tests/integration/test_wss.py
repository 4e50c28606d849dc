"""The front serves wss:// and https:// itself when given a certificate and key."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from bridge.app import ConfigError, tls_context
from bridge.config import Settings
from tests.helpers import BrokerInfo
from tests.stack import running_stack

pytestmark = pytest.mark.integration


def _self_signed(tmp: Path, name: str = "localhost") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_front_serves_wss_and_https(
    broker: BrokerInfo, topic_prefix: str, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    tls = {"ws_tls_cert": cert, "ws_tls_key": key}
    async with running_stack(
        broker.url, None, topic_prefix, ingest=False, settings=tls, wait_healthy=False
    ) as stack:
        port = stack.port
        token = stack.token(scope="telemetry:read", sub="tls")
        async with connect(
            f"wss://localhost:{port}/ws",
            ssl=trust,
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "connected"

        def status() -> Any:
            with urllib.request.urlopen(f"https://localhost:{port}/status", context=trust) as r:
                return json.loads(r.read())

        assert (await asyncio.to_thread(status))["features"]["wss_enabled"] is True
        with pytest.raises(ssl.SSLCertVerificationError):  # plain trust store: not trusted
            async with connect(f"wss://localhost:{port}/ws"):
                pass


def test_tls_configuration_errors_say_what_to_fix(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    _, other_key = _self_signed(tmp_path, "other")
    with pytest.raises(ConfigError, match="both BRIDGE_WS_TLS_CERT and BRIDGE_WS_TLS_KEY"):
        tls_context(Settings(ws_tls_cert=cert))
    with pytest.raises(ConfigError, match="no such file"):
        tls_context(Settings(ws_tls_cert=tmp_path / "missing.crt", ws_tls_key=key))
    with pytest.raises(ConfigError, match="must belong to the certificate"):
        tls_context(Settings(ws_tls_cert=cert, ws_tls_key=other_key))
    assert tls_context(Settings(ws_tls_cert=cert, ws_tls_key=key)) is not None
