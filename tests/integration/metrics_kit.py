"""What the metrics tests share: bridge processes with a metrics port, scraping, parsing, waiting
for a count, promtool."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_until

Key = tuple[str, tuple[tuple[str, str], ...]]  # a sample's name and its labels, sorted
Samples = dict[Key, float]
# Where a scrape comes from: a URL, or a reader of the text (a test that checks the response)
Source = str | Callable[[], Awaitable[str]]


def bridge_env(database_url: str, broker_url: str, prefix: str, state: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_MQTT_URL=broker_url,
        BRIDGE_MQTT_TOPIC_PREFIX=prefix,
        BRIDGE_STATE_DIR=str(state),
        BRIDGE_INGEST_CLIENT_ID=f"metrics-{prefix}",
        BRIDGE_INGEST_BATCH_MAX_WAIT_MS="5",
        **extra,
    )
    return env


@contextlib.contextmanager
def bridge_process(command: str, env: dict[str, str], log: Path) -> Iterator[Any]:
    """``python -m bridge COMMAND``, stopped with SIGTERM (and expected to exit 0) at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", command], env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        assert code == 0, log.read_text()[-3000:]


def get(url: str, accept: str = "text/plain") -> str:
    assert url.startswith("http://127.0.0.1:"), url
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return str(response.read().decode())


async def scrape(url: str) -> str:
    return await asyncio.to_thread(get, url)


async def wait_scrapable(url: str, proc: Any, log: Path, timeout: float = 30) -> None:
    async def answers() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            await scrape(url)
        except OSError:
            return False
        return True

    await wait_until(answers, timeout=timeout, interval=0.2)


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> Key:
    return (name, tuple(sorted(labels.items())))


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get(key(name, **labels), float("nan"))


async def _read(source: Source) -> str:
    return await scrape(source) if isinstance(source, str) else await source()


async def metric(source: Source, name: str, **labels: str) -> float:
    """``name{labels}`` in a fresh scrape (NaN when it is not there)."""
    return value(samples(await _read(source)), name, **labels)


async def scrape_until(source: Source, want: Mapping[Key, float], timeout: float = 20.0) -> Samples:
    """Scrape until every sample in ``want`` has its value; the samples of that scrape. At the
    deadline, fail with each wanted sample's last value next to the one wanted."""
    found: Samples = {}

    async def there() -> bool:
        nonlocal found
        found = samples(await _read(source))
        return all(found.get(k) == v for k, v in want.items())

    try:
        await wait_until(there, timeout=timeout)
    except AssertionError:
        raise AssertionError({k: (found.get(k), v) for k, v in want.items()}) from None
    return found


def promtool_check(text: str) -> None:
    """``promtool check metrics`` on a scrape; fails on any complaint (lint included)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout + done.stderr
    )
