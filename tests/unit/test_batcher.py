import pytest

from ingest.batcher import Batcher


def test_empty_batch_is_never_due() -> None:
    b: Batcher[int] = Batcher(max_items=3, max_wait=1.0)
    assert b.due_in(0.0) is None


def test_due_by_age_of_oldest_item() -> None:
    b: Batcher[int] = Batcher(max_items=10, max_wait=1.0)
    b.add(1, now=100.0)
    b.add(2, now=100.5)
    assert b.due_in(100.2) == pytest.approx(0.8)
    assert b.due_in(101.0) == 0.0
    assert b.due_in(105.0) == 0.0


def test_due_by_size_and_take_caps_at_max() -> None:
    b: Batcher[int] = Batcher(max_items=3, max_wait=60.0)
    for i in range(5):
        b.add(i, now=0.0)
    assert b.due_in(0.0) == 0.0
    assert b.take(now=1.0) == [0, 1, 2]
    assert len(b) == 2
    # the remainder's clock restarts when the previous batch was cut
    assert b.due_in(1.0) == pytest.approx(60.0)
    assert b.take(now=2.0) == [3, 4]
    assert b.due_in(2.0) is None


def test_drop_forgets_everything() -> None:
    b: Batcher[int] = Batcher(max_items=3, max_wait=1.0)
    b.add(1, now=0.0)
    assert list(b.drop()) == [1]
    assert len(b) == 0 and b.due_in(0.0) is None


@pytest.mark.parametrize(("items", "wait"), [(0, 1.0), (1, -1.0)])
def test_bad_limits(items: int, wait: float) -> None:
    with pytest.raises(ValueError):
        Batcher(max_items=items, max_wait=wait)
