"""Crash points for the fault tests: ``BRIDGE_FAULT=<point>:<n>`` makes the process SIGKILL
itself the n-th time it reaches ``point``, exactly where a real crash hurts most.

Points: ``in_insert`` (inside the batch transaction, after the rows are written, before
commit) and ``after_commit`` (committed, not yet acknowledged to the broker). Unset, as in
production, a check costs one attribute test.
"""

from __future__ import annotations

import os
import signal

POINTS = ("in_insert", "after_commit")


class Faults:
    def __init__(self, spec: str | None = None) -> None:
        self.point: str | None = None
        self.remaining = 0
        if spec:
            point, _, count = spec.partition(":")
            if point not in POINTS or not count.isdigit() or int(count) < 1:
                raise ValueError(f"BRIDGE_FAULT must be one of {POINTS} and :N, not {spec!r}")
            self.point, self.remaining = point, int(count)

    @classmethod
    def from_env(cls) -> Faults:
        return cls(os.environ.get("BRIDGE_FAULT"))

    def hit(self, point: str) -> None:
        if self.point != point:
            return
        self.remaining -= 1
        if self.remaining == 0:
            os.kill(os.getpid(), signal.SIGKILL)
