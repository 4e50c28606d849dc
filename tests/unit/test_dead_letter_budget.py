"""The dead-letter budget per device: token buckets, bounded memory, a periodic report."""

from __future__ import annotations

import pytest

from ingest.dead_letters import DeadLetterBudget, TokenBuckets, keep_payload


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    buckets = TokenBuckets(rate_per_s=1.0, burst=3, max_keys=10)
    assert [buckets.take("d", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert buckets.take("d", 0.5) is False  # half a token
    assert buckets.take("d", 1.0) is True
    assert buckets.take("d", 100.0) is True  # refilled, but never beyond the burst
    assert [buckets.take("d", 100.0) for _ in range(3)] == [True, True, False]


def test_devices_do_not_share_a_bucket() -> None:
    buckets = TokenBuckets(rate_per_s=0.001, burst=1, max_keys=10)
    assert buckets.take("a", 0.0) and not buckets.take("a", 0.0)
    assert buckets.take("b", 0.0)


def test_memory_is_bounded_whatever_ids_arrive() -> None:
    buckets = TokenBuckets(rate_per_s=1.0, burst=1, max_keys=100)
    for i in range(10_000):
        buckets.take(f"d{i}", float(i))
    assert len(buckets) == 100


def test_the_most_recently_active_device_is_not_evicted() -> None:
    buckets = TokenBuckets(rate_per_s=0.0001, burst=1, max_keys=3)
    assert buckets.take("flood", 0.0)
    for i in range(10):
        buckets.take("flood", 0.0)  # stays most recent, so stays limited
        buckets.take(f"other{i}", 0.0)
    assert not buckets.take("flood", 0.0)


@pytest.mark.parametrize(("rate", "burst", "keys"), [(0, 1, 1), (-1, 1, 1), (1, 0.5, 1), (1, 1, 0)])
def test_invalid_buckets(rate: float, burst: float, keys: int) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate, burst, keys)


def test_budget_per_device_and_one_shared_bucket_for_invalid_ids() -> None:
    budget = DeadLetterBudget(per_minute=2)
    assert [budget.allow("flood", 0.0) for _ in range(4)] == [True, True, False, False]
    assert budget.allow("other", 0.0)
    # messages without a valid device id all draw from one bucket
    assert [budget.allow(None, 0.0) for _ in range(3)] == [True, True, False]
    assert budget.dropped == 3
    assert budget.allow("flood", 30.0)  # 2 per minute: one back after 30 s


def test_report_at_most_once_per_interval_and_only_when_something_was_dropped() -> None:
    budget = DeadLetterBudget(per_minute=1, report_every_s=60)
    assert budget.report(0.0) is None
    assert budget.allow("a", 0.0)
    assert not any(budget.allow("a", 0.0) for _ in range(5))
    assert budget.allow(None, 0.0) and not budget.allow(None, 0.0)
    first = budget.report(1.0)
    assert first is not None and first.startswith("6 dead letter(s)") and "a: 5" in first
    assert "<no valid device id>: 1" in first
    budget.allow("a", 2.0)
    assert budget.report(30.0) is None  # within the interval: kept for the next report
    later = budget.report(61.0)
    assert later is not None and later.startswith("1 dead letter(s)")
    assert budget.report(200.0) is None  # nothing new


def test_unreported_counts_are_bounded_too() -> None:
    budget = DeadLetterBudget(per_minute=1, max_devices=5)
    for i in range(1000):
        budget.allow(f"d{i}", 0.0)
        budget.allow(f"d{i}", 0.0)
    report = budget.report(0.0)
    assert report is not None and report.startswith("1000 dead letter(s)")
    assert "(6 device(s)" in report  # five named, the rest counted together


def test_keep_payload() -> None:
    assert keep_payload(b"abc", 3) == (b"abc", "")
    kept, note = keep_payload(b"x" * 70_000, 4096)
    assert kept == b"x" * 4096
    assert note == " [payload truncated: first 4096 of 70000 bytes kept]"
