"""``telemetry-bridge up``: everything in one process, with embedded services where no URLs
are set, on a state directory that no other ``up`` uses at the same time.

The order matters to a person watching: the state directory is locked before anything in it
is touched (a second ``up`` refuses at once and leaves the first one's files alone); every
setting that can be checked is checked before the embedded services start; the banner shows
only once the database, the broker, the ingest (subscribed) and the front (listening) are up.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bridge import identities, preflight
from bridge.app import check_front_settings, run_loop, run_services
from bridge.auth import HMAC_ALGORITHMS
from bridge.config import Settings
from bridge.embedded import EmbeddedServices
from bridge.front_setup import ConfigError, state_secret
from bridge.statelock import StateDirInUse, StateLock
from ingest.mqtt import MqttEndpoint

# Set by ./run to how it was invoked, so the banner names commands the user can type.
COMMAND_ENV = "TELEMETRY_BRIDGE_COMMAND"
READ_WRITE_SCOPES = "telemetry:read alerts:read alerts:write devices:read"


def user_command() -> str:
    """``./run`` when started through the checkout's script, else the installed command."""
    return os.environ.get(COMMAND_ENV, "").strip() or "telemetry-bridge"


def ws_url(settings: Settings, port: int) -> str:
    scheme = "wss" if settings.ws_tls_cert else "ws"
    return f"{scheme}://{settings.ws_host}:{port}/ws"


def banner_text(settings: Settings, port: int, mqtt_url: str) -> str:
    http = "https" if settings.ws_tls_cert else "http"
    base = f"{http}://{settings.ws_host}:{port}"
    cmd = user_command()
    return (
        f"telemetry-bridge is up: broker {MqttEndpoint.from_url(mqtt_url).redacted()}, "
        f"state in {settings.state_dir}\n"
        f"  websocket:  {ws_url(settings, port)}  (health: {base}/health)\n"
        f"  dashboard:  {base}/\n"
        f"  a token:    {cmd} token --sub me --scope '{READ_WRITE_SCOPES}'\n"
        f"  send data:  {cmd} simulate --devices 10 --rate 1\n"
        f"  database:   {cmd} psql\n"
        f"  stop:       Ctrl-C"
    )


def _check_settings(settings: Settings) -> None:
    """What can be checked before anything starts: ports, and the services named by URL."""
    check_front_settings(settings)
    preflight.check_listen(settings.ws_host, settings.ws_port, "BRIDGE_WS_PORT")
    preflight.check_metrics_port(settings)
    preflight.check_services(settings, identities.ingest_ids(settings).stream)


def run_up(settings: Settings, banner: Callable[[str], None] = print) -> None:
    lock = StateLock(settings.state_dir)
    try:
        lock.acquire(ws_url(settings, settings.ws_port))
    except StateDirInUse as exc:
        raise ConfigError(str(exc)) from None
    try:
        if settings.jwt_algorithm in HMAC_ALGORITHMS and not settings.jwt_secret:
            state_secret(settings, create=True)  # so `token` works out of the box
        _check_settings(settings)
        embedded = EmbeddedServices(settings.state_dir)
        embedded.start(need_database=not settings.database_url, need_broker=not settings.mqtt_url)
        try:
            database_url = settings.database_url or embedded.database_url
            mqtt_url = settings.mqtt_url or embedded.mqtt_url
            assert database_url and mqtt_url
            embedded.write_runtime(database_url, mqtt_url)

            def ready(port: int | None) -> None:
                port = settings.ws_port if port is None else port
                lock.update(ws_url(settings, port))
                banner(banner_text(settings, port, mqtt_url))

            run_loop(run_services(settings, database_url, mqtt_url, front=True, on_ready=ready))
        finally:
            embedded.stop()
    finally:
        lock.release()
