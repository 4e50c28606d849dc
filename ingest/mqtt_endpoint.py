"""Where the broker is (``BRIDGE_MQTT_URL``), and two helpers for paho clients.

paho-mqtt stays for the device simulator, the doctor and the tests' peers (blocking clients on
their own thread); the bridge's own connections use ingest/mqtt.py.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as paho

__all__ = ["MqttEndpoint", "set_nodelay"]


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    tls: bool = False
    # "5" (default) or "3.1.1" for brokers without MQTT v5 (the embedded fallback broker).
    protocol: str = "5"
    # ``?username=client-id``: every connection logs in with its own client id as username
    # (and the URL's password). For a broker that ties client ids to usernames, as the
    # production configuration does (deploy/mosquitto: use_username_as_clientid), so that no
    # credential can take over another connection's id and, with it, its session.
    username_is_client_id: bool = False

    @classmethod
    def from_url(cls, url: str) -> MqttEndpoint:
        """Parse ``mqtt://user:pass@host:port`` (``mqtts://`` for TLS, default ports 1883/8883;
        ``?protocol=3.1.1``, ``?username=client-id`` with ``mqtt://:pass@host:port``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(
                f"unsupported MQTT URL scheme {parts.scheme!r}: use mqtt://host:port "
                "or mqtts://host:port"
            )
        tls = parts.scheme in ("mqtts", "ssl")
        if not parts.hostname:
            raise ValueError("MQTT URL has no host: use mqtt://host:port")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ValueError("MQTT URL has an invalid port") from None
        query = parse_qs(parts.query)
        protocol = query.get("protocol", ["5"])[0]
        if protocol not in ("5", "3.1.1"):
            raise ValueError("MQTT URL protocol must be 5 or 3.1.1 (?protocol=3.1.1)")
        login = query.get("username", [""])[0]
        if login not in ("", "client-id"):
            raise ValueError("MQTT URL username option must be client-id (?username=client-id)")
        if login and parts.username:
            raise ValueError(
                "MQTT URL names a user and ?username=client-id: leave the user out "
                "(mqtt://:PASSWORD@host:port?username=client-id)"
            )
        return cls(
            username_is_client_id=bool(login),
            protocol=protocol,
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def redacted(self) -> str:
        """For logs: never the password."""
        user = f"{self.username}:***@" if self.username else ""
        if self.username_is_client_id:
            user = ":***@" if self.password else ""
        options = [f"protocol={self.protocol}"] if self.protocol == "3.1.1" else []
        if self.username_is_client_id:
            options.append("username=client-id")
        query = f"?{'&'.join(options)}" if options else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}{query}"

    def login(self, client_id: str) -> str | None:
        """The username a connection with ``client_id`` logs in with."""
        return client_id if self.username_is_client_id else self.username

    @property
    def paho_protocol(self) -> paho.MQTTProtocolVersion:
        return paho.MQTTv5 if self.protocol == "5" else paho.MQTTv311


def set_nodelay(client: paho.Client) -> None:
    """Turn Nagle off on a connected paho client's socket (paho leaves it on): a small publish
    queued behind unacknowledged data would otherwise wait for the broker's delayed ACK."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
