"""Mappings from the ``mappings`` table (managed by `telemetry-bridge mappings`) and from a TOML
file, picked up by a running ingest without a restart; a real broker and PostgreSQL.
The engine is tests/mapped_kit.py's (the real one plugs in at ingest.mapping_source)."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bridge import mappings_cli
from bridge.cli import _parser
from ingest.mapping_source import ConfiguredMappings, MappingError, use_engine
from ingest.service import IngestService
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, running_ingest, wait_until
from tests.mapped_kit import KitEngine

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def kit_engine() -> Iterator[None]:
    use_engine(KitEngine())
    yield
    use_engine(None)


async def cli(database_url: str, *argv: str, file: Path | None = None) -> tuple[int, str]:
    args = _parser().parse_args(["mappings", *argv])
    out = io.StringIO()
    code = await mappings_cli.run(args, database_url, profiles="bare", file=file, out=out)
    return code, out.getvalue()


async def count(database_url: str, sql: str) -> int:
    db = await asyncpg.connect(database_url)
    try:
        return int(await db.fetchval(sql))
    finally:
        await db.close()


@pytest.fixture
def peer(broker: BrokerInfo) -> Iterator[MqttPeer]:
    p = MqttPeer(broker.url)
    yield p
    p.close()


@pytest.fixture
async def db_ingest(
    broker: BrokerInfo, database_url: str, topic_prefix: str
) -> AsyncIterator[IngestService]:
    source = ConfiguredMappings(database_url=database_url)
    async with running_ingest(
        broker.url, database_url, Topics(topic_prefix), mappings=source, mappings_poll_s=0.05
    ) as service:
        yield service


async def test_the_command_changes_what_a_running_ingest_reads(
    db_ingest: IngestService, database_url: str, topic_prefix: str, peer: MqttPeer
) -> None:
    loop = db_ingest.mappings
    assert loop is not None and loop.subscribed == []
    await wait_until(_true(lambda: loop.listener is not None and loop.listener.listening))
    code, text = await cli(database_url, "enable", "tele_sensor", "--name", "plugs")
    assert code == 0 and "tele/+/SENSOR" in text
    sub = f"{topic_prefix}/tele/+/SENSOR"
    await wait_until(_true(lambda: loop.subscribed == [sub]))
    peer.publish(f"{topic_prefix}/tele/kitchen/SENSOR", b'{"Power": 42}')
    await wait_until(lambda: _is(database_url, "SELECT count(*) FROM readings", 1))

    code, text = await cli(database_url, "list")
    assert "plugs" in text and "tele_sensor" in text and "database" in text
    assert "bare" in text and "BRIDGE_MAPPINGS" in text

    assert (await cli(database_url, "disable", "plugs"))[0] == 0
    await wait_until(_true(lambda: loop.subscribed == []))
    assert (await cli(database_url, "enable", "plugs"))[0] == 0  # a stored one, on again
    await wait_until(_true(lambda: loop.subscribed == [sub]))
    assert (await cli(database_url, "remove", "plugs"))[0] == 0
    await wait_until(_true(lambda: loop.subscribed == []))
    assert await count(database_url, "SELECT count(*) FROM mappings") == 0


async def test_add_from_a_spec_file_and_test_without_storing(
    database_url: str, tmp_path: Path
) -> None:
    spec = tmp_path / "greenhouse.toml"
    spec.write_text('topic = "greenhouse/{device}/data"\n')
    code, text = await cli(database_url, "add", "greenhouse", "--file", str(spec))
    assert code == 0 and "greenhouse/+/data" in text
    code, text = await cli(
        database_url, "test", "greenhouse", "--topic", "greenhouse/gh-1/data",
        "--payload", '{"air": {"temp": 21.5}}',
    )  # fmt: skip
    assert code == 0
    assert "gh-1" in text and "air.temp" in text and "21.5" in text
    assert "nothing was stored" in text
    code, text = await cli(
        database_url, "test", "greenhouse", "--topic", "greenhouse/gh-1/data", "--payload", "{"
    )
    assert code == 1 and text.startswith("dead letter: invalid_json: mapping greenhouse")
    code, text = await cli(
        database_url, "test", "greenhouse", "--topic", "other/gh-1", "--payload", "1"
    )
    assert code == 1 and "does not cover" in text
    code, text = await cli(  # a profile that is not stored or enabled
        database_url, "test", "bare", "--topic", "esp1/sensor/t/state", "--payload", "3"
    )
    assert code == 0 and "esp1" in text
    assert await count(database_url, "SELECT count(*) FROM readings") == 0


async def test_the_command_refuses_what_cannot_work(database_url: str, tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="no built-in profile 'nope'"):
        await cli(database_url, "enable", "nope")
    with pytest.raises(MappingError, match="KEY=VALUE"):
        await cli(database_url, "enable", "bare", "--option", "novalue")
    bad = tmp_path / "bad.toml"
    bad.write_text('payload = "json_leaves"\n')
    with pytest.raises(MappingError, match="needs a topic"):
        await cli(database_url, "add", "bad", "--file", str(bad))
    with pytest.raises(MappingError, match="invalid mapping name"):
        await cli(database_url, "enable", "bare", "--name", "no spaces")
    with pytest.raises(MappingError, match="no stored mapping"):
        await cli(database_url, "disable", "ghost")
    assert await count(database_url, "SELECT count(*) FROM mappings") == 0
    # a stored profile switched off and on again keeps its options
    assert (await cli(database_url, "enable", "bare", "--option", "k=v"))[0] == 0
    assert (await cli(database_url, "disable", "bare"))[0] == 0
    assert (await cli(database_url, "enable", "bare"))[0] == 0
    db = await asyncpg.connect(database_url)
    try:
        row = await db.fetchrow("SELECT enabled, options FROM mappings WHERE name = 'bare'")
    finally:
        await db.close()
    assert row["enabled"] and row["options"] == '{"k": "v"}'
    code, text = await cli(database_url, "profiles")
    assert code == 0 and "tele_sensor" in text and "bare" in text


async def test_a_changed_mappings_file_is_reloaded(
    broker: BrokerInfo, database_url: str, topic_prefix: str, peer: MqttPeer, tmp_path: Path
) -> None:
    path = tmp_path / "mappings.toml"
    path.write_text('[mappings.plugs]\nprofile = "tele_sensor"\n')
    source = ConfiguredMappings(profiles="tele_lwt", file=path)
    async with running_ingest(
        broker.url, database_url, Topics(topic_prefix), mappings=source, mappings_poll_s=0.05
    ) as service:
        loop = service.mappings
        assert loop is not None
        assert sorted(loop.subscribed) == [f"{topic_prefix}/tele/+/LWT",
                                           f"{topic_prefix}/tele/+/SENSOR"]  # fmt: skip
        path.write_text('[mappings.esp]\nprofile = "bare"\n')
        os.utime(path, ns=(1, 1))  # a new mtime even within the filesystem's resolution
        await wait_until(_true(lambda: f"{topic_prefix}/+/sensor/+/state" in loop.subscribed))
        assert f"{topic_prefix}/tele/+/SENSOR" not in loop.subscribed
        peer.publish(f"{topic_prefix}/esp1/sensor/temperature/state", b"21.5")
        await wait_until(lambda: _is(database_url, "SELECT count(*) FROM readings", 1))
        # the same name twice is refused; what is in use stays
        path.write_text('[mappings.tele_lwt]\nprofile = "bare"\n')
        os.utime(path, ns=(2, 2))
        await wait_until(_true(lambda: service.stats.mapping_reload_errors >= 1))
        assert f"{topic_prefix}/+/sensor/+/state" in loop.subscribed


async def test_without_any_mapping_no_engine_is_needed(database_url: str) -> None:
    use_engine(None)  # whatever the default engine is, it is not asked
    source = ConfiguredMappings(database_url=database_url)
    router = await source.load()
    assert router.filters() == [] and router.route("tele/x/SENSOR") is None


def _true(check: Any) -> Any:
    async def run() -> bool:
        return bool(check())

    return run


async def _is(database_url: str, sql: str, n: int) -> bool:
    return await count(database_url, sql) == n
