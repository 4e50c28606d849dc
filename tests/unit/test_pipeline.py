"""Batches in flight (ingest/pipeline.py): stored concurrently, finished in submit order.

The store and the after-commit step are small fakes that record what happened; the writers
are real ReadingWriter objects that never connect (the pipeline only hands them around).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ingest.pipeline import Pipeline
from ingest.prepared import Inbound, _Prepared
from ingest.storing import Stored
from storage.readings import ReadingWriter, WriteResult


def batch(n: int) -> _Prepared:
    return _Prepared([Inbound(n, 1, f"t/{n}", b"{}", 0.0, 0)])


class GatedStore:
    """Each batch commits when the test opens its gate; ``None`` gates mean giving up."""

    def __init__(self) -> None:
        self.gates: dict[int, asyncio.Future[bool]] = {}
        self.writing: list[tuple[int, ReadingWriter]] = []

    def gate(self, n: int) -> asyncio.Future[bool]:
        return self.gates.setdefault(n, asyncio.get_running_loop().create_future())

    async def store(self, writer: ReadingWriter, prep: _Prepared) -> Stored | None:
        n = prep.messages[0].mid
        self.writing.append((n, writer))
        committed = await self.gate(n)
        return (prep, WriteResult(0, 0, None)) if committed else None


class Recorder:
    def __init__(self) -> None:
        self.finished: list[tuple[int, bool]] = []

    async def finish(
        self, mqtt: Any, batch_generation: int, done: _Prepared, result: Any, *, ack: bool = True
    ) -> None:
        self.finished.append((done.messages[0].mid, ack))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_two_batches_in_flight_finish_in_submit_order() -> None:
    store, after = GatedStore(), Recorder()
    writers = [ReadingWriter("postgresql://unused"), ReadingWriter("postgresql://unused")]
    pipeline = Pipeline(store, after, writers)
    finisher = asyncio.create_task(pipeline.run(None))  # type: ignore[arg-type]
    for n in (1, 2):
        pipeline.submit(await pipeline.writer(), 0, batch(n))
    await settle()
    # both are being written, each on its own connection
    assert sorted(n for n, _ in store.writing) == [1, 2]
    assert {id(w) for _, w in store.writing} == {id(w) for w in writers}
    # a third waits for a free connection
    third = asyncio.create_task(pipeline.writer())
    await settle()
    assert not third.done()

    store.gate(2).set_result(True)  # the later batch commits first ...
    await settle()
    assert after.finished == []  # ... and waits for the earlier one
    assert third.done()  # its connection is free again
    pipeline.release(third.result())

    store.gate(1).set_result(True)
    await settle()
    assert after.finished == [(1, True), (2, True)]
    pipeline.end()
    await asyncio.wait_for(finisher, 1)


async def test_after_a_batch_gives_up_no_later_batch_is_acknowledged() -> None:
    store, after = GatedStore(), Recorder()
    pipeline = Pipeline(store, after, [ReadingWriter("postgresql://unused")] * 2)
    finisher = asyncio.create_task(pipeline.run(None))  # type: ignore[arg-type]
    for n in (1, 2, 3):
        pipeline.submit(await pipeline.writer(), 0, batch(n))
        store.gate(n).set_result(n != 2)  # batch 2 gives up (shutting down, database down)
    pipeline.end()
    await asyncio.wait_for(finisher, 1)
    # 1 is acknowledged; 2 is not finished at all; 3 is stored and published, not acked
    assert after.finished == [(1, True), (3, False)]


async def test_cancelled_while_in_flight_cancels_the_writes() -> None:
    store, after = GatedStore(), Recorder()
    pipeline = Pipeline(store, after, [ReadingWriter("postgresql://unused")])
    finisher = asyncio.create_task(pipeline.run(None))  # type: ignore[arg-type]
    pipeline.submit(await pipeline.writer(), 0, batch(1))
    await settle()
    finisher.cancel()
    await asyncio.wait([finisher], timeout=1)
    assert finisher.cancelled()
    assert after.finished == []
    # the writer came back when its write was cancelled
    assert (await asyncio.wait_for(pipeline.writer(), 1)) is not None
