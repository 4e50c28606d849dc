"""`up` shows every component on the front's /metrics (and on BRIDGE_METRICS_PORT), the text
passes promtool, and a real Prometheus scrapes it while the simulator publishes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from bridge.auth import mint
from bridge.embedded import free_port
from tests.helpers import BrokerInfo, wait_until
from tests.integration.frontkit import recv_type
from tests.integration.metrics_kit import (
    bridge_env,
    bridge_process,
    get,
    promtool_check,
    samples,
    scrape,
    wait_scrapable,
)
from tests.unit.test_deploy_monitoring import CATALOGUE

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = "metrics-test-secret-" + "m" * 40


@contextlib.asynccontextmanager
async def running_up(
    broker: BrokerInfo, database_url: str, prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[str, str, dict[str, str]]]:
    """`up` against the test's broker and database: its front's and its metrics port's
    /metrics URLs, and its environment."""
    ws_port, metrics_port = free_port(), free_port()
    env = bridge_env(
        database_url,
        broker.url,
        prefix,
        tmp_path,
        BRIDGE_JWT_SECRET=SECRET,
        BRIDGE_WS_PORT=str(ws_port),
        BRIDGE_METRICS_PORT=str(metrics_port),
    )
    front = f"http://127.0.0.1:{ws_port}/metrics"
    own = f"http://127.0.0.1:{metrics_port}/metrics"
    log = tmp_path / "up.log"
    with bridge_process("up", env, log) as proc:
        await wait_scrapable(front, proc, log)
        await wait_scrapable(own, proc, log)
        yield front, own, env


@pytest.mark.timeout(120)
async def test_up_shows_every_component_and_promtool_accepts_it(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    async with running_up(broker, database_url, topic_prefix, tmp_path) as (front, own, _):
        for url in (front, own):
            text = await scrape(url)
            names = {name for name, _ in samples(text)}
            for expected in (
                "bridge_ingest_readings_stored_total",
                "bridge_scheduler_job_runs_total",
                "bridge_connections",
            ):
                assert expected in names, (url, sorted(names))
            promtool_check(text)
        # what Prometheus asks for (OpenMetrics) is served too
        openmetrics = await asyncio.to_thread(get, front, "application/openmetrics-text")
        assert openmetrics.rstrip().endswith("# EOF")
        # the catalogue the alert rules and the Grafana dashboard are checked against
        # (tests/unit/test_deploy_monitoring.py) is what the processes really expose; one
        # client message first, so the handling histogram has a series with its label
        ws_url = front.replace("http://", "ws://").replace("/metrics", "/ws")
        token = mint(key=SECRET, algorithm="HS256", sub="m", scopes="telemetry:read", ttl_s=60)
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await recv_type(ws, "connected")
            await ws.send(json.dumps({"type": "ping"}))
            await recv_type(ws, "pong")
        exposed = _families(await scrape(front))
        for name, (kind, labels) in CATALOGUE.items():
            if name == "up":  # Prometheus's own
                continue
            assert name in exposed, f"{name} is in the catalogue but not exposed"
            got_kind, got_labels = exposed[name]
            assert got_kind == kind, (name, got_kind, kind)
            assert got_labels == labels, (name, sorted(got_labels), sorted(labels))


def _families(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Exposed metric -> (type, label names), named as queried (counters with _total)."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = frozenset(key for sample in family.samples for key in sample.labels if key != "le")
        out[name] = (family.type, labels)
    return out


def _query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    body = json.loads(get(url, "application/json"))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.timeout(150)
async def test_a_real_prometheus_scrapes_the_bridge_while_the_simulator_runs(
    broker: BrokerInfo, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    async with running_up(broker, database_url, topic_prefix, tmp_path) as (front, own, env):
        targets = [urllib.parse.urlsplit(u).netloc for u in (front, own)]
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": [target]}]}
                        for job, target in zip(("front", "metrics"), targets, strict=True)
                    ],
                }
            )
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "prometheus.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=out,
            )
        simulator = None
        try:

            async def ready() -> bool:
                assert server.poll() is None, log.read_text()[-3000:]
                try:
                    await asyncio.to_thread(get, f"{base}/-/ready", "text/plain")
                except OSError:
                    return False
                return True

            await wait_until(ready, timeout=30, interval=0.2)
            simulator = subprocess.Popen(
                [sys.executable, "-m", "bridge", "simulate", "--devices", "5", "--rate", "5"],
                env={**env, "BRIDGE_LOG_LEVEL": "WARNING"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            seen: list[float] = []

            async def stored_rose() -> bool:
                result = await asyncio.to_thread(
                    _query, base, "max(bridge_ingest_readings_stored_total)"
                )
                if result:
                    now = float(result[0]["value"][1])
                    if not seen or now != seen[-1]:
                        seen.append(now)
                return len(seen) >= 2 and 0 < seen[-2] < seen[-1]

            await wait_until(stored_rose, timeout=60, interval=0.5)

            async def all_up() -> bool:
                result = await asyncio.to_thread(_query, base, "up")
                return len(result) == 2 and all(r["value"][1] == "1" for r in result)

            await wait_until(all_up, timeout=20, interval=0.5)
        finally:
            for proc in (simulator, server):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
