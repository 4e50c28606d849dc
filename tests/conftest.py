"""Fixtures for real services.

Integration tests talk to a real MQTT broker and a real PostgreSQL:

- MQTT: ``BRIDGE_TEST_MQTT_URL`` when set, else a private ``mosquitto`` on a free port with the
  project's ``mosquitto.conf`` (one per test session; tests isolate by topic prefix). Where no
  mosquitto is installed (or ``BRIDGE_TEST_NO_MOSQUITTO=1``), the fallback broker ``up`` uses:
  iotcore (rumqttd, MQTT 3.1.1); tests marked ``needs_mosquitto`` then skip, with the reason.
- PostgreSQL: a fresh database per test on ``BRIDGE_TEST_DATABASE_URL`` (default: the local
  server at 127.0.0.1:5432); where that does not answer (or ``BRIDGE_TEST_NO_POSTGRES=1``), on
  a private ``pgserver`` cluster, the embedded PostgreSQL ``up`` uses.

The header of a run names what it uses. Testcontainers is not used here: no Docker engine runs
on the development and CI machines. A test that cannot get a service is skipped with the
reason, never passed silently.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from bench.services import fresh_database
from bridge.embedded import EmbeddedError, IotcoreBroker, MosquittoProcess, free_port
from bridge.logs import redact
from tests.helpers import NO_POSTGRES_ENV, BrokerInfo, mosquitto_binary, no_postgres

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Fixtures that start a mosquitto of the test's own: a test using one needs the binary.
OWN_MOSQUITTO_FIXTURES = frozenset({"private_broker", "secure_broker"})


# -- which services: decided once per run, shown in the header -----------------------------------
def _database_choice() -> tuple[str | None, str]:
    """The server to create test databases on (None: the embedded one) and why."""
    if no_postgres():
        return None, f"embedded pgserver ({NO_POSTGRES_ENV}=1)"
    url = os.environ.get("BRIDGE_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
    if asyncio.run(_answers(url)):
        return url, redact(url)
    return None, f"embedded pgserver (nothing answers at {redact(url)})"


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def _broker_choice() -> str:
    if os.environ.get("BRIDGE_TEST_MQTT_URL"):
        return "external"
    return "mosquitto" if mosquitto_binary() else "iotcore"


_DATABASE = pytest.StashKey[tuple[str | None, str]]()
_BROKER = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_DATABASE] = _database_choice()
    config.stash[_BROKER] = _broker_choice()


def pytest_report_header(config: pytest.Config) -> list[str]:
    mqtt = {
        "external": f"BRIDGE_TEST_MQTT_URL ({redact(os.environ.get('BRIDGE_TEST_MQTT_URL', ''))})",
        "mosquitto": f"a private mosquitto ({mosquitto_binary()})",
        "iotcore": "the fallback broker iotcore (no mosquitto): needs_mosquitto tests skip",
    }[config.stash[_BROKER]]
    return [f"MQTT broker: {mqtt}", f"PostgreSQL: {config.stash[_DATABASE][1]}"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if OWN_MOSQUITTO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_mosquitto("starts one of its own", own=True))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``needs_mosquitto`` test skips where no mosquitto is installed: always when it starts
    one of its own (``own=True``), else when the session runs on the fallback broker (a broker
    given with BRIDGE_TEST_MQTT_URL is taken to be a mosquitto)."""
    marker = item.get_closest_marker("needs_mosquitto")
    if marker is None or mosquitto_binary() is not None:
        return
    if marker.kwargs.get("own", False) or item.config.stash[_BROKER] != "external":
        why = marker.args[0] if marker.args else "a mosquitto feature"
        pytest.skip(f"needs mosquitto ({why}): not installed, the tests use iotcore")


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def broker(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[BrokerInfo]:
    kind = pytestconfig.stash[_BROKER]
    if kind == "external":
        yield BrokerInfo(url=os.environ["BRIDGE_TEST_MQTT_URL"], process=None)
        return
    proc: MosquittoProcess | IotcoreBroker
    if kind == "mosquitto":
        proc = MosquittoProcess(tmp_path_factory.mktemp("mosquitto"), port=free_port())
    else:  # what `up` does without mosquitto
        proc = IotcoreBroker(tmp_path_factory.mktemp("iotcore"), port=free_port())
    try:
        url = proc.start()
    except EmbeddedError as exc:
        pytest.skip(f"no MQTT broker: {exc}")
    yield BrokerInfo(url=url, process=proc, kind=kind)
    proc.stop()


@pytest.fixture(scope="session")
def admin_database_url(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[str]:
    url, _ = pytestconfig.stash[_DATABASE]
    if url:
        yield url
        return
    try:
        import pgserver  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pytest.skip("no PostgreSQL: set BRIDGE_TEST_DATABASE_URL or install pgserver")
    data = Path(tmp_path_factory.mktemp("pg")) / "data"
    server = pgserver.get_server(data, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
async def database_url(admin_database_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    async with fresh_database(admin_database_url, prefix="tb_test") as url:
        yield url


@pytest.fixture
def topic_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"
