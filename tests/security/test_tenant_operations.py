"""Operations that write into a project check the caller's right to that project: an admin
scoped to p1 neither reports into p2 (reports are fed to p2's models) nor broadcasts there,
and only an admin of every project broadcasts to everyone."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH, TWO_PROJECTS, bearer, token
from tests.security.test_isolation import leaked, marker, open_as, settle
from tests.support.server import RunningServer

SETTINGS: dict[str, Any] = {
    "auth": HS_AUTH,
    "projects": TWO_PROJECTS,
    "limits": {"rate_per_s": 10_000, "rate_burst": 10_000},
    "default_project": "p1",
    "default_agent": "echo",
}


def saved_messages(server: RunningServer, content: str) -> int:
    """Messages with this content in the server's database, in any conversation."""
    path = server.settings.store.url.removeprefix("sqlite+aiosqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        (count,) = db.execute("SELECT count(*) FROM messages WHERE content = ?", (content,))
    return int(count[0])


def report(content: str, agent: str = "echo") -> dict[str, Any]:
    return {"content": content, "agent_name": agent}


async def test_a_scoped_admin_reports_only_into_its_own_projects(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**SETTINGS)
    watcher = await open_as(server, "p2-watch", "wendy", projects=["p2"])
    await watcher.send({"type": "subscribe", "project_id": "p2"})
    await watcher.until_type("subscribed")
    secret = marker()
    scoped = bearer(token("ada", projects=["p1"], admin=True))
    narrow = bearer(token("ada", projects=["p1"], agents={"p1": ["echo"]}, admin=True))
    async with httpx.AsyncClient(base_url=server.http) as http:
        into_p2 = await http.post("/api/projects/p2/reports", json=report(secret), headers=scoped)
        missing = await http.post("/api/projects/p9/reports", json=report(secret), headers=scoped)
        other_agent = await http.post(
            "/api/projects/p1/reports", json=report(secret, "slow"), headers=narrow
        )
        own = await http.post("/api/projects/p1/reports", json=report("p1 job"), headers=scoped)
    # p9 does not exist: still 403, so a scoped admin learns nothing of other projects.
    assert [into_p2.status_code, missing.status_code, other_agent.status_code] == [403] * 3
    assert own.status_code == 201
    await settle(watcher)
    assert not leaked(watcher.frames, secret)
    # Saved nowhere (whichever thread a report would have landed in), unlike p1's own.
    assert saved_messages(server, secret) == 0 and saved_messages(server, "p1 job") == 1


async def test_a_scoped_admin_broadcasts_only_to_its_own_projects(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**SETTINGS)
    in_p2 = await open_as(server, "p2-user", "wendy", projects=["p2"])
    await in_p2.send({"type": "subscribe", "project_id": "p2"})
    await in_p2.until_type("subscribed")
    secret = marker()
    scoped = bearer(token("ada", projects=["p1"], admin=True))
    everywhere = bearer(token("root", projects=["*"], admin=True))
    async with httpx.AsyncClient(base_url=server.http) as http:
        to_p2 = await http.post(
            "/api/broadcast", json={"content": secret, "project_id": "p2"}, headers=scoped
        )
        to_all = await http.post("/api/broadcast", json={"content": secret}, headers=scoped)
        to_p1 = await http.post(
            "/api/broadcast", json={"content": "p1 only", "project_id": "p1"}, headers=scoped
        )
        assert [to_p2.status_code, to_all.status_code, to_p1.status_code] == [403, 403, 200]
        await settle(in_p2)
        assert not leaked(in_p2.frames, secret)
        # An admin of every project may still address everyone.
        root = await http.post("/api/broadcast", json={"content": "all hands"}, headers=everywhere)
        assert root.status_code == 200 and root.json()["delivered"] >= 1
    assert (await in_p2.until_type("broadcast"))["content"] == "all hands"
