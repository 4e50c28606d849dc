"""What `simulate` shows while it runs: sent, acknowledged, rate, errors, broker state.

The rate is measured over a sliding window of the last few seconds (not since the start, and
not per burst), so it reads steady when the publishing is steady. On a terminal one live
line is redrawn; on a pipe a plain line is printed every couple of seconds, the first after
one second. Warnings (the broker went away, came back) are printed as lines of their own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TextIO

from rich.live import Live
from rich.text import Text

from bridge.console import console_for, is_terminal

WINDOW_S = 5.0
FIRST_LINE_S = 1.0
LINE_EVERY_S = 2.0


@dataclass(frozen=True, slots=True)
class Totals:
    sent: int
    acked: int
    errors: int


class RateWindow:
    """Messages per second over the last ``window_s`` seconds (pure: times are passed in)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, sent: int) -> float:
        self._samples.append((at, sent))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        t0, s0 = self._samples[0]
        return (sent - s0) / (at - t0) if at > t0 else 0.0


def progress_line(elapsed: float, totals: Totals, rate: float, metrics: int) -> str:
    return (
        f"{elapsed:6.1f}s sent {totals.sent:,} messages ({totals.sent * metrics:,} readings), "
        f"acked {totals.acked:,}, {rate:,.0f} msg/s, errors {totals.errors:,}"
    )


class Report:
    """Progress on ``out``: a live line on a terminal, periodic lines on a pipe."""

    def __init__(self, out: TextIO, metrics: int) -> None:
        self.out = out
        self.metrics = metrics
        self.rates = RateWindow()
        self.console = console_for(out)
        self._live: Live | None = None
        self._next_line = FIRST_LINE_S
        if is_terminal(out):
            self._live = Live(Text(""), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()

    def update(self, elapsed: float, totals: Totals) -> None:
        rate = self.rates.add(elapsed, totals.sent)
        line = progress_line(elapsed, totals, rate, self.metrics)
        if self._live is not None:
            self._live.update(Text(line))
        elif elapsed >= self._next_line:
            self._next_line = elapsed + LINE_EVERY_S
            print(f"  {line}", file=self.out, flush=True)

    def say(self, line: str) -> None:
        """A line of its own (above the live line on a terminal)."""
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
