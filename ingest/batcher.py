"""When to cut a batch: by size or by the age of its oldest message (pure, clock passed in)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Batcher(Generic[T]):
    """Collects items; ``ready(now)`` says whether a batch should be written now.

    A batch is cut when it holds ``max_items`` or when its oldest item has waited
    ``max_wait`` seconds. While a write is in flight, new items keep collecting, so under load
    batches grow on their own (up to ``max_items``) and the writer never idles.
    """

    max_items: int
    max_wait: float

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.max_wait < 0:
            raise ValueError("max_items must be >= 1 and max_wait >= 0")
        self._items: list[T] = []
        self._first_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> None:
        if self._first_at is None:
            self._first_at = now
        self._items.append(item)

    def due_in(self, now: float) -> float | None:
        """Seconds until the batch is due (0 = now); None when empty."""
        if self._first_at is None:
            return None
        if len(self._items) >= self.max_items:
            return 0.0
        return max(0.0, self._first_at + self.max_wait - now)

    def take(self, now: float) -> list[T]:
        """Remove and return up to ``max_items`` oldest items."""
        batch = self._items[: self.max_items]
        self._items = self._items[self.max_items :]
        self._first_at = now if self._items else None
        return batch

    def drop(self) -> Sequence[T]:
        """Forget everything collected (the connection that delivered it is gone)."""
        dropped, self._items, self._first_at = self._items, [], None
        return dropped
