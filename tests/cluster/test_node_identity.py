"""Every node has its own id by default, reported by /readyz: replicas started with the same
settings (every pod of a deployment binds 0.0.0.0:8000) must not take each other's bus
messages for their own echoes, nor each other's leases."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.support.redis_server import RedisServer
from tests.support.server import RunningServer


async def _node_id(server: RunningServer) -> Any:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    return response.json()["node_id"]


async def test_two_nodes_with_default_settings_on_one_redis_have_different_ids(
    server_factory: ServerFactory, private_redis: RedisServer
) -> None:
    url = private_redis.url  # dari's keys have a fixed prefix: not on the machine's Redis
    same = {"bus": {"url": url}, "replay": {"url": url}}
    first, second = await server_factory(**same), await server_factory(**same)
    ids = [await _node_id(first), await _node_id(second)]
    assert ids[0] != ids[1]
    assert ids == [first.gateway.runner.node_id, second.gateway.runner.node_id]
    assert ids == [first.gateway.bus.node_id, second.gateway.bus.node_id]


async def test_a_configured_node_id_is_the_one_reported(server_factory: ServerFactory) -> None:
    server = await server_factory(node_id="dari-7")
    assert await _node_id(server) == "dari-7" == server.gateway.runner.node_id
