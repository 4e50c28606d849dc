"""The dashboard page in a real browser (headless Chromium) against a real stack.

Readings, alerts and device status go the whole way: MQTT -> ingest -> PostgreSQL -> front ->
WebSocket -> the page. The page exposes a read-only ``window.__dashboard`` that the test
polls; every wait is on a condition, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from bridge.app import _scheduler
from bridge.config import Settings
from bridge.system import SystemSampler
from ingest.mqtt import MqttEndpoint
from ingest.stream import StreamPublisher
from tests.helpers import BrokerInfo, wait_until
from tests.integration.frontkit import Stack, recv
from tests.stack import running_stack

CHROMIUM = Path(os.environ.get("BRIDGE_TEST_CHROMIUM", "/usr/bin/chromium"))
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set BRIDGE_TEST_CHROMIUM)",
    ),
]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCOPES = "telemetry:read alerts:read alerts:write devices:read"
# The page runs under a strict CSP (no eval), so conditions are functions, not expressions.
POINTS = "([d, m, n]) => window.__dashboard.pointCount(d, m) >= n"


@pytest.fixture
async def scheduler(
    stack: Stack, broker: BrokerInfo, database_url: str, topic_prefix: str
) -> AsyncIterator[None]:
    """The `up` scheduler next to the in-process stack: silent devices go offline and
    system status is published, on short intervals."""
    settings = Settings(
        mqtt_url=broker.url,
        mqtt_topic_prefix=topic_prefix,
        device_check_interval_s=0.3,
        system_status_interval_s=0.5,
    )
    stream = StreamPublisher(MqttEndpoint.from_url(broker.url), f"dash-{uuid.uuid4().hex[:8]}")
    await stream.start()
    sampler = SystemSampler("bridge-dashtest", None, lambda: 1, Path("/"))
    jobs = _scheduler(database_url, settings, stream, sampler)
    jobs.start()
    try:
        yield
    finally:
        jobs.shutdown(wait=False)
        await stream.stop()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Screenshots go to a temporary directory (or DASHBOARD_SHOTS_DIR, to look at them)."""
    wanted = os.environ.get("DASHBOARD_SHOTS_DIR")
    path = Path(wanted) if wanted else tmp_path / "shots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish(stack: Stack, device: str, ts_ms: int, **values: float) -> None:
    """A reading with its own timestamp, so every point of a line is distinct."""
    stack.peer.publish(
        stack.topics.device_telemetry(device), orjson.dumps({"ts": ts_ms, "values": values})
    )


async def send(ws: Any, msg: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(msg).decode())


