"""How many CSV exports may stream at once; pure bookkeeping, no I/O.

An export holds one database connection of the front's pool for as long as it streams, and
the client sets that pace. Eight clients that never read once held all eight connections:
REST, snapshots and the health check waited behind them. Exports therefore get their own,
smaller budget (per process and per subject); a request over it is refused at once with a
``Retry-After`` instead of waiting for a connection.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

RETRY_AFTER_S = 10  # exports last seconds to minutes: retrying sooner mostly finds it full


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error: str
    message: str
    retry_after_s: int = RETRY_AFTER_S


@dataclass
class ExportSlots:
    max_total: int = 2
    max_per_subject: int = 1
    _by_subject: Counter[str] = field(default_factory=Counter)

    @property
    def in_use(self) -> int:
        return sum(self._by_subject.values())

    def acquire(self, subject: str) -> Refusal | None:
        """Take a slot for ``subject``, or say why not (nothing is taken then)."""
        if self._by_subject[subject] >= self.max_per_subject:
            return Refusal(
                429,
                "rate_limit_exceeded",
                f"at most {self.max_per_subject} CSV export(s) at a time per token subject; "
                "retry when the running one has finished",
            )
        if self.in_use >= self.max_total:
            return Refusal(
                503,
                "unavailable",
                f"the server is running its maximum of {self.max_total} CSV exports; retry later",
            )
        self._by_subject[subject] += 1
        return None

    def release(self, subject: str) -> None:
        self._by_subject[subject] -= 1
        if self._by_subject[subject] <= 0:
            del self._by_subject[subject]
