"""Log lines as a collector reads them (bridge/logs.py): one JSON object per record with the
connection or batch it was logged for, and never a credential, in either format."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from bridge import cli
from bridge.config import Settings
from bridge.logs import CONNECTION, redact, stderr_handler
from ingest.log_context import BATCH
from ingest.pipeline import Pipeline
from ingest.prepared import Inbound, _Prepared
from ingest.storing import Stored
from storage.readings import ReadingWriter, WriteResult

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"
ISO_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Captured:
    """A logger whose records go through the process's stderr handler into a buffer."""

    def __init__(self, fmt: str, component: str = "front", name: str = "test.logs") -> None:
        self.out = io.StringIO()
        self.handler = stderr_handler(fmt, component)
        assert isinstance(self.handler, logging.StreamHandler)
        self.handler.setStream(self.out)
        self.logger = logging.getLogger(name)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = True

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def docs(self) -> list[dict[str, Any]]:
        docs = [orjson.loads(line) for line in self.lines()]
        assert all(isinstance(doc, dict) for doc in docs)
        return docs


@pytest.fixture
def json_log() -> Iterator[Captured]:
    captured = Captured("json")
    yield captured
    captured.close()


def test_a_record_is_one_json_object_with_the_fields(json_log: Captured) -> None:
    json_log.logger.warning("disk %s is %d%% full", "/var", 91)
    (doc,) = json_log.docs()
    assert doc["level"] == "WARNING" and doc["logger"] == "test.logs"
    assert doc["message"] == "disk /var is 91% full" and doc["component"] == "front"
    assert ISO_MS_UTC.match(doc["ts"]), doc["ts"]
    assert "connection" not in doc and "batch" not in doc and "exc" not in doc


def test_a_traceback_is_the_exc_field_on_the_same_line(json_log: Captured) -> None:
    try:
        raise RuntimeError("first line\nsecond line")
    except RuntimeError:
        json_log.logger.exception("it failed")
    (line,) = json_log.lines()
    doc = orjson.loads(line)
    assert doc["message"] == "it failed"
    assert (
        doc["exc"].startswith("Traceback") and "RuntimeError: first line\nsecond line" in doc["exc"]
    )


def test_extra_fields_are_kept_and_websockets_connection_object_is_not(
    json_log: Captured,
) -> None:
    json_log.logger.info("x", extra={"count": 3, "ok": True, "path": "/ws", "websocket": object()})
    (doc,) = json_log.docs()
    assert doc["count"] == 3 and doc["ok"] is True and doc["path"] == "/ws"
    assert "websocket" not in doc


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_reaches_a_line(fmt: str) -> None:
    captured = Captured(fmt)
    # websockets logs on its own loggers; the handler masks whatever reaches it
    library = Captured(fmt, name="websockets.server")
    try:
        log = captured.logger
        log.info("< GET /ws?device=d1&token=%s HTTP/1.1", TOKEN)
        library.logger.debug("< Authorization: Bearer %s", TOKEN)
        library.logger.debug("< Cookie: session=%s", TOKEN)
        log.info("retrying", extra={"target": f"http://h/ws?access_token={TOKEN}"})
        for url in (
            f"postgresql://bridge:{TOKEN}@db.example:5432/telemetry",
            f"mqtt://bridge-ingest:{TOKEN}@127.0.0.1:1883",
        ):
            try:
                raise ConnectionError(f"could not connect to {url}: refused")
            except ConnectionError:
                log.exception("connecting failed")
        log.error("connect: host=db user=bridge password=%s", TOKEN)
        text = captured.out.getvalue() + library.out.getvalue()
    finally:
        captured.close()
        library.close()
    assert TOKEN not in text
    assert "signatur" not in text  # not even a tail of the token
    for kept in ("token=***", "Bearer ***", "bridge:***@db.example", "bridge-ingest:***@127.0"):
        assert kept in text
    if fmt == "json":
        for line in text.splitlines():
            assert isinstance(orjson.loads(line), dict)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgres://:secret@h", "postgres://:***@h"),
        ("mqtts://dev:p@ss@broker:8883", "mqtts://dev:***@broker:8883"),  # a raw '@' in it
        ("'mqtt://a:b@h', 'x'", "'mqtt://a:***@h', 'x'"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),  # no password: nothing to hide
        ("http://h:8765/health", "http://h:8765/health"),
        ("password=secret host=h", "password=*** host=h"),
        (
            'got {"type": "auth", "token": "abc", "id": 1}',
            'got {"type": "auth", "token": "***", "id": 1}',
        ),
        ('{"access_token":"abc"}', '{"access_token":"***"}'),
        (f"a {TOKEN} b", "a *** b"),
        # websockets' DEBUG line of a client's frame, its middle cut out: neither the head
        # nor the tail of the token may show, whether its key shows or not
        (
            '< TEXT \'{"type":"auth","id":"123456789012345678901","...mFOdHVyZS1zZWNyZXQ"}\' '
            "[115 bytes]",
            "< TEXT *** [115 bytes]",
        ),
        ("< BINARY 7b 22 74 6f 6b 65 ... 22 7d [50 bytes]", "< BINARY *** [50 bytes]"),
        ('> TEXT \'{"type":"pong"}\' [15 bytes]', '> TEXT \'{"type":"pong"}\' [15 bytes]'),
    ],
)
def test_passwords_json_tokens_and_client_frames_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_text_lines_carry_a_short_context_tag() -> None:
    captured = Captured("text")
    try:
        captured.logger.info("plain")
        token = CONNECTION.set("c_0123456789ab")
        try:
            captured.logger.info("on a connection")
        finally:
            CONNECTION.reset(token)
        batch = BATCH.set(17)
        try:
            captured.logger.info("in a batch")
        finally:
            BATCH.reset(batch)
    finally:
        captured.close()
    plain, on_connection, in_batch = captured.lines()
    assert "test.logs: plain" in plain and "[" not in plain
    assert "test.logs [c_0123456789ab]: on a connection" in on_connection
    assert "test.logs [b17]: in a batch" in in_batch


