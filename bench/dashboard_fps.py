"""Frames per second of the dashboard's live chart: the hand-written canvas chart (chart.js as
of a git revision, default the last one before uPlot), the first uPlot chart (re-joining every
line onto one time column on every redraw) and the current one, in the same run.

Each variant draws 6 series x 15 minutes at 1 Hz (5,400 points) in headless Chromium; every
animation frame adds one reading per series, slides the window and redraws (the worst case of
a busy dashboard: the page itself redraws only charts with news). It counts
requestAnimationFrame callbacks for ``--seconds`` and times each redraw (giving the data plus
drawing). Chromium caps frames at the display rate (60/s headless), so the redraw time is
the figure that shows headroom.

    .venv/bin/python -m bench.dashboard_fps [--seconds 10] [--runs 3]
        [--before <rev>] [--first <rev>]

Runs are interleaved (before, first, after, before, ...) so that other work on the machine
weighs on each alike; each line printed is the medians over the runs.

Needs Chromium (/usr/bin/chromium or BRIDGE_TEST_CHROMIUM) and playwright (the test extra).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "bridge" / "static"
CHROMIUM = Path(os.environ.get("BRIDGE_TEST_CHROMIUM", "/usr/bin/chromium"))
BEFORE = "e11e0ac"  # the last revision with the hand-written canvas chart
FIRST = "42b1972"  # the first uPlot chart, joining from scratch on every redraw

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="new/vendor/uPlot.min.css">
<script src="new/vendor/uPlot.iife.min.js"></script>
<style>#box { width: 900px; height: 240px; position: relative }
canvas { width: 100%; height: 100% }</style>
</head><body><div id="box"></div><script type="module" src="run.js"></script></body></html>"""

RUN = Path(__file__).with_suffix(".js")  # the page side: data, animation, timing


def prepare(tmp: Path, before: str, first: str) -> None:
    for folder, rev in (("old", before), ("first", first)):
        (tmp / folder).mkdir()
        chart = subprocess.run(
            ["git", "show", f"{rev}:bridge/static/chart.js"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        (tmp / folder / "chart.js").write_bytes(chart)
    shutil.copytree(STATIC, tmp / "new")
    (tmp / "index.html").write_text(PAGE)
    shutil.copy(RUN, tmp / "run.js")


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


async def measure(url: str, variant: str, seconds: float) -> dict[str, float]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 400})
            await page.goto(url)
            await page.wait_for_function("() => typeof window.runBench === 'function'")
            result: dict[str, float] = await page.evaluate(
                "([v, s]) => window.runBench(v, s)", [variant, seconds]
            )
            return result
        finally:
            await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", default=BEFORE, help="git revision of the old chart.js")
    parser.add_argument("--first", default=FIRST, help="git revision of the first uPlot chart.js")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp), args.before, args.first)
        handler = functools.partial(Quiet, directory=tmp)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        try:
            variants = ("before", "first", "after")
            runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
            for _ in range(args.runs):
                for variant in variants:
                    runs[variant].append(asyncio.run(measure(url, variant, args.seconds)))
            for variant in variants:
                summary: dict[str, Any] = {
                    key: round(statistics.median(r[key] for r in runs[variant]), 2)
                    for key in runs[variant][0]
                }
                summary["runs_median_ms"] = [round(r["median_ms"], 2) for r in runs[variant]]
                print(variant, json.dumps(summary))
        finally:
            server.shutdown()


if __name__ == "__main__":
    main()
