"""Logging set-up shared by every command, and the redaction of secrets in log records."""

from __future__ import annotations

import logging
import re
import sys
from urllib.parse import unquote_plus

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


def _mask_header(match: re.Match[str]) -> str:
    if match["name"].lower() not in SECRET_HEADERS:
        return match[0]
    scheme = _SCHEME.match(match["value"]) if "authorization" in match["name"].lower() else None
    kept = scheme[0] if scheme else ""
    return f"{match['lead']}{match['name']}{match['colon']}{kept}{MASK}"


def redact(text: str) -> str:
    """``text`` with credentials in query strings, secret headers and bearer tokens masked."""
    text = _HEADER.sub(_mask_header, text)
    text = _PARAM.sub(_mask_param, text)
    text = _BEARER.sub(rf"\1{MASK}", text)
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


def redact_library_loggers() -> None:
    # A filter only sees records logged on its own logger, not those propagating from
    # children: every logger websockets logs on is listed.
    for name in ("websockets.server", "websockets.client", "websockets"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # paho/asyncpg/apscheduler chatter is not what an operator needs at INFO.
    for noisy in ("apscheduler", "asyncio", "pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
