"""Tools of the attack tests. They live in ``bench/hostile.py``, shared with the benchmarks
(``bench/floods.py``, ``bench/limits.py``), so the tests and the benchmarks attack the front
the same way."""

from bench.hostile import (
    ActiveStatements,
    Pipeliner,
    QueryCanary,
    RawClient,
    Replies,
    Teardown,
    canary,
    close_code_of,
    frame,
    heavy_query,
    heavy_statement,
    never_reading_subscriber,
    opened,
    publish_stream,
    server_ends,
    start_front,
    store_gap,
    store_readings,
    tcp_sockets,
    watch_teardowns,
    watching,
)
from bench.services import SECRET, FrontProcess

__all__ = [
    "SECRET",
    "ActiveStatements",
    "FrontProcess",
    "Pipeliner",
    "QueryCanary",
    "RawClient",
    "Replies",
    "Teardown",
    "canary",
    "close_code_of",
    "frame",
    "heavy_query",
    "heavy_statement",
    "never_reading_subscriber",
    "opened",
    "publish_stream",
    "server_ends",
    "start_front",
    "store_gap",
    "store_readings",
    "tcp_sockets",
    "watch_teardowns",
    "watching",
]
