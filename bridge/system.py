"""System status (``system/{component}``): what this bridge process and its host are doing."""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.service import IngestService


def component_name() -> str:
    """``bridge-<host>``, reduced to the id alphabet so it is safe in a topic."""
    host = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:50] or "host"
    return f"bridge-{host}"


def _memory_percent() -> float | None:
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        total = float(info["MemTotal"].split()[0])
        available = float(info["MemAvailable"].split()[0])
        return round(100 * (1 - available / total), 1)
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return None


class SystemSampler:
    def __init__(
        self,
        component: str,
        ingest: IngestService | None,
        connections: Callable[[], int] | None,
        disk_path: Path,
    ) -> None:
        self.component = component
        self.ingest = ingest
        self.connections = connections
        self.disk_path = disk_path
        self._last: tuple[float, float, int, int] | None = None  # wall, cpu, stored, dead

    def sample(self) -> dict[str, Any]:
        now, cpu = time.monotonic(), sum(os.times()[:2])
        stats = self.ingest.stats if self.ingest is not None else None
        stored = stats.readings_stored if stats else 0
        dead = stats.dead_letters if stats else 0
        out: dict[str, Any] = {
            "component": self.component,
            "memory_usage": _memory_percent(),
            "active_connections": self.connections() if self.connections else 0,
        }
        try:
            disk = shutil.disk_usage(self.disk_path)
            out["disk_usage"] = round(100 * disk.used / disk.total, 1)
        except OSError:
            out["disk_usage"] = None
        if self._last is not None:
            wall, last_cpu, last_stored, last_dead = self._last
            elapsed = max(now - wall, 1e-6)
            out["cpu_usage"] = round(100 * (cpu - last_cpu) / elapsed, 1)
            out["ingest_rate"] = round((stored - last_stored) / elapsed, 1)
            out["dead_letters_per_min"] = round(60 * (dead - last_dead) / elapsed, 1)
        else:
            out.update(cpu_usage=None, ingest_rate=None, dead_letters_per_min=None)
        recent = list(stats.latencies_ms)[-1000:] if stats else []
        out["ingest_lag_ms"] = round(statistics.median(recent), 1) if recent else None
        self._last = (now, cpu, stored, dead)
        return out
