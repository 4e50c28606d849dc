from bridge.outbound import OutboundQueue, SharedBudget


def test_fifo_without_keys() -> None:
    q = OutboundQueue(capacity=3)
    for f in (b"a", b"b", b"c"):
        assert q.put(f, now=0)
    assert q.pop() == [b"a", b"b", b"c"]


def test_conflation_keeps_the_latest_value_in_the_first_slot() -> None:
    q = OutboundQueue(capacity=10)
    q.put(b"t1=1", now=0, key=("d1", "t"))
    q.put(b"alert", now=0)
    q.put(b"t1=2", now=0, key=("d1", "t"))
    q.put(b"h1=5", now=0, key=("d1", "h"))
    assert q.conflated == 1
    assert q.pop() == [b"t1=2", b"alert", b"h1=5"]
    # the client is told (slow_consumer warning), once per replaced value
    assert q.take_unreported_conflated() == 1 and q.take_unreported_conflated() == 0


def test_full_queue_drops_and_reports_then_conflates_still() -> None:
    q = OutboundQueue(capacity=2, max_behind_s=10)
    assert q.put(b"x", now=0, key="k1")
    assert q.put(b"y", now=0)
    assert not q.put(b"z", now=1)  # full: dropped
    assert q.put(b"x2", now=2, key="k1")  # a queued key is still refreshed when full
    assert q.dropped == 1 and q.take_unreported_drops() == 1 and q.take_unreported_drops() == 0
    assert not q.too_far_behind(now=10.9)
    assert q.too_far_behind(now=11.0)
    assert q.pop(limit=1) == [b"x2"]
    assert q.full_since is None and not q.too_far_behind(now=100)


def test_urgent_frames_jump_the_line() -> None:
    q = OutboundQueue(capacity=2)
    q.put(b"a", now=0)
    q.put(b"b", now=0)
    q.put(b"warn", now=0, force=True, urgent=True)
    assert q.pop() == [b"warn", b"a", b"b"]


def test_no_conflation_until_the_client_falls_behind() -> None:
    q = OutboundQueue(capacity=100)  # conflates from 10 queued frames
    for v in range(9):
        q.put(b"t=%d" % v, now=0, key=("d1", "t"))
    assert q.conflated == 0 and len(q) == 9  # every point kept while the client keeps up
    q.put(b"h=1", now=0, key=("d1", "h"))
    q.put(b"t=9", now=0, key=("d1", "t"))  # 10 queued: behind, so the latest value wins
    assert q.conflated == 1 and len(q) == 10
    assert q.pop()[-2:] == [b"t=9", b"h=1"]


def test_bytes_are_counted_and_live_frames_past_the_byte_cap_dropped() -> None:
    q = OutboundQueue(capacity=100, max_bytes=10, room_bytes=4)
    assert q.put(b"12345", now=0) and q.put(b"12345", now=0)
    assert q.bytes == 10 and not q.room()
    assert not q.put(b"x", now=1)  # live frame over the byte cap: dropped, counted
    assert q.dropped == 1 and q.full_since == 1
    assert q.pop(limit=1) == [b"12345"] and q.bytes == 5
    assert q.full_since is None and not q.room()  # 5 > room_bytes 4
    q.pop()
    assert q.bytes == 0 and q.room()


def test_replies_are_never_dropped_but_count_as_behind() -> None:
    q = OutboundQueue(capacity=2, max_bytes=8, max_behind_s=5)
    for _ in range(5):
        assert q.put(b"reply", now=0, force=True)
    assert len(q) == 5 and q.bytes == 25 and q.dropped == 0
    assert q.too_far_behind(now=5)  # a client that does not read its replies is closed


def test_conflation_keeps_the_byte_count_exact() -> None:
    q = OutboundQueue(capacity=10, conflate_from=0)
    q.put(b"aaaa", now=0, key="k")
    q.put(b"bb", now=0, key="k")
    assert len(q) == 1 and q.bytes == 2


def test_shared_budget_stops_live_frames_to_clients_that_did_not_take_their_last_write() -> None:
    budget = SharedBudget(limit_bytes=10)
    a, b, c = (OutboundQueue(capacity=100, budget=budget) for _ in range(3))
    assert b.put(b"0123456789", now=0)
    assert budget.exhausted
    # within one burst every client gets its frames, the budget spent or not: a client that
    # reads loses nothing while others fill the budget
    assert a.put(b"x", now=0) and a.put(b"y", now=0) and c.put(b"c", now=0)
    assert a.pop(limit=1) == [b"x"]  # a write that left frames behind...
    assert a.carried and not a.put(b"w", now=1)  # ...and a gets no more while it is spent
    assert a.full_since == 1  # counted as behind: closed if it stays so (4008)
    assert c.pop() == [b"c"] and not c.carried  # c took everything it was sent
    assert budget.exhausted and c.put(b"d", now=1)
    assert not c.room()  # ...but c's next message waits for the budget too
    for q in (a, b, c):
        q.clear()
    assert budget.used == 0 and not budget.exhausted


def test_a_write_not_taken_yet_counts_as_carried() -> None:
    """The connection marks a queue whose last write waits for the client (its transport
    paused): emptied by that write, it is still not taking what it gets."""
    budget = SharedBudget(limit_bytes=4)
    q, other = OutboundQueue(budget=budget), OutboundQueue(budget=budget)
    assert other.put(b"1234", now=0) and budget.exhausted
    q.put(b"a", now=0)
    assert q.pop() == [b"a"] and not q.carried
    q.carried = True  # what bridge/connection.py does while the write waits
    assert not q.put(b"b", now=1)
    q.clear()
    assert not q.carried and budget.used == 4


def test_held_losses_are_reported_like_drops() -> None:
    q = OutboundQueue()
    q.count_dropped(3)
    assert q.dropped == 3 and q.take_unreported_drops() == 3 and q.full_since is None


def test_deliveries_count_live_frames_queued_not_replies_drops_or_conflations() -> None:
    q = OutboundQueue(capacity=2, conflate_from=1)
    assert q.put(b"t=1", now=0, key="k")  # delivered
    assert q.put(b"t=2", now=0, key="k")  # replaces t=1: conflated, not a second delivery
    assert q.put(b"reply", now=0, force=True)  # a reply: not a delivery
    assert not q.put(b"other", now=0)  # full: dropped
    assert (q.delivered, q.conflated, q.dropped) == (1, 1, 1)
