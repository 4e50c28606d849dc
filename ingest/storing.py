"""Storing one prepared batch: one transaction, retried through outages, split on refusal.

A database outage keeps the batch and retries with jittered backoff on the same writer (the
broker holds everything else). Should the database refuse the batch for its content, the
batch is halved until the messages at fault are found (ingest/bisect.py); they become dead
letters and the rest is stored.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from ingest.bisect import isolate
from ingest.prepared import IngestStats, _GaveUp, _merged, _Prepared
from ingest.preparing import Preparer
from storage import names
from storage.errors import is_data_error, is_transient
from storage.readings import ReadingWriter, WriteResult

log = logging.getLogger(__name__)

Stored = tuple[_Prepared, WriteResult]


class BatchStore:
    """Writes batches through a :class:`ReadingWriter` the caller chooses.

    ``giving_up()`` says when a retry loop may stop (shutting down with the database still
    unavailable): nothing of that batch is acknowledged then, the broker redelivers it.
    """

    def __init__(
        self, stats: IngestStats, preparer: Preparer, giving_up: Callable[[], bool]
    ) -> None:
        self.stats = stats
        self._preparer = preparer
        self._giving_up = giving_up

    async def store(self, writer: ReadingWriter, prep: _Prepared) -> Stored | None:
        """Write the batch; returns what was stored (``prep`` itself, unless the database
        refused part of it) and the write's result, or None when giving up at shutdown."""
        try:
            result = await self._write(writer, prep)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            stored = await self._store_split(writer, prep, exc)
        else:
            stored = None if result is None else (prep, result)
        if stored is None:  # given up: the broker redelivers these to the next run
            self.stats.messages_abandoned += len(prep.messages)
        return stored

    async def _write(self, writer: ReadingWriter, prep: _Prepared) -> WriteResult | None:
        """One transaction of ``prep``, retried with backoff until it commits.

        A data error (the database refuses the content) is raised at once: retrying the same
        rows cannot help. Any other error is retried, also a permanent-looking one (a missing
        table, a revoked grant): it is not the messages' fault, and dead-lettering them would
        lose good readings. Returns None when giving up at shutdown.
        """
        delay = 0.1
        stats = self.stats
        while True:
            stats.db_writes += 1
            started = time.perf_counter()
            try:
                result = await writer.write(prep.rows, prep.dead, prep.statuses)
            except Exception as exc:
                if is_data_error(exc):
                    # the transaction rolled back; the connection is still good
                    stats.db_refused += 1
                    raise
                stats.database_up = False
                writer.reset()
                if self._giving_up() and delay > 2:
                    return None
                self.stats.db_retries += 1
                log.log(
                    logging.WARNING if is_transient(exc) else logging.ERROR,
                    "database write failed (%s: %s); batch of %d messages kept, retry in %.1fs",
                    type(exc).__name__,
                    exc,
                    len(prep.messages),
                    delay,
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
            else:
                stats.commit_seconds.observe(time.perf_counter() - started)
                stats.database_up = True
                return result

    async def _store_split(
        self, writer: ReadingWriter, prep: _Prepared, exc: Exception
    ) -> Stored | None:
        """The database refused the batch for its content: halve it until the messages at
        fault are found, storing the rest, and dead-letter those (ingest/bisect.py).

        Without this one message the database rejects would block the stream forever; going
        message by message instead costs one transaction per message of the batch.
        """
        log.warning(
            "the database refused a batch of %d messages (%s); halving it to find the culprit",
            len(prep.messages),
            names.safe_excerpt(str(exc), 200),
        )
        parts: list[Stored] = []
        causes: dict[int, BaseException] = {}

        async def attempt(lo: int, hi: int) -> bool:
            part = prep.part(lo, hi)
            try:
                result = await self._write(writer, part)
            except Exception as part_exc:
                if not is_data_error(part_exc):
                    raise
                if hi - lo == 1:
                    causes[lo] = part_exc
                return False
            if result is None:
                raise _GaveUp
            parts.append((part, result))
            return True

        try:
            refused = await isolate(len(prep.messages), attempt)
        except _GaveUp:
            return None
        done = _Prepared(prep.messages, retained=prep.retained)
        for part, _ in parts:
            done.extend(part)
        rejects = _Prepared([])
        for i in refused:
            self._preparer.refused_by_database(rejects, prep.messages[i], causes.get(i, exc))
        if rejects.dead:
            try:
                result = await self._write(writer, rejects)
            except Exception as dead_exc:
                if not is_data_error(dead_exc):
                    raise
                # cannot happen with db_text(); if it does, say so rather than stop the ingest
                log.error("could not store %d dead letter(s): %s", len(rejects.dead), dead_exc)
                rejects.dead.clear()
            else:
                if result is None:
                    return None
        done.extend(rejects)
        return done, _merged([r for _, r in parts], [p for p, _ in parts])
