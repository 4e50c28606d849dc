"""Batches in flight: two transactions at once on two connections, finished in receive order.

While one batch commits, the next is received, prepared and written on the other connection,
so the database and the ingest's Python work overlap. What follows a commit (acknowledge,
publish, feed the rules: ingest/after_commit.py) runs strictly batch by batch in the order the
batches were cut, each only after its own commit: MQTT requires QoS 1 acknowledgements in
receive order, and the stream keeps the order of arrival. A batch whose commit comes first
waits for the earlier one.

Two transactions may touch the same devices and latest_values rows (every batch of a busy
fleet does). The write path takes those row locks in (device, metric) order in each statement
(storage/readings.py), so the later transaction waits for the earlier one's commit there
instead of deadlocking; its COPY and readings insert still overlap the earlier one's commit.
The rare deadlock all the same (a device's self-reported status in one batch and its readings
in the other, or a redelivery overlapping a batch in flight) is SQLSTATE class 40, retried
like any transient error. New partitions are created by one writer at a time (KnownDays).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from ingest.log_context import BATCH
from ingest.mqtt import AsyncMqtt
from ingest.prepared import _Prepared
from ingest.storing import Stored
from storage.readings import ReadingWriter, WriteResult

log = logging.getLogger(__name__)


class Stores(Protocol):
    """Writes a batch on the writer given (ingest/storing.py BatchStore)."""

    async def store(self, writer: ReadingWriter, prep: _Prepared) -> Stored | None: ...


class Finishes(Protocol):
    """Everything after a commit (ingest/after_commit.py AfterCommit)."""

    async def finish(
        self,
        mqtt: AsyncMqtt,
        batch_generation: int,
        done: _Prepared,
        result: WriteResult,
        *,
        ack: bool = True,
    ) -> None: ...


@dataclass(slots=True)
class _InFlight:
    generation: int  # of the MQTT connection that delivered the batch
    task: asyncio.Task[Stored | None]
    number: int  # counted from 1 in the order batches are cut; named in log lines


class Pipeline:
    """Owns the writers and the store tasks; :meth:`submit` starts one, :meth:`run` finishes
    them in order. ``close`` waits for (or, cancelled, cancels) what is still in flight."""

    def __init__(self, store: Stores, after: Finishes, writers: list[ReadingWriter]) -> None:
        if not writers:
            raise ValueError("at least one writer")
        self._store = store
        self._after = after
        self.writers = writers
        self._free: asyncio.Queue[ReadingWriter] = asyncio.Queue()
        for w in writers:
            self._free.put_nowait(w)
        self._order: deque[_InFlight] = deque()
        self._submitted = asyncio.Event()
        self._ended = False
        # After a batch gave up at shutdown no later batch is acknowledged: acknowledgements
        # go in receive order, and the broker redelivers all of them to the next run.
        self._acks_held = False
        self._numbered = 0

    def __len__(self) -> int:
        return len(self._order)

    async def writer(self) -> ReadingWriter:
        """A free writer: waits while every writer has a batch in flight (flow control)."""
        return await self._free.get()

    def release(self, writer: ReadingWriter) -> None:
        """Give back a writer taken with :meth:`writer` and not used."""
        self._free.put_nowait(writer)

    def submit(self, writer: ReadingWriter, generation: int, prep: _Prepared) -> None:
        self._numbered += 1
        number = self._numbered
        task = asyncio.create_task(self._store_on(writer, prep, number), name="ingest-store")
        self._order.append(_InFlight(generation, task, number))
        self._submitted.set()

    def end(self) -> None:
        """No more batches: :meth:`run` returns once the ones in flight are finished."""
        self._ended = True
        self._submitted.set()

    async def _store_on(self, writer: ReadingWriter, prep: _Prepared, number: int) -> Stored | None:
        BATCH.set(number)  # this task's own context: what storing logs names the batch
        try:
            return await self._store.store(writer, prep)
        finally:
            self._free.put_nowait(writer)

    async def run(self, mqtt: AsyncMqtt) -> None:
        """Finish batches in the order they were submitted, until :meth:`end`."""
        try:
            while True:
                if not self._order:
                    if self._ended:
                        return
                    self._submitted.clear()
                    await self._submitted.wait()
                    continue
                head = self._order[0]
                stored = await head.task
                self._order.popleft()
                if stored is None:
                    self._acks_held = True  # gave up at shutdown: nothing acknowledged
                    continue
                done, result = stored
                batch = BATCH.set(head.number)
                try:
                    await self._after.finish(
                        mqtt, head.generation, done, result, ack=not self._acks_held
                    )
                finally:
                    BATCH.reset(batch)
        finally:
            tasks = [f.task for f in self._order]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=10)

    async def close(self) -> None:
        for w in self.writers:
            await w.close()
