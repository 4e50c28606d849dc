"""A start that cannot go on ends at once, through the real command line: exit code 2, one
line naming the setting and what is wrong, one with the fix; no traceback, no password."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bridge.embedded import free_port
from tests.helpers import BrokerInfo
from tests.integration.secure_broker import secure_broker
from tests.integration.test_cli import SECRET, run_cli

pytestmark = pytest.mark.integration
PASSWORD = "pw-sekret-3141"


def _with(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:{PASSWORD}@{host}" if user else parts.netloc
    path = f"/{database}" if database else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def _fails_clearly(command: str, env: dict[str, str], state: Path, *needles: str) -> str:
    # a private state dir and WebSocket port: `up` and `serve` must get as far as the check
    base = {"BRIDGE_STATE_DIR": str(state), "BRIDGE_JWT_SECRET": SECRET}
    base["BRIDGE_WS_PORT"] = str(free_port())
    done = run_cli(command, env={**base, **env})
    err = done.stderr
    assert done.returncode == 2, err
    assert len(err.strip().splitlines()) <= 2, err
    assert "Traceback" not in err and PASSWORD not in err and "is up" not in done.stdout
    for needle in needles:
        assert needle in err, err
    return err


COMMANDS = ["up", "ingest", "serve", "scheduler"]


@pytest.mark.parametrize("command", COMMANDS)
def test_database_login_refused(
    command: str, database_url: str, broker: BrokerInfo, tmp_path: Path
) -> None:
    env = {"BRIDGE_MQTT_URL": broker.url}
    role = _with(database_url, user="no_such_role_x")
    _fails_clearly(
        command, {**env, "BRIDGE_DATABASE_URL": role}, tmp_path,
        "BRIDGE_DATABASE_URL", 'role "no_such_role_x" does not exist', "fix:",
    )  # fmt: skip
    missing = _with(database_url, database="no_such_db_x")
    _fails_clearly(
        command, {**env, "BRIDGE_DATABASE_URL": missing}, tmp_path,
        "BRIDGE_DATABASE_URL", 'database "no_such_db_x" does not exist', "createdb",
    )  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_nothing_listening(
    command: str, database_url: str, broker: BrokerInfo, tmp_path: Path
) -> None:
    port = free_port()
    nowhere = f"postgresql://u:{PASSWORD}@127.0.0.1:{port}/db"
    _fails_clearly(
        command, {"BRIDGE_DATABASE_URL": nowhere, "BRIDGE_MQTT_URL": broker.url}, tmp_path,
        "BRIDGE_DATABASE_URL", f"127.0.0.1:{port}", "connection refused",
    )  # fmt: skip
    no_broker = f"mqtt://u:{PASSWORD}@127.0.0.1:{port}"
    _fails_clearly(
        command, {"BRIDGE_DATABASE_URL": database_url, "BRIDGE_MQTT_URL": no_broker}, tmp_path,
        "BRIDGE_MQTT_URL", f"127.0.0.1:{port}", "connection refused",
    )  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_broker_refuses_the_login(command: str, database_url: str, tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    with secure_broker(tmp_path / "broker", {}) as broker:
        url = f"mqtt://bridge-ingest:{PASSWORD}@127.0.0.1:{broker.bridge_port}"
        _fails_clearly(
            command, {"BRIDGE_DATABASE_URL": database_url, "BRIDGE_MQTT_URL": url}, tmp_path,
            "BRIDGE_MQTT_URL", "refused the login", f"127.0.0.1:{broker.bridge_port}",
        )  # fmt: skip


def test_a_connection_user_missing_from_the_broker_is_named(
    database_url: str, tmp_path: Path
) -> None:
    """With ?username=client-id the login that fails is a connection's own: say which."""
    (tmp_path / "broker").mkdir()
    with secure_broker(tmp_path / "broker", {}) as broker:
        env = {
            "BRIDGE_DATABASE_URL": database_url,
            "BRIDGE_MQTT_URL": broker.url("bridge-front"),
            "BRIDGE_FRONT_CLIENT_ID": "telemetry-bridge-front-9",  # not in the password file
        }
        _fails_clearly(
            "serve", env, tmp_path, "BRIDGE_MQTT_URL", "telemetry-bridge-front-9-pub",
            "broker-users",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("command", "setting"),
    [("up", "BRIDGE_WS_PORT"), ("serve", "BRIDGE_WS_PORT"), ("up", "BRIDGE_METRICS_PORT"),
     ("ingest", "BRIDGE_METRICS_PORT"), ("scheduler", "BRIDGE_METRICS_PORT")],
)  # fmt: skip
def test_port_in_use(
    command: str,
    setting: str,
    listening: int,
    database_url: str,
    broker: BrokerInfo,
    tmp_path: Path,
) -> None:
    env = {"BRIDGE_DATABASE_URL": database_url, "BRIDGE_MQTT_URL": broker.url}
    env[setting] = str(listening)
    _fails_clearly(
        command, env, tmp_path, setting, f"127.0.0.1:{listening}", "address already in use"
    )


async def test_an_unforeseen_failure_is_one_line_and_debug_shows_the_traceback(
    database_url: str, broker: BrokerInfo, tmp_path: Path
) -> None:
    import asyncpg

    role = f"tb_noperm_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        # a login the server accepts, without the rights the migrations need
        env = {"BRIDGE_DATABASE_URL": _with(database_url, user=role), "BRIDGE_MQTT_URL": broker.url}
        base = {**env, "BRIDGE_STATE_DIR": str(tmp_path)}
        done = await asyncio.to_thread(run_cli, "ingest", env=base)
        assert done.returncode == 1, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert "permission denied" in line and "BRIDGE_LOG_LEVEL=DEBUG" in line
        assert PASSWORD not in line
        debug = await asyncio.to_thread(
            run_cli, "ingest", env={**base, "BRIDGE_LOG_LEVEL": "DEBUG"}
        )
        assert debug.returncode == 1 and "Traceback" in debug.stderr
        assert PASSWORD not in debug.stderr
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
