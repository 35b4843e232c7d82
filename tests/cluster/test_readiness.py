"""/readyz follows the shared engines: not ready (503) while Redis is away, ready again when
it is back, without a restart; a node may even start while Redis is down. The Redis that goes
away is the test's own redis-server, never the machine's."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.support.redis_server import RedisServer
from tests.support.server import RunningServer
from tests.support.waiting import eventually

TIMEOUT_S = 15.0


async def _readyz(server: RunningServer) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.get("/readyz")
    body = response.json()
    assert body.pop("node_id") == server.settings.effective_node_id  # which node answered
    return response.status_code, body


async def _is(server: RunningServer, status: int) -> bool:
    return (await _readyz(server))[0] == status


def _redis_settings(redis: RedisServer) -> dict[str, Any]:
    return {"bus": {"url": redis.url}, "replay": {"url": redis.url}}


async def test_a_memory_node_is_ready_with_its_store(server: RunningServer) -> None:
    status, body = await _readyz(server)
    # The same checks on every engine: the in-process log and bus are always reachable.
    assert status == 200
    assert {k: body[k] for k in ("status", "store", "bus", "replay")} == {
        "status": "ready",
        "store": "ok",
        "bus": "ok",
        "replay": "ok",
    }


async def test_not_ready_while_redis_is_away_and_ready_again_after(
    server_factory: ServerFactory, private_redis: RedisServer
) -> None:
    server = await server_factory(**_redis_settings(private_redis))
    assert await _readyz(server) == (
        200,
        {"status": "ready", "store": "ok", "bus": "ok", "replay": "ok"},
    )
    async with private_redis.stopped():
        await eventually(lambda: _is(server, 503), timeout=TIMEOUT_S)
        assert await _readyz(server) == (
            503,
            {
                "status": "not ready",
                "store": "ok",
                "bus": "unreachable",
                "replay": "unreachable",
            },
        )
    await eventually(lambda: _is(server, 200), timeout=TIMEOUT_S)
    assert server.gateway.bus.healthy


async def test_a_node_started_while_redis_is_down_becomes_ready_by_itself(
    server_factory: ServerFactory, private_redis: RedisServer
) -> None:
    settings = _redis_settings(private_redis)
    async with private_redis.stopped():
        server = await server_factory(**settings)
        status, body = await _readyz(server)
        assert status == 503 and body["bus"] == body["replay"] == "unreachable"
    await eventually(lambda: _is(server, 200), timeout=TIMEOUT_S)
