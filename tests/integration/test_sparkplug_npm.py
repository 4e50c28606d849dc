"""Sparkplug B from a publisher no one here wrote: Eclipse Tahu's ``sparkplug-client`` (npm).

``tests/node/publish.js`` is an edge node made with that library: it publishes NBIRTH,
DBIRTH, NDATA and DDATA by alias, DDEATH, and on stop an NDEATH. A plain MQTT subscriber
captures the messages from a mosquitto of the test's own; they go through the bridge's
``sparkplug_b`` mapping in order. ``npm ci`` installs the package (from tests/node's lock)
when tests/node/node_modules is missing; without node, npm or the registry the test skips.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.services import Mosquitto
from ingest.mapping.api import DeviceStatus
from ingest.mapping.sparkplug import SparkplugMapping
from tests.helpers import MqttPeer, wait_until

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _sparkplug_client() -> str:
    """The node binary, with sparkplug-client installed in tests/node; else skip."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run sparkplug-client (tests/node)")
    if not (NODE_DIR / "node_modules" / "sparkplug-client").is_dir():
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci in tests/node did not finish within 300 s")
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-3:]
            pytest.skip(f"npm ci in tests/node failed (no registry?): {' '.join(last)}")
    return node


async def test_sparkplug_client_births_data_and_deaths(private_broker: Mosquitto) -> None:
    node = _sparkplug_client()
    group, edge = f"g{uuid.uuid4().hex[:8]}", "edge1"
    peer = MqttPeer(private_broker.url)
    try:
        peer.subscribe(f"spBv1.0/{group}/#")
        run = await asyncio.create_subprocess_exec(
            node,
            "publish.js",
            private_broker.url,
            group,
            edge,
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(run.communicate(), 60)
        assert run.returncode == 0, err.decode(errors="replace")

        async def all_six() -> bool:
            return len(peer.messages()) >= 6

        await wait_until(all_six)
        messages = peer.messages()
    finally:
        peer.close()

    kinds = [m.topic.split("/")[2] for m in messages]
    assert kinds == ["NBIRTH", "DBIRTH", "NDATA", "DDATA", "DDEATH", "NDEATH"]
    mapping = SparkplugMapping()
    received = datetime.now(UTC)
    out = [mapping.extract(m.topic, m.payload, received) for m in messages]
    nbirth, dbirth, ndata, ddata, ddeath, ndeath = out
    device = f"{edge}:pump1"

    # NBIRTH: edge online; numbers stored, the string named in a note, bdSeq and
    # Node Control/Rebirth (the protocol's own) not stored.
    assert nbirth.statuses == [DeviceStatus(edge, "online", "NBIRTH")]
    assert [(r.device_id, r.entries) for r in nbirth.readings] == [
        (edge, [(T0, {"Supply.Voltage_V": (230.5, None), "Uptime": (3600.0, None)})])
    ]
    assert nbirth.notes == [f"sparkplug {group}/{edge}: not stored: 1 String"]

    # DBIRTH: device online; Int8 -5 decoded signed; the null Pressure not stored.
    assert dbirth.statuses == [DeviceStatus(device, "online", "DBIRTH")]
    assert dbirth.readings[0].entries == [
        (T0, {"Flow.Rate": (12.25, None), "Running": (1.0, None), "Offset": (-5.0, None)})
    ]

    # NDATA and DDATA carry aliases only: resolved from the births.
    assert ndata.readings[0].device_id == edge
    assert ndata.readings[0].entries == [
        (T0.replace(second=1), {"Supply.Voltage_V": (231.0, None), "Uptime": (3601.0, None)})
    ]
    assert ddata.readings[0].device_id == device
    assert sorted(ddata.readings[0].entries) == [
        (T0.replace(hour=11, minute=59), {"Flow.Rate": (11.0, None)}),  # historical
        (
            T0.replace(second=2),
            {
                "Flow.Rate": (13.5, None),
                "Running": (0.0, None),
                "Offset": (-7.0, None),
                "Pressure": (-40000.0, None),
            },
        ),
    ]

    # seq 0..4 from NBIRTH to DDEATH without a gap; NDEATH's bdSeq matches NBIRTH's.
    assert all(not x.notes for x in (dbirth, ndata, ddata, ddeath, ndeath))
    assert mapping.stats.seq_gaps == 0
    assert ddeath.statuses == [DeviceStatus(device, "offline", "DDEATH")]
    assert ndeath.statuses == [DeviceStatus(edge, "offline", "NDEATH")]
    assert mapping.stats.stale_deaths == 0
