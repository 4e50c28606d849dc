from bridge.flow import FrameBudget


def test_within_the_burst_no_wait() -> None:
    b = FrameBudget(rate=10, burst=3)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_past_the_budget_the_debt_grows_with_every_frame() -> None:
    b = FrameBudget(rate=10, burst=2)
    b.take(0.0)
    b.take(0.0)
    waits = [b.take(0.0) for _ in range(50)]
    assert waits[0] == 0.1 and waits[-1] == 5.0  # a flood is seen as one
    assert waits == sorted(waits)


def test_the_debt_is_paid_back_over_time() -> None:
    b = FrameBudget(rate=10, burst=2)
    for _ in range(12):
        b.take(0.0)  # 10 frames in debt: 1 s
    assert b.take(1.1) == 0.0  # paid, and one frame of the refill spent
