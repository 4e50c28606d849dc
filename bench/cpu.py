"""CPU time of processes, read from /proc (Linux): what a benchmark phase cost each party.

``utime + stime`` of a process (fields 14 and 15 of /proc/<pid>/stat, in clock ticks) is the
CPU it has used so far. A snapshot before and after a phase gives the CPU seconds spent in
between; a process that appears meanwhile counts from zero, and the CPU of children that
exited meanwhile (PostgreSQL backends of closed connections) shows in their parent's
``cutime + cstime``, which the PostgreSQL figure includes.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:  # gone
        return None
    # the command name (field 2) is in parentheses and may hold spaces
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU seconds ``pid`` has used (plus its waited-for children's when ``children``)."""
    f = _stat_fields(pid)
    if f is None:
        return 0.0
    # after the name: f[0] is field 3 (state), so field n is f[n - 3]
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks / _TICK


def pids_of_user(user: str) -> list[int]:
    """Every process owned by ``user`` (empty when there is no such user)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    out.append(int(name))
            except OSError:
                continue
    return out


@dataclass
class CpuSnapshot:
    """CPU seconds per party at one moment: ``{"ingest": s, "postgres": s, "mosquitto": s}``."""

    seconds: dict[str, float]

    def minus(self, before: CpuSnapshot) -> dict[str, float]:
        return {k: v - before.seconds.get(k, 0.0) for k, v in self.seconds.items()}


def snapshot(parties: dict[str, Iterable[int]], postgres_user: str = "postgres") -> CpuSnapshot:
    """CPU of each named group of pids, and of every process of ``postgres_user`` (its oldest
    process, the postmaster, with its exited children)."""
    seconds = {name: sum(cpu_seconds(p) for p in pids) for name, pids in parties.items()}
    pg = sorted(pids_of_user(postgres_user))
    if pg:
        seconds["postgres"] = cpu_seconds(pg[0], children=True) + sum(
            cpu_seconds(p) for p in pg[1:]
        )
    return CpuSnapshot(seconds)


def per_reading_us(spent: dict[str, float], readings: int) -> dict[str, float]:
    """CPU microseconds per stored reading of each party."""
    return {k: round(v * 1e6 / readings, 1) for k, v in spent.items()} if readings else {}
