"""The AI SDK and AG-UI endpoints take the REST API's credentials and per-project access."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH, TWO_PROJECTS, bearer, refused, token
from tests.support.server import RunningServer
from tests.support.waiting import eventually

CHAT = {
    "id": "c1",
    "trigger": "submit-message",
    "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi there"}]}],
}
RUN = {"threadId": "t1", "runId": "r1", "messages": [{"id": "u", "role": "user", "content": "hi"}]}


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    return await server_factory(auth=HS_AUTH, projects=TWO_PROJECTS)


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/api/ai-sdk/p2/echo/chat", CHAT),
        ("GET", "/api/ai-sdk/p2/echo/chat/c1/stream", None),
        ("DELETE", "/api/ai-sdk/p2/echo/chat/c1/stream", None),
        ("POST", "/api/ag-ui/p2/echo", RUN),
    ],
)
async def test_no_token_is_401_and_another_projects_token_403(
    server: RunningServer, method: str, path: str, payload: dict[str, Any] | None
) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        anonymous = await client.request(method, path, json=payload)
        only_p1 = await client.request(
            method, path, json=payload, headers=bearer(token(projects=["p1"]))
        )
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert only_p1.status_code == 403
    assert only_p1.json()["error"]["code"] == "forbidden"
    assert not server.gateway.hub.clients  # nothing was attached for a refused request


async def test_a_valid_token_streams(server: RunningServer) -> None:
    async with (
        httpx.AsyncClient(base_url=server.http) as client,
        client.stream(
            "POST", "/api/ai-sdk/p1/echo/chat", json=CHAT, headers=bearer(token())
        ) as response,
    ):
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line]
    assert '"delta":"hi there"' in "".join(lines) and lines[-1] == "data: [DONE]"


async def test_the_ag_ui_socket_is_refused_without_access(server: RunningServer) -> None:
    url = server.ws("/api/ag-ui/p2/echo/ws?threadId=t1")
    assert (await refused(url)).close_code == 4401
    assert (await refused(url, bearer(token(projects=["p1"])))).close_code == 4403


async def test_streams_count_against_the_users_connection_cap(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(
        auth=HS_AUTH, projects=TWO_PROJECTS, limits={"max_connections_per_user": 2}
    )
    headers = bearer(token())
    url = server.ws("/api/ag-ui/p1/echo/ws?threadId=t1")
    sockets = [await connect(url, additional_headers=headers) for _ in range(2)]
    for socket in sockets:
        await socket.recv()  # the thread's history: the stream is attached
    assert (await refused(url, headers)).close_code == 1008
    async with httpx.AsyncClient(base_url=server.http) as client:
        over = await client.post("/api/ai-sdk/p1/echo/chat", json=CHAT, headers=headers)
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"
        await sockets.pop().close()
        hub = server.gateway.hub
        await eventually(lambda: hub.open_connections("alice") < 2)
        under = await client.post("/api/ai-sdk/p1/echo/chat", json=CHAT, headers=headers)
        assert under.status_code == 200
    await sockets[0].close()


async def test_an_ag_ui_socket_does_not_outlive_its_token(server: RunningServer) -> None:
    exp = int(time.time()) + 3
    url = server.ws("/api/ag-ui/p1/echo/ws?threadId=t1")
    outcome = await refused(url, bearer(token(exp=exp)))  # reads until the server closes
    assert outcome.close_code == 4401 and outcome.close_reason == "token expired"
    assert exp - 0.5 <= time.time() <= exp + 60
    assert outcome.frames[0]["type"] == "RUN_STARTED"  # it was serving until then
