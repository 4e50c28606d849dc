from bridge.outbound import OutboundQueue


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
