"""Fixtures the attack tests share (the front itself is per module: each attack needs its
own settings; see ``tests/adversity/hostile.py`` and ``httpkit.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.helpers import BrokerInfo, MqttPeer


@pytest.fixture
def peer(broker: BrokerInfo) -> Iterator[MqttPeer]:
    """A plain MQTT client on the tests' broker: the device or publisher of a test."""
    p = MqttPeer(broker.url)
    yield p
    p.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's database, for the test's own reads and writes."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()
