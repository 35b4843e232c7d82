"""Delegation checks the user's own right to the target agent: a user allowed only 집사 does
not get researcher's work through ``/delegate researcher …``. On both engines, since on
several nodes the job (and the user's rights with it) travels through Redis."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH
from tests.security.test_isolation import open_as, settle
from tests.support.engines import ENGINES
from tests.support.server import RunningServer

SETTINGS: dict[str, Any] = {
    "auth": HS_AUTH,
    "projects": [
        {
            "id": "p1",
            "agents": [
                {"name": "집사", "backend": "offline", "options": {"delay_ms": 0}},
                {
                    "name": "researcher",
                    "backend": "offline",
                    "options": {"persona": "researcher", "delay_ms": 0},
                },
            ],
        }
    ],
    "limits": {"rate_per_s": 10_000, "rate_burst": 10_000},
}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def tasks_created(server: RunningServer) -> int:
    path = server.settings.store.url.removeprefix("sqlite+aiosqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        ((count,),) = db.execute("SELECT count(*) FROM tasks")
    return int(count)


async def test_a_user_cannot_delegate_to_an_agent_they_may_not_use(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**SETTINGS)
    butler_only = await open_as(server, "b-1", "bora", projects=["p1"], agents={"p1": ["집사"]})
    await butler_only.chat("/delegate researcher 시장 조사", project="p1", agent="집사", id="d1")
    text, end = await butler_only.answer("d1", timeout=30)
    assert end["finish_reason"] == "stop"
    assert "맡기지 못했습니다" in text and "no access to p1/researcher" in text
    await settle(butler_only)
    assert [f for f in butler_only.frames if f["type"] == "auto_report"] == []
    assert tasks_created(server) == 0


async def test_a_user_allowed_both_agents_still_delegates(server_factory: ServerFactory) -> None:
    server = await server_factory(**SETTINGS)
    both = await open_as(server, "c-1", "chul", projects=["p1"], agents={"p1": ["*"]})
    await both.chat("/delegate researcher 시장 조사", project="p1", agent="집사", id="d1")
    text, _ = await both.answer("d1", timeout=30)
    assert "작업을 맡겼습니다" in text
    report = await both.until_type("auto_report", timeout=30)
    assert report["agent_name"] == "researcher" and "시장 조사" in report["content"]
    assert tasks_created(server) == 1
