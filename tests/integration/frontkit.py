"""Shared pieces of the front's integration tests: the stack (``tests/stack.py``) and small
client helpers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.stack import SECRET, Stack, http_json, stack_fixture

__all__ = ["SECRET", "Stack", "http_json", "nothing_more", "recv", "recv_type", "stack_fixture"]


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws: ClientConnection, type_: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv(ws, max(0.01, deadline - time.monotonic()))
        if msg["type"] == type_:
            return msg


async def nothing_more(ws: ClientConnection, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), within)