async def test_each_task_logs_its_own_connection(json_log: Captured) -> None:
    """Context variables follow asyncio tasks: two connections' handlers interleave, and a
    task one of them starts keeps its connection."""

    async def handler(client_id: str) -> None:
        CONNECTION.set(client_id)
        await asyncio.sleep(0)
        json_log.logger.info("reading")

        async def command() -> None:
            json_log.logger.info("command")

        await asyncio.create_task(command())
        await asyncio.sleep(0)
        json_log.logger.info("closing")

    await asyncio.gather(handler("c_aaaaaaaaaaaa"), handler("c_bbbbbbbbbbbb"))
    json_log.logger.info("front")
    docs = json_log.docs()
    by_message: dict[str, list[str | None]] = {}
    for doc in docs:
        by_message.setdefault(doc["message"], []).append(doc.get("connection"))
    for message in ("reading", "command", "closing"):
        assert sorted(by_message[message]) == ["c_aaaaaaaaaaaa", "c_bbbbbbbbbbbb"]  # type: ignore[type-var]
    assert by_message["front"] == [None]  # the caller's context was never changed


def test_an_explicit_connection_wins_over_the_context(json_log: Captured) -> None:
    token = CONNECTION.set("c_flushcaller")
    try:
        json_log.logger.error("writing failed", extra={"connection": "c_thefailing1"})
    finally:
        CONNECTION.reset(token)
    assert json_log.docs()[0]["connection"] == "c_thefailing1"


class LoggingStore:
    """Stores at once and logs, as ingest/storing.py does on a retry."""

    def __init__(self) -> None:
        self.seen: list[int | None] = []

    async def store(self, writer: ReadingWriter, prep: _Prepared) -> Stored | None:
        self.seen.append(BATCH.get())
        logging.getLogger("test.logs").warning("database write failed; retry")
        return prep, WriteResult(0, 0, None)


class LoggingFinish:
    def __init__(self) -> None:
        self.seen: list[int | None] = []

    async def finish(
        self, mqtt: Any, batch_generation: int, done: _Prepared, result: Any, *, ack: bool = True
    ) -> None:
        self.seen.append(BATCH.get())
        logging.getLogger("test.logs").warning("dead letters over the budget")


async def test_the_ingest_batch_number_follows_store_and_finish(json_log: Captured) -> None:
    store, after = LoggingStore(), LoggingFinish()
    writers = [ReadingWriter("postgresql://unused"), ReadingWriter("postgresql://unused")]
    pipeline = Pipeline(store, after, writers)
    finisher = asyncio.create_task(pipeline.run(None))  # type: ignore[arg-type]
    for mid in (1, 2, 3):
        pipeline.submit(await pipeline.writer(), 0, _Prepared([Inbound(mid, 1, "t", b"{}", 0, 0)]))
    pipeline.end()
    await asyncio.wait_for(finisher, 5)
    assert store.seen == [1, 2, 3] and after.seen == [1, 2, 3]
    batches = [doc["batch"] for doc in json_log.docs()]
    assert sorted(batches) == [1, 1, 2, 2, 3, 3]
    assert BATCH.get() is None  # nothing leaks into the caller's context


@pytest.mark.parametrize(("value", "expected"), [("json", "json"), (" JSON ", "json")])
def test_log_format_setting(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("BRIDGE_LOG_FORMAT", value)
    assert Settings().log_format == expected


def test_log_format_defaults_to_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_LOG_FORMAT", raising=False)
    assert Settings().log_format == "text"


def test_an_unknown_log_format_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()
    assert cli.main(["token", "--sub", "a"]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
    assert problems == ["  BRIDGE_LOG_FORMAT: Input should be 'text' or 'json'"]
