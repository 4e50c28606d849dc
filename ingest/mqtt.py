"""paho-mqtt driven by the asyncio event loop, with manual acknowledgement.

The ingest must acknowledge a QoS 1 message only after its rows are committed. aiomqtt 2.x
acknowledges before user code runs; paho-mqtt 2.x has ``manual_ack=True`` and ``ack(mid,
qos)``. Instead of paho's own network thread we register its socket with the event loop
(paho's ``on_socket_*`` hooks), so every callback runs on the loop thread and no lock or
thread hop sits on the hot path. See docs/decisions.md for the measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.acyclic_matcher import install as install_acyclic_matcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    # "5" (default) or "3.1.1" for brokers without MQTT v5 (the embedded fallback broker).
    protocol: str = "5"

    @classmethod
    def from_url(cls, url: str) -> MqttEndpoint:
        """Parse ``mqtt://user:pass@host:port`` (``mqtts://`` for TLS, default ports 1883/8883)."""
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
        return cls(
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
        query = "?protocol=3.1.1" if self.protocol == "3.1.1" else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}{query}"

    @property
    def paho_protocol(self) -> paho.MQTTProtocolVersion:
        return paho.MQTTv5 if self.protocol == "5" else paho.MQTTv311


MessageHandler = Callable[[paho.MQTTMessage], None]


