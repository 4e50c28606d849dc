"""Rate limits (pure; the caller passes the time) and the front's per-connection limits.

The limits and their defaults are listed in docs/protocol.md (section 3, Limits).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float, n: float = 1.0) -> float:
        """0 when allowed; otherwise the seconds to wait before ``n`` tokens are there."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        return (n - self._tokens) / self.rate


class WindowCounter:
    """How many events in the last ``window_s`` seconds, per key (new connections per IP)."""

    def __init__(self, limit: int, window_s: float = 60.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float) -> float:
        """Record an event; 0 when allowed, else seconds until the oldest one expires."""
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._prune(now)
            events = self._events[key] = deque()
        while events and now - events[0] >= self.window_s:
            events.popleft()
        if len(events) >= self.limit:
            return self.window_s - (now - events[0])
        events.append(now)
        return 0.0

    def _prune(self, now: float) -> None:
        for key in [k for k, ev in self._events.items() if not ev or now - ev[-1] >= self.window_s]:
            del self._events[key]


@dataclass
class FrontLimits:
    """What one WebSocket connection may do and hold (set from the settings in bridge/app.py)."""

    auth_timeout_s: float = 10.0
    max_frame_bytes: int = 64 * 1024
    messages_per_s: float = 100.0
    burst: float = 200.0
    max_subscriptions: int = 100
    queue_capacity: int = 1000
    max_behind_s: float = 10.0
    heartbeat_s: float = 20.0
    replay_max: int = 10_000
    # Bytes queued for one client: live frames past this are dropped, and while more than
    # ``room_bytes`` wait, the client's next message is not read (backpressure).
    queue_max_bytes: int = 1 << 20
    room_bytes: int = 256 * 1024
    # Before authentication a connection may send only this much (auth, ping).
    preauth_frame_bytes: int = 16 * 1024
    preauth_messages: int = 10
    # Frames of every kind (data, ping, pong) read per second and saved up: past them
    # reading pauses; far past them the connection is failed with 1008 (bridge/flow.py).
    frames_per_s: float = 400.0
    frame_burst: float = 800.0
    # Messages refused for the rate limit, per second and saved up, before the connection
    # is closed (1008): a client that ignores its 429s is not served more 429s forever.
    rate_strikes_per_s: float = 100.0
    rate_strike_burst: float = 1000.0
    commands_in_flight: int = 8
