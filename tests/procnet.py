"""Which process holds which TCP sockets (Linux /proc), for tests of several processes on
one port."""

from __future__ import annotations

import os
from pathlib import Path


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def sockets_on(port: int, state: str) -> set[str]:
    """Socket inodes of TCP sockets whose local port is ``port`` in ``state`` (01 established,
    0A listening)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(fields[9])
    return inodes


def established_on(port: int) -> set[str]:
    return sockets_on(port, "01")


def sockets_of(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out
