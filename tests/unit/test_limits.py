import pytest

from bridge.limits import TokenBucket, WindowCounter


def test_token_bucket_burst_then_rate() -> None:
    b = TokenBucket(rate=100, burst=200)
    assert all(b.take(0.0) == 0 for _ in range(200))
    assert b.take(0.0) == pytest.approx(0.01)
    assert b.take(0.5) == 0  # 50 tokens came back
    for _ in range(49):
        assert b.take(0.5) == 0
    assert b.take(0.5) > 0


def test_window_counter_per_key() -> None:
    w = WindowCounter(limit=10, window_s=60)
    assert all(w.hit("1.2.3.4", float(i)) == 0 for i in range(10))
    assert w.hit("1.2.3.4", 10.0) == pytest.approx(50.0)
    assert w.hit("5.6.7.8", 10.0) == 0
    assert w.hit("1.2.3.4", 60.5) == 0  # the first one expired