def set_nodelay(client: paho.Client) -> None:
    """Turn Nagle off on a connected paho client's socket (paho leaves it on): a small publish
    queued behind unacknowledged data would otherwise wait for the broker's delayed ACK."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class AsyncMqtt:
    """One MQTT v5 connection whose network I/O runs on the asyncio loop.

    ``generation`` increases on every connection loss: a message id from an older
    generation must never be acknowledged on the new connection (ids are reused; the broker
    redelivers the unacknowledged messages of a persistent session instead).
    """

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        *,
        on_message: MessageHandler,
        subscriptions: list[tuple[str, int]] | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        receive_maximum: int = 65535,
        manual_ack: bool = False,
        keepalive: int = 30,
        on_connection_lost: Callable[[], None] | None = None,
        retained_on_resubscribe: bool = True,
        retain_as_published: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.generation = 0
        self.connected = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._subscriptions = list(subscriptions or [])
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        self._keepalive = keepalive
        self._on_connection_lost = on_connection_lost
        # MQTT 5 "retain handling": False asks the broker for retained messages only when a
        # subscription is new, not each time a reconnect subscribes again to what the
        # persistent session still holds. (MQTT 3.1.1 has no such option.)
        self._retain_handling = (
            SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
            if retained_on_resubscribe
            else SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
        )
        # MQTT 5 "retain as published": live messages keep the retain flag their publisher set
        # (by default the broker clears it, and only copies sent on subscribing carry it).
        self._retain_as_published = retain_as_published
        self._stopping = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._misc_task: asyncio.Task[None] | None = None
        self._messages_seen = 0
        self._user_on_message = on_message
        self._socket_closed = asyncio.Event()
        self._paused = False

        self._v5 = endpoint.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=endpoint.paho_protocol,
            manual_ack=manual_ack,
            # v3.1.1 has no clean_start/session expiry; its persistence is clean_session=False
            clean_session=None if self._v5 else clean_start,
        )
        if endpoint.username:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            client.tls_set_context(ssl.create_default_context())
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        # QoS 0 stream publishes are queued in paho; QoS 1 ones are bounded by this window.
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        # connect() is a blocking TCP connect: bounded here, normally a LAN hop. (paho refuses
        # to change this while a connection exists, so it is set once.)
        client.connect_timeout = 5.0
        install_acyclic_matcher(client)  # no garbage cycle per received message
        self.client = client

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (retrying with backoff until it works) and wait for the CONNACK.

        Callers bound the wait with ``asyncio.timeout`` when they want a deadline.
        """
        self._misc_task = asyncio.create_task(self._misc_loop(), name="mqtt-misc")
        self._reconnect_task = asyncio.create_task(self._connect_loop(), name="mqtt-connect")
        await self.connected.wait()

    async def stop(self) -> None:
        """Disconnect cleanly (a persistent session stays on the broker). Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        for task in (self._reconnect_task, self._misc_task):
            if task is not None:
                task.cancel()
        if self.connected.is_set():
            self.client.disconnect()
            # Let the DISCONNECT packet (and queued publishes) leave before the socket goes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._socket_closed.wait(), 2)
        self.connected.clear()

    # -- operations ------------------------------------------------------------------------
    def ack(self, mid: int, qos: int) -> None:
        self.client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._subscriptions.append((topic, qos))
        if self.connected.is_set():
            self._subscribe(topic, qos)

    # -- paho callbacks (all on the loop thread) -------------------------------------------
    def _handle_connect(self, client: paho.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self.endpoint.redacted(), rc)
            return
        log.info(
            "connected to MQTT broker %s (session present: %s)",
            self.endpoint.redacted(),
            flags.session_present,
        )
        for topic, qos in self._subscriptions:
            self._subscribe(topic, qos)
        self.connected.set()

    def _subscribe(self, topic: str, qos: int) -> None:
        if self._v5:
            self.client.subscribe(
                topic,
                options=SubscribeOptions(
                    qos=qos,
                    retainAsPublished=self._retain_as_published,
                    retainHandling=self._retain_handling,
                ),
            )
        else:
            self.client.subscribe(topic, qos)

    def _handle_disconnect(self, _c: Any, _u: Any, _flags: Any, rc: Any, _p: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.generation += 1
        if self._stopping:
            return
        if was_connected:
            log.warning("lost MQTT connection to %s: %s", self.endpoint.redacted(), rc)
        if self._on_connection_lost is not None:
            self._on_connection_lost()
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = self._loop.create_task(
                self._connect_loop(), name="mqtt-reconnect"
            )

    def _handle_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        self._messages_seen += 1
        self._user_on_message(message)

    def _on_socket_open(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self._socket_closed.clear()
        self._paused = False
        self._loop.add_reader(sock, self._read)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:  # pragma: no cover - best effort
            pass
        # the stream publishes must not wait up to 40 ms behind Nagle (set_nodelay)
        set_nodelay(client)

    def _on_socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._socket_closed.set()

    def _on_register_write(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self._loop.remove_writer(sock)

    def pause_reading(self) -> None:
        """Stop reading the socket: TCP flow control then holds the broker back.

        Our own bound on buffered messages, independent of whether the broker honours the
        Receive Maximum we asked for (mosquitto 2.0.11 was seen exceeding it while draining a
        large queued session).
        """
        sock = self.client.socket()
        if not self._paused and sock is not None:
            self._loop.remove_reader(sock)
        self._paused = True

    def resume_reading(self) -> None:
        sock = self.client.socket()
        if self._paused and sock is not None:
            self._loop.add_reader(sock, self._read)
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def _read(self) -> None:
        # paho reads one packet per loop_read(); drain what the socket holds while it keeps
        # yielding messages, so one wake-up of the event loop handles many of them.
        for _ in range(512):
            if self._paused:
                return
            before = self._messages_seen
            rc = self.client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._messages_seen == before:
                return

    # -- background ------------------------------------------------------------------------
    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1)
            if self.client.socket() is not None:
                self.client.loop_misc()  # keepalive pings, timeouts

    async def _connect_loop(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                props = Properties(PacketTypes.CONNECT)
                if self._session_expiry_s:
                    props.SessionExpiryInterval = self._session_expiry_s
                props.ReceiveMaximum = self._receive_maximum
                if self.generation == 0 and not self.client.is_connected():
                    v5: dict[str, Any] = (
                        {"clean_start": self._clean_start, "properties": props} if self._v5 else {}
                    )
                    self.client.connect(
                        self.endpoint.host, self.endpoint.port, keepalive=self._keepalive, **v5
                    )
                else:
                    self.client.reconnect()
                # CONNACK arrives through the reader; wait for it before declaring success.
                await asyncio.wait_for(self.connected.wait(), 10)
                return
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                log.warning(
                    "cannot reach MQTT broker %s (%s); retrying in %.1fs. Is the broker "
                    "running, and is BRIDGE_MQTT_URL right? (`telemetry-bridge doctor` checks)",
                    self.endpoint.redacted(),
                    exc or type(exc).__name__,
                    delay,
                )
            except Exception:
                # Never let the reconnect task die quietly: that would leave us offline forever.
                log.exception(
                    "unexpected error connecting to %s; retrying", self.endpoint.redacted()
                )
                if self.client.socket() is not None:
                    self.client._sock_close()  # drop a half-open attempt before retrying
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: no reconnect herds
            delay = min(delay * 2, 10.0)
