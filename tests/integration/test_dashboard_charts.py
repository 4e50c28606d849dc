"""The dashboard's charts in headless Chromium against a real stack: the y axis holds every
drawn value, drag-zoom and double-click reset, the CSV download, the view in the URL, alert
markers and links, the severity filter, the light theme and the phone layout.

The page's read-only ``window.__dashboard`` reports the scales as uPlot drew them; every wait
is on a condition."""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.frontkit import Stack, recv
from tests.integration.test_dashboard import CHROMIUM, CHROMIUM_ARGS, SCOPES, publish, send

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
# Values the old axis clipped (it stopped half a step above its top tick).
READINGS = {
    "rssi": [-32.0, -40.0, -61.5, -75.0, -33.3],
    "battery": [97.0, 12.0, 100.0, 55.5, 99.9],
    "humidity": [99.0, 3.0, 42.0, 0.5, 100.0],
}
POINTS = "([d, m, n]) => window.__dashboard.pointCount(d, m) >= n"


@contextlib.asynccontextmanager
async def browser_page(stack: Stack, **context: Any) -> AsyncIterator[tuple[Any, list[str]]]:
    """A signed-in page (the token stays in sessionStorage, so a reload keeps it)."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(
                **{"viewport": {"width": 1280, "height": 900}, **context}
            )
            page = await ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(stack.url.replace("ws://", "http://") + "/")
            await page.fill("#login-token", stack.token(scope=SCOPES))
            await page.click("#login-go")
            await playwright_api.expect(page.locator("#conn")).to_have_attribute(
                "data-state", "live"
            )
            yield page, errors
        finally:
            await browser.close()


def publish_readings(stack: Stack, device: str, now_ms: int) -> int:
    count = len(READINGS["rssi"])
    for i in range(count):
        values = {metric: series[i] for metric, series in READINGS.items()}
        publish(stack, device, now_ms - 20_000 + i * 1000, **values)
    return count


async def download_csv(page: Any, button: str, folder: Path) -> list[list[str]]:
    async with page.expect_download() as info:
        await page.click(button)
    download = await info.value
    saved = folder / download.suggested_filename
    await download.save_as(saved)
    assert saved.suffix == ".csv"
    with saved.open(newline="") as f:
        return list(csv.reader(f))


async def assert_within(page: Any, getter: str, metric: str, expected: int) -> dict[str, Any]:
    await page.wait_for_function(
        f"([m, n]) => (window.__dashboard.{getter}(m)?.values.length ?? 0) >= n",
        arg=[metric, expected],
    )
    scales = await page.evaluate(f"(m) => window.__dashboard.{getter}(m)", metric)
    assert scales["values"], metric
    for value in scales["values"]:
        assert scales["yMin"] <= value <= scales["yMax"], (metric, value, scales)
    return dict(scales)


@pytest.mark.timeout(120)
async def test_axes_hold_every_point_zoom_csv_and_url_round_trip(
    stack: Stack, tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    n = publish_readings(stack, "clip-a", now_ms)
    publish(stack, "clip-b", now_ms - 10_000, rssi=-90.0, battery=5.0, humidity=50.0)
    expect = playwright_api.expect
    async with browser_page(stack) as (page, errors):
        for device in ("clip-a", "clip-b"):
            await page.locator(f'[data-device-id="{device}"]').click()
            await page.wait_for_function(POINTS, arg=[device, "rssi", 1])
        await page.wait_for_function(POINTS, arg=["clip-a", "rssi", n])

        # -- live charts: every value inside the y scale, old clipping values included
        for metric in READINGS:
            scales = await assert_within(page, "liveScales", metric, n + 1)
        scales = await assert_within(page, "liveScales", "rssi", n + 1)
        assert scales["yMax"] >= -32 and scales["yMin"] <= -90

        # -- drag across the chart zooms every live chart into that range; double-click resets
        over = page.locator('.chart-card[data-metric="rssi"] .u-over')
        box = await over.bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        await page.mouse.move(box["x"] + box["width"] * 0.55, y)
        await page.mouse.down()
        await page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=5)
        await page.mouse.move(box["x"] + box["width"] * 0.95, y, steps=5)
        await page.mouse.up()
        await page.wait_for_function("() => window.__dashboard.liveZoom() !== null")
        await expect(page.locator("#live-reset")).to_be_visible()
        window_ms = 300_000
        # the other charts take the zoom when they are next drawn (the next animation frame)
        await page.wait_for_function(
            "([m, w]) => { const s = window.__dashboard.liveScales(m);"
            " return s.xMax - s.xMin < w * 0.5 }",
            arg=["battery", window_ms],
        )
        await over.dblclick()
        await page.wait_for_function("() => window.__dashboard.liveZoom() === null")
        await page.wait_for_function(
            "([m, w]) => { const s = window.__dashboard.liveScales(m);"
            " return Math.abs(s.xMax - s.xMin - w) < 1 }",
            arg=["battery", window_ms],
        )
        await expect(page.locator("#live-reset")).to_be_hidden()

        # -- the cursor readout: its time and each line's nearest reading
        readout = page.locator('.chart-card[data-metric="rssi"] .readout')
        await page.mouse.move(box["x"] + box["width"] * 0.95, y)
        await expect(readout.locator(".time")).not_to_have_text("")
        await expect(readout.locator(".value").first).not_to_have_text(
            "\u2013"
        )  # the "no value" dash

        # -- the live panel's CSV: the selected devices, charted metrics and window, raw
        rows = await download_csv(page, "#live-csv", tmp_path)
        assert rows[0] == ["device_id", "metric", "ts", "value"]
        assert len(rows) - 1 == (n + 1) * len(READINGS)
        assert {r[0] for r in rows[1:]} == {"clip-a", "clip-b"}
        assert {r[1] for r in rows[1:]} == set(READINGS)
        assert sorted(float(r[3]) for r in rows[1:] if r[1] == "rssi") == sorted(
            READINGS["rssi"] + [-90.0]
        )

        # -- history of the charted devices and metrics: raw, then its CSV
        await page.locator('.chip[data-metric="humidity"]').click()  # chart 3 of 4 metrics
        await page.select_option("#window", "3600000")
        await page.select_option("#h-range", "15m")
        await page.select_option("#h-bucket", "raw")
        await page.click("#h-load")
        await page.wait_for_function("() => window.__dashboard.historyPointCount() > 0")
        shown = await page.evaluate("() => window.__dashboard.shownMetrics()")
        assert shown == ["battery", "rssi"]
        history_points = await page.evaluate("() => window.__dashboard.historyPointCount()")
        assert history_points == (n + 1) * len(shown)
        for metric in shown:
            await assert_within(page, "historyScales", metric, 1)
        rows = await download_csv(page, "#h-csv", tmp_path)
        assert rows[0] == ["device_id", "metric", "ts", "value"]
        assert len(rows) - 1 == history_points
        assert {r[0] for r in rows[1:]} == {"clip-a", "clip-b"}
        assert {r[1] for r in rows[1:]} == set(shown)

        # -- the view is in the URL; a reload restores it (and loads the history again)
        await page.wait_for_function("() => location.hash.includes('r=15m')")
        hash_ = await page.evaluate("() => location.hash")
        assert "d=clip-a,clip-b" in hash_ and "w=1h" in hash_ and "b=raw" in hash_
        assert "m=" in hash_ and "humidity" not in hash_
        await page.reload()
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        assert await page.evaluate("() => window.__dashboard.selected()") == ["clip-a", "clip-b"]
        await expect(page.locator("#window")).to_have_value("3600000")
        await expect(page.locator("#h-bucket")).to_have_value("raw")
        await page.wait_for_function(
            "(n) => window.__dashboard.historyPointCount() === n", arg=history_points
        )
        assert sorted(await page.evaluate("() => window.__dashboard.shownMetrics()")) == sorted(
            shown
        )
        # a malformed or hostile fragment is dropped, not used
        await page.evaluate("() => { location.hash = '#d=%3Cimg%3E,ok-1&w=9y&r=abc' }")
        await page.wait_for_function("() => window.__dashboard.selected().join() === 'ok-1'")
        assert errors == [], errors


async def create_rule(stack: Stack, rule_id: str, metric: str, severity: str) -> None:
    admin = await stack.client(stack.token(scope="admin", sub="root"))
    try:
        await recv(admin)
        rule = {
            "rule_id": rule_id,
            "metric": metric,
            "condition": "gt",
            "threshold": 50,
            "clear_threshold": 45,
            "severity": severity,
            "devices": ["alarm-1"],
        }
        await send(admin, {"type": "create_rule", "rule": rule})
        assert (await recv(admin))["type"] == "rule_created"
    finally:
        await admin.close()


@pytest.mark.timeout(120)
async def test_alert_markers_link_and_severity_filter(stack: Stack) -> None:
    await create_rule(stack, "hot", "temperature", "critical")
    await create_rule(stack, "wet", "humidity", "warning")
    now_ms = int(time.time() * 1000)
    publish(stack, "alarm-1", now_ms - 5000, temperature=20.0, humidity=20.0)
    expect = playwright_api.expect
    async with browser_page(stack) as (page, errors):
        critical = page.locator('.alert-card[data-severity="critical"]')
        warning = page.locator('.alert-card[data-severity="warning"]')
        for attempt in range(40):  # rules reload every 0.5 s in this stack
            publish(stack, "alarm-1", now_ms + attempt * 10, temperature=60.0, humidity=80.0)
            with contextlib.suppress(playwright_api.TimeoutError):
                await critical.wait_for(timeout=500)
                await warning.wait_for(timeout=500)
                break
        await expect(critical).to_have_count(1)
        await expect(warning).to_have_count(1)

        # -- the severity filter
        await page.select_option("#al-severity", "critical")
        await expect(warning).to_have_count(0)
        await expect(critical).to_have_count(1)
        await page.wait_for_function("() => location.hash.includes('sev=critical')")
        await page.select_option("#al-severity", "all")
        await expect(warning).to_have_count(1)

        # -- the alert's link opens its device and metric around that time, marker included
        await critical.locator("a.alert-where").click()
        await page.wait_for_function("() => window.__dashboard.selected().join() === 'alarm-1'")
        assert await page.evaluate("() => window.__dashboard.shownMetrics()") == ["temperature"]
        await page.wait_for_function("() => window.__dashboard.historyPointCount() > 0")
        await page.wait_for_function(
            "() => (window.__dashboard.historyScales('temperature')?.markers ?? 0) >= 1"
        )
        await page.wait_for_function(
            "() => (window.__dashboard.liveScales('temperature')?.markers ?? 0) >= 1"
        )
        history = await assert_within(page, "historyScales", "temperature", 1)
        assert history["yMax"] >= 60
        assert errors == [], errors


@pytest.mark.timeout(90)
async def test_light_theme_and_phone_layout(stack: Stack) -> None:
    publish(stack, "phone-1", int(time.time() * 1000) - 2000, temperature=20.0)
    phone = {"viewport": {"width": 390, "height": 844}, "color_scheme": "light"}
    luminance = (
        "() => { const [r, g, b] = getComputedStyle(document.body).backgroundColor"
        ".match(/\\d+/g).map(Number); return (r + g + b) / 3 }"
    )
    async with browser_page(stack, **phone) as (page, errors):
        assert await page.evaluate(luminance) > 200
        device = page.locator('[data-device-id="phone-1"]')
        await device.click()
        await page.wait_for_function(POINTS, arg=["phone-1", "temperature", 1])
        tops = {}
        for name, selector in [
            ("devices", ".panel.devices"),
            ("live", ".panel.live"),
            ("strip", ".strip"),
        ]:
            box = await page.locator(selector).bounding_box()
            assert box is not None
            tops[name] = box["y"]
        assert tops["devices"] < tops["live"] < tops["strip"], tops
        assert errors == [], errors
    async with browser_page(stack, color_scheme="dark") as (page, errors):
        assert await page.evaluate(luminance) < 50
