"""How much of a device's garbage is kept (pure; the clock is passed in).

Every message that can never be stored becomes a dead letter, and a device sending nothing
else could write its whole bandwidth into the database (a 65 KiB payload a millisecond is about
a gigabyte a minute). So each device id gets a token bucket of dead letters: within it they are
stored and reported to the device as always; beyond it a message is only counted, then
acknowledged like any other. Messages whose topic names no valid device id share one bucket.
Stored payloads are cut to a size that is enough to see what went wrong.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

# The key of the bucket shared by messages without a usable device id; no device id is empty.
SHARED = ""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """A token bucket per key, for at most ``max_keys`` keys (least recently used evicted).

    An evicted key starts again with a full bucket; with ``max_keys`` above the number of
    devices that misbehave at once this never matters, and the table's memory stays bounded
    whatever ids arrive.
    """

    def __init__(self, rate_per_s: float, burst: float, max_keys: int) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s must be > 0, burst >= 1 and max_keys >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> bool:
        """Spend one token of ``key``'s bucket if it has one."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
            bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False


class DeadLetterBudget:
    """Which dead letters to keep, and a count of the ones dropped for the periodic report."""

    def __init__(
        self,
        per_minute: float,
        *,
        max_devices: int = 10_000,
        report_every_s: float = 60.0,
    ) -> None:
        # A minute's worth may come at once (a device reconnecting with a queue of bad
        # messages), then one every 60/per_minute seconds.
        self._buckets = TokenBuckets(per_minute / 60.0, max(1.0, per_minute), max_devices)
        self._report_every_s = report_every_s
        self._last_report: float | None = None
        self._max_devices = max_devices
        self.dropped = 0  # since start
        self._unreported: Counter[str] = Counter()

    def allow(self, device_id: str | None, now: float) -> bool:
        """Whether to store (and report) a dead letter of ``device_id`` (None: no valid id)."""
        key = device_id or SHARED
        if self._buckets.take(key, now):
            return True
        self.dropped += 1
        # Bounded like the buckets: past max_devices ids, new ones are counted as shared.
        if key in self._unreported or len(self._unreported) < self._max_devices:
            self._unreported[key] += 1
        else:
            self._unreported[SHARED] += 1
        return False

    def report(self, now: float) -> str | None:
        """A line for the log about the dead letters dropped since the last one, at most once
        per ``report_every_s`` (the first one at once); None when there is nothing to say."""
        if not self._unreported:
            return None
        if self._last_report is not None and now - self._last_report < self._report_every_s:
            return None
        total = sum(self._unreported.values())
        top = ", ".join(
            f"{key or '<no valid device id>'}: {n}" for key, n in self._unreported.most_common(5)
        )
        devices = len(self._unreported)
        self._unreported.clear()
        self._last_report = now
        return (
            f"{total} dead letter(s) over the per-device budget were not stored "
            f"({devices} device(s); most: {top})"
        )


def keep_payload(payload: bytes, limit: int) -> tuple[bytes, str]:
    """The part of ``payload`` a dead letter keeps, and a note for its detail when cut."""
    if len(payload) <= limit:
        return payload, ""
    return payload[:limit], f" [payload truncated: first {limit} of {len(payload)} bytes kept]"
