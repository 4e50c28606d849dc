"""Start-up checks, and the words for what they find (shared with ``telemetry-bridge doctor``).

The services retry the broker and the database for ever once they run: an outage must not
stop them. At start-up the same retrying hid a wrong setting behind endless warnings or a
48-line traceback. So ``up``, ``ingest``, ``serve`` and ``scheduler`` first try each
dependency once; what fails ends the start with :class:`~bridge.front_setup.ConfigError`: one
line naming the setting and what is wrong, one line with the fix (exit code 2). No message
holds a password: the URLs are shown redacted and the drivers' messages name users, not
passwords.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import Settings
from bridge.front_setup import ConfigError
from ingest import names
from ingest.mqtt import MqttEndpoint

TIMEOUT_S = 5.0
DATABASE_FIX = (
    "is PostgreSQL running, and are host, port, user and database in BRIDGE_DATABASE_URL right?"
)
BROKER_FIX = "is mosquitto running, and are host, port, user and password in BRIDGE_MQTT_URL right?"


@dataclass(frozen=True)
class Problem:
    """What is wrong (``detail``) and what to do (``fix``), for a setting."""

    setting: str
    detail: str
    fix: str

    def message(self) -> str:
        return f"{self.setting}: {self.detail}\n  fix: {self.fix}"


def database_location(url: str) -> str:
    """``host:port`` (or the socket directory) of a PostgreSQL URL, never its password."""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if socket_dir.startswith("/") and not parts.hostname:
        return socket_dir
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    return f"{parts.hostname or 'localhost'}:{port}"


def database_problem(exc: BaseException, url: str) -> Problem:
    where = database_location(url)
    setting = "BRIDGE_DATABASE_URL"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return Problem(setting, f"PostgreSQL at {where} refused the login: {exc}",
                       "the user or password in BRIDGE_DATABASE_URL is wrong")  # fmt: skip
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return Problem(setting, f"PostgreSQL at {where} refused the login: {exc}",
                       "name a user the server knows in BRIDGE_DATABASE_URL (or create it: "
                       "CREATE ROLE name LOGIN PASSWORD '...')")  # fmt: skip
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return Problem(setting, f"PostgreSQL at {where}: {exc}",
                       "create it (createdb NAME) or name an existing database in "
                       "BRIDGE_DATABASE_URL")  # fmt: skip
    return Problem(setting, f"cannot connect to PostgreSQL at {where} ({_why(exc)})", DATABASE_FIX)


def broker_problem(
    endpoint: MqttEndpoint, why: str, *, refused: bool, client_id: str | None = None
) -> Problem:
    if refused and endpoint.username_is_client_id and client_id:
        return Problem("BRIDGE_MQTT_URL", f"the broker at {endpoint.redacted()} refused the "
                       f"login of {client_id} ({why})", "?username=client-id: each connection "
                       "logs in as its client id; is that user in the broker's password file "
                       "(`telemetry-bridge broker-users`), with the URL's password?")  # fmt: skip
    if refused:
        return Problem("BRIDGE_MQTT_URL", f"the broker at {endpoint.redacted()} refused the "
                       f"login ({why})", "are user and password in BRIDGE_MQTT_URL right, and "
                       "does the broker know this user?")  # fmt: skip
    return Problem(
        "BRIDGE_MQTT_URL", f"cannot connect to the broker at {endpoint.redacted()} ({why})",
        BROKER_FIX,
    )  # fmt: skip


def _why(exc: BaseException) -> str:
    """A connection error in words, without errno noise."""
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in str(exc):
        return "nothing listens there: connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_S:.0f} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


async def check_database(url: str) -> None:
    """One connection to ``url``; ConfigError with the problem if it fails."""
    try:
        conn = await asyncpg.connect(url, timeout=TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ConfigError(database_problem(exc, url).message()) from None
    await conn.close()


def mqtt_connect(
    ep: MqttEndpoint,
    *,
    anonymous: bool = False,
    client_name: str = "doctor",
    client_id: str | None = None,
) -> tuple[paho.Client | None, str, bool]:
    """A connected paho client, or None, the reason and whether the broker refused the login
    (as opposed to not answering). ``client_id``: the identity to log in as where the broker
    ties ids to users (bridge/identities.py); else a fresh one named after ``client_name``."""
    client_id = client_id or names.bridge_client_id(client_name)
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=ep.paho_protocol
    )
    username = ep.login(client_id)
    if username and not anonymous:
        client.username_pw_set(username, ep.password)
    if ep.tls:
        client.tls_set()
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["rc"] = rc
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(ep.host, ep.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return None, _why(exc), False
    client.loop_start()
    if not done.wait(TIMEOUT_S):
        client.loop_stop()
        return None, f"no CONNACK within {TIMEOUT_S:.0f} s", False
    if result["rc"].is_failure:
        client.loop_stop()
        client.disconnect()
        return None, f"refused: {result['rc']}", True
    return client, "", False


def check_broker(url: str, client_id: str | None = None) -> None:
    """One MQTT connection to ``url`` (as ``client_id``, never an id whose session matters:
    logging in under it would take that session over); ConfigError if it fails."""
    ep = MqttEndpoint.from_url(url)
    client, why, refused = mqtt_connect(ep, client_name="preflight", client_id=client_id)
    if client is None:
        problem = broker_problem(ep, why, refused=refused, client_id=client_id)
        raise ConfigError(problem.message())
    # DISCONNECT through the running network loop, so the broker has let the id go before
    # the process connects under it for real
    client.disconnect()
    client.loop_stop()


def check_listen(host: str, port: int, setting: str) -> None:
    """That ``host:port`` can be listened on (port 0 always can), before anything starts;
    bound the way the front and the metrics server bind (asyncio, SO_REUSEADDR)."""
    if port == 0:
        return

    async def bind() -> None:
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, port)
        server.close()
        await server.wait_closed()

    try:
        asyncio.run(bind())
    except OSError as exc:
        raise ConfigError(listen_problem(host, port, setting, exc)) from None


def listen_problem(host: str, port: int, setting: str, exc: OSError) -> str:
    return Problem(
        setting,
        f"cannot listen on {host}:{port} ({os.strerror(exc.errno).lower() if exc.errno else exc})",
        f"stop what listens there (another `up` or `serve`?) or set {setting} to a free port",
    ).message()


def check(
    *,
    database_url: str | None = None,
    mqtt_url: str | None = None,
    mqtt_client_id: str | None = None,
) -> None:
    """The database, then the broker; each only when given."""
    if database_url:
        asyncio.run(check_database(database_url))
    if mqtt_url:
        check_broker(mqtt_url, mqtt_client_id)


def check_metrics_port(settings: Settings) -> None:
    if settings.metrics_port is not None:
        check_listen(settings.metrics_host, settings.metrics_port, "BRIDGE_METRICS_PORT")


def check_services(settings: Settings, mqtt_client_id: str) -> None:
    """The database and the broker of ``settings``, logging in to the broker as
    ``mqtt_client_id`` (bridge/identities.py: never the ingest's persistent session)."""
    check(
        database_url=settings.database_url,
        mqtt_url=settings.mqtt_url,
        mqtt_client_id=mqtt_client_id,
    )
