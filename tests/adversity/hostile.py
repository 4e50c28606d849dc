"""Tools of the attack tests. They live in ``bench/hostile.py``, shared with the flood
benchmark (``bench/floods.py``), so the tests and the benchmark attack the front the same way."""

from bench.hostile import (
    ActiveStatements,
    RawClient,
    Replies,
    canary,
    close_code_of,
    frame,
    server_ends,
    start_front,
    store_readings,
    tcp_sockets,
)
from bench.services import SECRET, FrontProcess

__all__ = [
    "SECRET",
    "ActiveStatements",
    "FrontProcess",
    "RawClient",
    "Replies",
    "canary",
    "close_code_of",
    "frame",
    "server_ends",
    "start_front",
    "store_readings",
    "tcp_sockets",
]
