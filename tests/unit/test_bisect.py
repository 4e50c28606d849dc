"""Halving a refused batch: every good item committed once, bad ones found, few transactions."""

from __future__ import annotations

import math
import random

import pytest

from ingest.bisect import isolate


class FakeDatabase:
    """Commits a range unless it holds a bad item; records every attempt."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.attempts: list[tuple[int, int]] = []
        self.committed: list[int] = []

    async def attempt(self, lo: int, hi: int) -> bool:
        assert 0 <= lo < hi
        self.attempts.append((lo, hi))
        if any(i in self.bad for i in range(lo, hi)):
            return False
        self.committed.extend(range(lo, hi))
        return True


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1000, 5000])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
async def test_one_bad_item_costs_logarithmic_attempts(n: int, where: str) -> None:
    bad = {"first": 0, "middle": n // 2, "last": n - 1}[where]
    db = FakeDatabase({bad})
    assert await isolate(n, db.attempt) == [bad]
    assert sorted(db.committed) == [i for i in range(n) if i != bad]  # each once
    # the whole batch already failed; then at most two attempts per level plus the leaf
    # (a batch of one message failed alone already: nothing to try)
    limit = 2 * math.ceil(math.log2(n)) + 1 if n > 1 else 0
    assert len(db.attempts) <= limit


async def test_the_average_is_well_below_two_per_level() -> None:
    n, total = 4096, 0
    for bad in range(0, n, 17):
        db = FakeDatabase({bad})
        await isolate(n, db.attempt)
        total += len(db.attempts)
    average = total / len(range(0, n, 17))
    assert average <= 1.6 * math.log2(n) + 1  # versus n = 4096 one message at a time


@pytest.mark.parametrize("seed", range(20))
async def test_several_bad_items(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 3000)
    bad = set(rng.sample(range(n), k=min(n, rng.randint(1, 6))))
    db = FakeDatabase(bad)
    assert await isolate(n, db.attempt) == sorted(bad)
    assert sorted(db.committed) == sorted(set(range(n)) - bad)
    assert len(db.attempts) <= len(bad) * (2 * math.ceil(math.log2(max(n, 2))) + 1)


async def test_all_bad() -> None:
    db = FakeDatabase(set(range(8)))
    assert await isolate(8, db.attempt) == list(range(8))
    assert db.committed == []


async def test_a_failure_needing_two_items_together_loses_neither() -> None:
    # items 3 and 4 fail only when written in one transaction: no item fails alone
    async def attempt(lo: int, hi: int) -> bool:
        calls.append((lo, hi))
        return not (lo <= 3 and hi > 4)

    calls: list[tuple[int, int]] = []
    assert await isolate(8, attempt) == []


async def test_empty() -> None:
    db = FakeDatabase(set())
    assert await isolate(0, db.attempt) == []
    assert db.attempts == []
