"""The words of a start-up that cannot go on, the state-directory lock and the banner."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest

from bridge import preflight
from bridge.config import Settings
from bridge.statelock import StateDirInUse, StateLock
from bridge.up import COMMAND_ENV, banner_text
from ingest.mqtt import MqttEndpoint

URL = "postgresql://alice:pw-sekret@db.example:6543/telemetry"


@pytest.mark.parametrize(
    ("exc", "detail", "fix"),
    [
        (asyncpg.InvalidPasswordError('password authentication failed for user "alice"'),
         'refused the login: password authentication failed for user "alice"', "password"),
        (asyncpg.InvalidAuthorizationSpecificationError('role "alice" does not exist'),
         'refused the login: role "alice" does not exist', "CREATE ROLE"),
        (asyncpg.InvalidCatalogNameError('database "telemetry" does not exist'),
         'database "telemetry" does not exist', "createdb"),
        (ConnectionRefusedError(111, "Connect call failed ('10.0.0.1', 6543)"),
         "nothing listens there", "is PostgreSQL running"),
        (TimeoutError(), "no answer within 5 s", "is PostgreSQL running"),
    ],
)  # fmt: skip
def test_database_problems_name_the_setting_the_server_and_the_fix(
    exc: BaseException, detail: str, fix: str
) -> None:
    problem = preflight.database_problem(exc, URL)
    message = problem.message()
    assert message.startswith("BRIDGE_DATABASE_URL: ") and "db.example:6543" in message
    assert detail in problem.detail and fix in problem.fix
    assert len(message.splitlines()) == 2 and "pw-sekret" not in message


def test_a_socket_directory_is_named_as_such() -> None:
    url = "postgresql://postgres:@/postgres?host=/var/run/pg"
    assert preflight.database_location(url) == "/var/run/pg"


def test_broker_problems_never_show_the_password() -> None:
    ep = MqttEndpoint.from_url("mqtt://ingest:pw-sekret@broker.example:1883")
    refused = preflight.broker_problem(ep, "refused: Not authorized", refused=True).message()
    down = preflight.broker_problem(ep, "nothing listens there", refused=False).message()
    assert "refused the login" in refused and "broker.example:1883" in refused
    assert "is mosquitto running" in down
    assert "pw-sekret" not in refused + down


def test_a_second_lock_on_the_state_dir_names_the_holder(tmp_path: Path) -> None:
    first, second = StateLock(tmp_path), StateLock(tmp_path)
    first.acquire("ws://127.0.0.1:1234/ws")
    try:
        with pytest.raises(StateDirInUse) as refused:
            second.acquire("ws://127.0.0.1:5678/ws")
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and "ws://127.0.0.1:1234/ws" in message
        assert "since " in message and "\n" not in message
        first.update("ws://127.0.0.1:4321/ws")  # the real port, once the front listens
        with pytest.raises(StateDirInUse, match="4321"):
            second.acquire("ws://127.0.0.1:5678/ws")
    finally:
        first.release()
    second.acquire("ws://127.0.0.1:5678/ws")  # free again once released
    second.release()


def test_the_banner_names_the_command_the_user_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path)
    monkeypatch.delenv(COMMAND_ENV, raising=False)
    installed = banner_text(settings, 8765, "mqtt://127.0.0.1:1883")
    assert "telemetry-bridge token --sub me" in installed and "ws://127.0.0.1:8765/ws" in installed
    monkeypatch.setenv(COMMAND_ENV, "./run")
    checkout = banner_text(settings, 9999, "mqtt://127.0.0.1:1883")
    assert "./run token --sub me" in checkout and "./run simulate" in checkout
    assert "./run psql" in checkout and "telemetry-bridge token" not in checkout
    assert "http://127.0.0.1:9999/health" in checkout


def test_psql_gets_the_password_in_its_environment_not_its_arguments() -> None:
    from bridge.db_cli import find_psql, psql_command

    if find_psql() is None:
        pytest.skip("no psql (Debian package postgresql-client, or the pgserver wheel)")
    argv, env = psql_command(URL, ["-c", "SELECT 1"])
    assert argv[1:] == ["--dbname=postgresql://alice@db.example:6543/telemetry", "-c", "SELECT 1"]
    assert env["PGPASSWORD"] == "pw-sekret" and "pw-sekret" not in " ".join(argv)
