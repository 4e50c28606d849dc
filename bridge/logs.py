"""Logging set-up shared by every command."""

from __future__ import annotations

import logging
import re
import sys

_SECRETS = re.compile(r"((?:[?&](?:token|access_token)=)|(?:Bearer\s+))[^\s&\"']+", re.IGNORECASE)


class RedactTokens(logging.Filter):
    """Masks tokens in query strings and Authorization headers of any record it sees.

    websockets logs request lines (with their query string) at DEBUG; a token there would
    end up in the operator's logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if _SECRETS.search(text):
            record.msg = _SECRETS.sub(r"\1***", text)
            record.args = ()
        return True


def redact_library_loggers() -> None:
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