@pytest.mark.timeout(120)
async def test_dashboard_live_charts_alerts_status_history_and_resume(
    stack: Stack, scheduler: None, database_url: str, shots: Path
) -> None:
    db = await asyncpg.connect(database_url)
    admin = await stack.client(stack.token(scope="admin", sub="root"))
    await recv(admin)
    now_ms = int(time.time() * 1000)
    publish(stack, "dash-live", now_ms - 3000, temperature=21.0, humidity=40.0)
    publish(stack, "dash-quiet", now_ms - 3000, temperature=19.0)
    await send(
        admin,
        {
            "type": "create_rule",
            "rule": {
                "rule_id": "dash-hot",
                "metric": "temperature",
                "condition": "gt",
                "threshold": 50,
                "clear_threshold": 45,
                "severity": "critical",
                "devices": ["dash-live"],
            },
        },
    )
    assert (await recv(admin))["type"] == "rule_created"

    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page_errors: list[str] = []
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            gate = SocketGate()
            await page.route_web_socket("**/ws", gate.handle)
            expect = playwright_api.expect
            base = stack.url.replace("ws://", "http://")

            # -- the page and its headers
            response = await page.goto(base + "/")
            assert response is not None and response.status == 200
            headers = await response.all_headers()
            assert headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in headers["content-security-policy"]
            assert headers["cache-control"] == "no-cache"

            # -- sign in with a token (authenticates by message over the WebSocket)
            await expect(page.locator("#login")).to_be_visible()
            await page.fill("#login-token", stack.token(scope=SCOPES))
            await page.click("#login-go")
            await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
            assert await page.evaluate("() => sessionStorage.length") == 1
            await expect(page.locator("#who")).to_have_text("alice")

            # -- device list with status
            live = page.locator('[data-device-id="dash-live"]')
            quiet = page.locator('[data-device-id="dash-quiet"]')
            await expect(live).to_have_attribute("data-status", "online")
            await expect(quiet).to_have_attribute("data-status", "online")

            # -- live chart: the last minutes are replayed, then new readings stream in
            await live.click()
            await page.wait_for_function(POINTS, arg=["dash-live", "temperature", 1])
            await expect(
                page.locator('.chart-card[data-metric="temperature"] canvas').first
            ).to_be_visible()
            for i in range(1, 6):
                publish(stack, "dash-live", now_ms - 3000 + i * 200, temperature=21.0 + i)
            await page.wait_for_function(POINTS, arg=["dash-live", "temperature", 6])

            # -- system strip from the `system` channel
            await expect(page.locator("#s-comp")).to_have_text("bridge-dashtest")
            await expect(page.locator("#s-conns")).not_to_have_text(
                "\u2013"
            )  # the placeholder dash

            # -- an alert appears and is acknowledged with the button
            card = page.locator('.alert-card[data-severity="critical"]')
            for attempt in range(40):  # rules reload every 0.5 s in this stack
                publish(stack, "dash-live", now_ms + attempt * 10, temperature=60.0)
                with contextlib.suppress(playwright_api.TimeoutError):
                    await card.wait_for(timeout=500)
                    break
                publish(stack, "dash-live", now_ms + attempt * 10 + 5, temperature=40.0)
            await expect(card).to_have_attribute("data-state", "active")
            await expect(card.locator(".alert-where")).to_have_text("dash-live · temperature")
            await page.screenshot(path=str(shots / "alert.png"))
            await card.locator("button.ack").click()
            await expect(card).to_have_attribute("data-state", "acknowledged")
            await expect(card).to_contain_text("Acknowledged by alice")
            row = await db.fetchrow("SELECT state, acknowledged_by FROM alerts")
            assert (row["state"], row["acknowledged_by"]) == ("acknowledged", "alice")

            # -- a device that goes silent flips to offline (its own 1 s limit)
            await db.execute(
                "UPDATE devices SET offline_after_s = 1 WHERE device_id = 'dash-quiet'"
            )
            await expect(quiet).to_have_attribute("data-status", "offline", timeout=10_000)
            await expect(quiet.locator(".dev-status")).to_have_text("offline")

            # -- history through the query API: the charted devices and metrics
            await page.select_option("#h-bucket", "raw")
            await page.click("#h-load")
            await page.wait_for_function("() => window.__dashboard.historyPointCount() >= 6")
            await expect(page.locator("#h-summary")).to_contain_text("raw readings")
            await page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

            # -- disconnect: the page shows it, then resumes without a gap or a duplicate
            before = await page.evaluate(
                "() => window.__dashboard.pointCount('dash-live', 'temperature')"
            )
            await gate.cut()
            await expect(page.locator("#banner")).to_be_visible()
            await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
            await page.screenshot(path=str(shots / "disconnected.png"))
            stored = await db.fetchval("SELECT count(*) FROM readings")
            missed = 5
            for i in range(missed):
                publish(stack, "dash-live", now_ms + 2000 + i * 100, temperature=30.0 + i)

            async def all_stored() -> bool:
                return await db.fetchval("SELECT count(*) FROM readings") == stored + missed

            await wait_until(all_stored)
            gate.restore()
            # Retry now, as a user would; on a loaded machine the page's own backoff may have
            # reconnected first (the banner is gone then): both must end live.
            with contextlib.suppress(playwright_api.TimeoutError):
                await page.click("#banner-retry", timeout=2000)
            await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
            await page.wait_for_function(POINTS, arg=["dash-live", "temperature", before + missed])
            # once more after one more live reading: nothing replayed twice
            publish(stack, "dash-live", now_ms + 3000, temperature=35.0)
            await page.wait_for_function(
                POINTS, arg=["dash-live", "temperature", before + missed + 1]
            )
            times = await page.evaluate(
                "() => window.__dashboard.pointTimes('dash-live', 'temperature')"
            )
            assert len(times) == len(set(times)) == before + missed + 1
            assert gate.connections >= 2
            assert not page_errors, page_errors
        finally:
            await browser.close()
            await admin.close()
            await db.close()


class SocketGate:
    """Routes the page's WebSockets through Playwright so the test can cut them (as a
    network failure would) and refuse new ones until it restores the path."""

    def __init__(self) -> None:
        self.open = True
        self.routes: list[Any] = []
        self.connections = 0

    async def handle(self, route: Any) -> None:
        if not self.open:
            await route.close(code=1013, reason="try again later")
            return
        self.connections += 1
        route.connect_to_server()  # then frames pass through unchanged both ways
        self.routes.append(route)

    async def cut(self) -> None:
        self.open = False
        routes, self.routes = self.routes, []
        for route in routes:
            await route.close(code=1012, reason="cut by the test")

    def restore(self) -> None:
        self.open = True


@pytest.mark.timeout(90)
async def test_anonymous_demo_mode_needs_no_token(
    stack: Stack, broker: BrokerInfo, database_url: str, topic_prefix: str
) -> None:
    """`BRIDGE_AUTH_REQUIRED=false` (the demo mode of `up`): the page connects without asking
    for a token, lists devices over REST and charts them live."""
    demo = {"auth_required": False, "jwt_secret": None}
    anonymous = running_stack(broker.url, database_url, topic_prefix, ingest=False, settings=demo)
    now_ms = int(time.time() * 1000)
    async with anonymous as front:
        publish(stack, "anon-1", now_ms - 2000, temperature=20.0)
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                expect = playwright_api.expect
                await page.goto(f"http://127.0.0.1:{front.port}/")
                await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
                await expect(page.locator("#login")).to_be_hidden()
                device = page.locator('[data-device-id="anon-1"]')
                await expect(device).to_have_attribute("data-status", "online")
                await device.click()
                await page.wait_for_function(POINTS, arg=["anon-1", "temperature", 1])
                publish(stack, "anon-1", now_ms - 1000, temperature=21.0)
                await page.wait_for_function(POINTS, arg=["anon-1", "temperature", 2])
                assert errors == []
            finally:
                await browser.close()
