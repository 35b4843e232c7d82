"""Tokens never reach the logs, whichever way they were sent."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH, handshake, refused, token

LOGGERS = ("uvicorn.error", "uvicorn", "dari")


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[Everything]:
    handler = Everything()
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    yield handler
    for name, level in levels.items():
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).setLevel(level)


def watch_at_info(handler: Everything) -> None:
    # `dari serve` runs uvicorn at log level info; the test server runs at warning.
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


async def test_query_token_is_never_logged(
    server_factory: ServerFactory, log_lines: Everything
) -> None:
    server = await server_factory(auth=HS_AUTH)
    watch_at_info(log_lines)
    good, bad = token("alice"), token("alice", ttl=-3600)
    assert (await handshake(server.ws(f"/ws/chat/logged?token={good}"))).welcome is not None
    assert (await refused(server.ws(f"/ws/chat/logged?token={bad}"))).close_code == 4401
    text = "\n".join(log_lines.lines)
    assert log_lines.lines  # the handshakes were logged...
    for value in (good, bad):
        assert value.rsplit(".", 1)[1] not in text  # ...without the token's signature


async def test_header_and_cookie_tokens_are_not_logged(
    server_factory: ServerFactory, log_lines: Everything
) -> None:
    server = await server_factory(auth=HS_AUTH)
    watch_at_info(log_lines)
    value = token("alice")
    await handshake(server.ws("/ws/chat/logged"), {"Authorization": f"Bearer {value}"})
    await handshake(server.ws("/ws/chat/logged"), {"Cookie": f"dari_session={value}"})
    assert value.rsplit(".", 1)[1] not in "\n".join(log_lines.lines)
