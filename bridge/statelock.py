"""One ``up`` per state directory: an exclusive lock held for the life of the process.

Two ``up`` on one state directory would share the embedded database, overwrite each other's
``runtime.json`` and broker port file, and leave ``simulate``, ``query`` and ``doctor``
talking to the wrong one. The lock is ``flock`` on ``<state>/up.lock``: the kernel releases
it when the process ends, however it ends, so there is never a stale lock to clean up. The
file also says who holds it (pid, WebSocket URL, since when) for the refusal message; the
file itself stays (removing it would let a third process lock a new file while a second
still waits on the old one).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOCK_FILE = "up.lock"


class StateDirInUse(RuntimeError):
    """Another process holds the state directory; the message names it."""


class StateLock:
    """The exclusive lock on a state directory; ``acquire`` raises :class:`StateDirInUse`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None
        self._since = ""

    def acquire(self, ws_url: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise StateDirInUse(
                f"another `up` is running on {self.state_dir} ({holder}); stop it first, or "
                "give this one its own BRIDGE_STATE_DIR"
            ) from None
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._since = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
        self.update(ws_url)

    def update(self, ws_url: str) -> None:
        """Say who holds the lock (again once the real WebSocket port is known)."""
        if self._fd is None:
            return
        info = {"pid": os.getpid(), "ws_url": ws_url, "since": self._since}
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        if isinstance(info, dict):
            return info
    return {}


def _describe(info: dict[str, Any]) -> str:
    """``pid 123, ws://127.0.0.1:8765/ws, since ...``: what the holder wrote; a holder that
    has not written yet (it locks first) is just "starting"."""
    parts = []
    if isinstance(info.get("pid"), int):
        parts.append(f"pid {info['pid']}")
    if isinstance(info.get("ws_url"), str):
        parts.append(info["ws_url"])
    if isinstance(info.get("since"), str):
        parts.append(f"since {info['since']}")
    return ", ".join(parts) or "starting"
