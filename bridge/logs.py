"""Logging set-up shared by every command: the redaction of secrets, and how a record becomes
a line on stderr, text for people or one JSON object per line for a log collector
(``BRIDGE_LOG_FORMAT=json``), both naming the front connection or the ingest batch the record
was logged for.

The connection and batch come from context variables set where a connection's handler task
and a batch's tasks run (bridge/connection.py, ingest/pipeline.py): they follow asyncio tasks,
so no call site passes them. :class:`LogContext`, a handler filter, copies them onto the record;
logging calls handlers synchronously, so the filter runs in the context of the log call.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from contextvars import ContextVar
from types import TracebackType
from typing import Any
from urllib.parse import unquote_plus

import orjson

from ingest.log_context import BATCH

# Query parameters whose value is a credential, compared after percent-decoding: the front
# reads `?tok%65n=` as `token` (parse_qs decodes keys), so the log must not see it either.
SECRET_PARAMS = frozenset(
    {"token", "access_token", "id_token", "refresh_token", "jwt", "api_key", "apikey", "password"}
)
# Headers whose whole value is a credential. websockets logs every request and response
# header at DEBUG as "< Name: value" / "> Name: value".
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-token",
        "x-api-key",
        "x-auth-token",
        "x-access-token",
    }
)

_PARAM = re.compile(r"(?P<lead>[?&;])(?P<key>[^=&;#\s\"']+)=(?P<value>[^&;#\s\"']*)")
_HEADER = re.compile(
    r"^(?P<lead>[<>]?\s*)(?P<name>[A-Za-z0-9-]+)(?P<colon>\s*:\s*)(?P<value>.*)$", re.MULTILINE
)
# an auth scheme word kept in front of the masked credential ("Bearer ***")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*\s+(?=\S)")
_BEARER = re.compile(r"(Bearer\s+)[^\s&\"']+", re.IGNORECASE)
# websockets puts a malformed header's raw value into its exception text, without the name
_BAD_HEADER_VALUE = re.compile(r"(invalid HTTP header (?:value|line): ).*")
# The password of a URL (postgresql://user:secret@host, mqtt://user:secret@host), e.g. in a
# driver's exception text. Up to the last "@" of the word: a password with a raw "@" is
# masked whole (and perhaps some of the host with it) rather than leak its tail.
_URL_PASSWORD = re.compile(
    r"(?P<lead>\b[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s'\"<>]*:)(?P<password>[^\s'\"<>]*)@"
)
# websockets logs each frame a client sends at DEBUG ("< TEXT '...' [134 bytes]"), its middle
# cut out: a token in an auth or refresh message may show its head or its tail, with or
# without its key, so the payload of a client's data frame is never shown.
_CLIENT_FRAME = re.compile(
    r"^(?P<lead><\s*(?:TEXT|BINARY|CONT)\s+)(?P<data>.*?)(?P<meta>\s+\[[^\]]*\])?$", re.MULTILINE
)
# "token": "..." in JSON (a client's message quoted in a log line), keys as SECRET_PARAMS
_JSON_FIELD = re.compile(r'(?P<lead>"(?P<key>[A-Za-z_]+)"\s*:\s*")(?P<value>[^"]*)')
# a JWT wherever it stands (header.payload[.signature], each base64url)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?")
# libpq's keyword form: "host=db user=bridge password=secret"
_KEYWORD_PASSWORD = re.compile(
    r"(?<![\w-])(?P<key>password|passwd)(?P<eq>\s*=\s*)[^\s&;'\"]+", re.I
)
MASK = "***"


def _param_key(raw: str) -> str:
    key = raw
    for _ in range(3):  # "tok%2565n" is "tok%65n" once decoded: undo up to three layers
        decoded = unquote_plus(key)
        if decoded == key:
            break
        key = decoded
    return key.strip().lower()


def _mask_param(match: re.Match[str]) -> str:
    if _param_key(match["key"]) in SECRET_PARAMS:
        return f"{match['lead']}{match['key']}={MASK}"
    return match[0]


def _mask_json_field(match: re.Match[str]) -> str:
    if match["key"].lower() in SECRET_PARAMS:
        return f"{match['lead']}{MASK}"
    return match[0]


def _mask_header(match: re.Match[str]) -> str:
    if match["name"].lower() not in SECRET_HEADERS:
        return match[0]
    scheme = _SCHEME.match(match["value"]) if "authorization" in match["name"].lower() else None
    kept = scheme[0] if scheme else ""
    return f"{match['lead']}{match['name']}{match['colon']}{kept}{MASK}"


def redact(text: str) -> str:
    """``text`` with credentials in query strings, secret headers, bearer tokens, JWTs, JSON
    token fields, URL or keyword passwords and clients' frames masked."""
    text = _CLIENT_FRAME.sub(rf"\g<lead>{MASK}\g<meta>", text)
    text = _HEADER.sub(_mask_header, text)
    text = _JSON_FIELD.sub(_mask_json_field, text)
    text = _JWT.sub(MASK, text)
    text = _PARAM.sub(_mask_param, text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    text = _URL_PASSWORD.sub(rf"\g<lead>{MASK}@", text)
    text = _KEYWORD_PASSWORD.sub(rf"\g<key>\g<eq>{MASK}", text)
    return _BAD_HEADER_VALUE.sub(rf"\1{MASK}", text)


class RedactTokens(logging.Filter):
    """Masks credentials in the message and the traceback text of any record it sees.

    websockets logs request lines (with their query string) and every header at DEBUG, and
    puts a malformed request line into its exception text; a token there would end up in the
    operator's logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = redact(text)
        if masked != text:
            record.msg = masked
            record.args = ()
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the traceback is rendered (and
            # masked) once here instead of verbatim by every handler.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


# -- context and formats ---------------------------------------------------------------------
# The front's id of a WebSocket connection: the session's ``client_id`` (``c_`` and 12 random
# hex digits), the one its client got in its ``connected``/``auth_response`` message, so a
# user's report and the operator's log meet. Opaque: not the token subject.
CONNECTION: ContextVar[str | None] = ContextVar("bridge_log_connection", default=None)

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(context)s: %(message)s"

# LogRecord's own attributes: everything else on a record came from ``extra=`` (or a filter).
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
    "context",
}
# Set by LogContext (written as the named fields, not as extras).
_CONTEXT_ATTRS = frozenset({"component", "connection", "batch"})
# websockets passes its connection object as ``extra={"websocket": ...}``: its repr is a
# memory address, of no use in a log line.
_DROPPED_EXTRAS = frozenset({"websocket"})


class LogContext(logging.Filter):
    """Stamps each record with the process's component and the connection or batch in whose
    context it was logged. An explicit ``extra={"connection": ...}`` wins: a callback that
    serves many connections names the one it means."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = self.component
        if getattr(record, "connection", None) is None:
            record.connection = CONNECTION.get()
        if getattr(record, "batch", None) is None:
            record.batch = BATCH.get()
        return True


def context_tag(record: logging.LogRecord) -> str:
    """`` [c_3f9a1b2c4d5e]`` / `` [b17]`` for a text line, or nothing."""
    connection = getattr(record, "connection", None)
    batch = getattr(record, "batch", None)
    tags = ([str(connection)] if connection else []) + ([f"b{batch}"] if batch else [])
    return f" [{' '.join(tags)}]" if tags else ""


class TextFormatter(logging.Formatter):
    """The classic line, with the connection/batch tag after the logger name, and masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.context = context_tag(record)
        # the whole line, traceback included; formatMessage masks the message on its own first
        # because the header patterns match at the start of a line
        return redact(super().format(record))

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = redact(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in the message or traceback are
    escaped by the encoder).

    A small formatter over orjson rather than python-json-logger: orjson is already a
    dependency and escapes correctly, the field set is fixed and small (``ts``, ``level``,
    ``logger``, ``message``, ``component``, ``connection``, ``batch``, ``exc``), and every
    value has to pass through ``redact`` before it is encoded, which a library formatter
    would need overriding for anyway.
    """

    def __init__(self, component: str = "cli") -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _iso_ms(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "component": getattr(record, "component", None) or self.component,
        }
        connection = getattr(record, "connection", None)
        if connection is not None:
            doc["connection"] = redact(str(connection))
        batch = getattr(record, "batch", None)
        if batch is not None:
            doc["batch"] = batch
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = redact(record.exc_text)
        if record.stack_info:
            doc["stack"] = redact(self.formatStack(record.stack_info))
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key in _CONTEXT_ATTRS or key in _DROPPED_EXTRAS:
                continue
            if key not in doc and not key.startswith("_"):
                doc[key] = _plain(value)
        return orjson.dumps(doc).decode()


def _plain(value: Any) -> Any:
    """An extra field as JSON can hold it: numbers, booleans and null as they are, anything
    else as its (masked) text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _iso_ms(record: logging.LogRecord) -> str:
    """``2024-05-01T12:00:00.123Z``: ISO 8601, UTC, milliseconds."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


def stderr_handler(fmt: str, component: str) -> logging.Handler:
    """The stderr handler of a process: ``fmt`` is ``text`` or ``json``."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = logging.StreamHandler(sys.stderr)
    out.addFilter(LogContext(component))
    out.setFormatter(JsonFormatter(component) if fmt == "json" else TextFormatter())
    return out


# -- set-up ----------------------------------------------------------------------------------
def redact_library_loggers() -> None:
    # A filter only sees records logged on its own logger, not those propagating from
    # children: every logger websockets logs on is listed.
    for name in ("websockets.server", "websockets.client", "websockets"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


def setup_logging(level: str = "INFO", fmt: str = "text", component: str = "cli") -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``), each record tagged with
    ``component`` (ingest, front, scheduler, up, cli: what the process runs)."""
    logging.basicConfig(level=level.upper(), handlers=[stderr_handler(fmt, component)])
    # paho/asyncpg/apscheduler chatter is not what an operator needs at INFO.
    for noisy in ("apscheduler", "asyncio", "pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if fmt == "json":
        # A collector reading JSON lines would choke on a bare warning or traceback: those
        # become records too.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("bridge").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread else "?"
    logging.getLogger("bridge").error(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
