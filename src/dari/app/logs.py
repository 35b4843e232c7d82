"""Log hygiene: no tokens in logs, and no ERROR tracebacks a client can cause at will.

uvicorn logs each WebSocket handshake with its query string, which may hold ``token=`` (browsers
cannot send headers, so the query is a documented way to authenticate). It also logs a client's
invalid UTF-8 text frame at ERROR with a traceback, although it handles it correctly (close 1007).
"""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"(token=)[^&\s\"']*")
_CLIENT_UTF8 = "Invalid UTF-8 sequence received from client."


def _redact(value: object) -> object:
    return _TOKEN.sub(r"\1[redacted]", value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) for arg in record.args)
        return True


class ClientFaultsAreNotErrors(logging.Filter):
    """A frame a client got wrong is the client's problem: info, without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and _CLIENT_UTF8 in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def install_log_filters() -> None:
    """Attach the filters to uvicorn's logger once (on the logger, so every handler sees them)."""
    logger = logging.getLogger("uvicorn.error")
    installed = {type(f) for f in logger.filters}
    for filter_type in (RedactTokens, ClientFaultsAreNotErrors):
        if filter_type not in installed:
            logger.addFilter(filter_type())
