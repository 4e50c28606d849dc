"""What the ingest's log lines carry about the work they belong to.

A context variable follows the asyncio task it is set in (and the tasks that one starts), so
the batch being stored is known to every log call made while storing it without passing it
around; bridge/log_format.py reads it when it formats a record.
"""

from __future__ import annotations

from contextvars import ContextVar

# The ingest's batch number: counted from 1 per process, in the order batches are cut.
BATCH: ContextVar[int | None] = ContextVar("bridge_log_batch", default=None)
