"""The production broker configuration (deploy/mosquitto/) with a mapping profile: a device
added with `add-device ID --profile tasmota` publishes on its own Tasmota topics only, and the
ingest (user bridge-ingest, the shipped acl file) reads them and stores the readings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from bridge.device_credentials import ADMIN_URL_ENV
from ingest.topics import Topics
from tests.helpers import running_ingest
from tests.integration.secure_broker import INGEST_ID, SecureBroker
from tests.integration.secure_broker import secure_broker as start_secure_broker
from tests.integration.test_broker_acl import Device, until
from tests.integration.test_cli import run_cli
from tests.mapped_kit import ListSource, Router, TeleSensor

pytestmark = pytest.mark.integration


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    with start_secure_broker(tmp_path, {"plug-1": "pw-1"}) as broker:
        yield broker


async def test_a_tasmota_device_publishes_only_as_itself(
    secure_broker: SecureBroker, database_url: str
) -> None:
    done = run_cli(
        "add-device", "plug-1", "--password", "pw-1", "--profile", "tasmota",
        env={ADMIN_URL_ENV: secure_broker.admin_url},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    source = ListSource(Router([TeleSensor()]))
    url = secure_broker.url("bridge-ingest")
    async with running_ingest(
        url, database_url, Topics(""), mappings=source, client_id=INGEST_ID
    ) as service:
        plug = Device(secure_broker, "plug-1")
        try:
            await until(lambda: plug.connack is not None)
            assert plug.connack is not None and not plug.connack.is_failure
            plug.client.subscribe([("cmnd/plug-1/+", 1), ("cmnd/plug-2/+", 1)])
            await until(lambda: len(plug.suback) == 2)
            assert [rc.is_failure for rc in plug.suback] == [False, True]
            plug.publish("tele/plug-1/SENSOR", b'{"ENERGY": {"Power": 42}}')
            plug.publish("tele/plug-2/SENSOR", b'{"ENERGY": {"Power": 666}}')  # as another
            plug.publish("devices/plug-1/telemetry", b'{"t": 1}')  # its own format still
            await until(lambda: len(plug.pubacks) == 3)
            refused = [plug.pubacks[mid].is_failure for mid in sorted(plug.pubacks)]
            assert refused == [False, True, False], plug.pubacks
            await until(lambda: service.stats.readings_stored == 2, 10)
            await asyncio.sleep(0.3)  # anything that slipped through would be here now
            db = await asyncpg.connect(database_url)
            try:
                rows = await db.fetch("SELECT device_id, metric, value FROM readings ORDER BY 2")
            finally:
                await db.close()
            assert [tuple(r) for r in rows] == [("plug-1", "ENERGY.Power", 42.0),
                                                ("plug-1", "t", 1.0)]  # fmt: skip
        finally:
            plug.close()
