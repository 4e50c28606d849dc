"""Fixtures for real services.

Integration tests talk to a real Mosquitto and a real PostgreSQL:

- MQTT: ``BRIDGE_TEST_MQTT_URL`` when set, else a private ``mosquitto`` on a free port with the
  project's ``mosquitto.conf`` (one per test session; tests isolate by topic prefix).
- PostgreSQL: a fresh database per test on ``BRIDGE_TEST_DATABASE_URL`` (default: the local
  server at 127.0.0.1:5432), else on a private ``pgserver`` cluster.

Testcontainers is not used here: no Docker engine runs on the development and CI machines.
A test that cannot get a service is skipped with the reason, never passed silently.
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
from bridge.embedded import EmbeddedError, MosquittoProcess, free_port
from tests.helpers import BrokerInfo

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    url = os.environ.get("BRIDGE_TEST_MQTT_URL")
    if url:
        yield BrokerInfo(url=url, process=None)
        return
    proc = MosquittoProcess(tmp_path_factory.mktemp("mosquitto"), port=free_port())
    try:
        url = proc.start()
    except EmbeddedError as exc:
        pytest.skip(f"no MQTT broker: {exc}")
    yield BrokerInfo(url=url, process=proc)
    proc.stop()


async def _admin_url() -> str | None:
    candidates = [os.environ.get("BRIDGE_TEST_DATABASE_URL"), DEFAULT_ADMIN_URL]
    for url in filter(None, candidates):
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            continue
        await conn.close()
        return url
    return None


@pytest.fixture(scope="session")
def admin_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = asyncio.run(_admin_url())
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
