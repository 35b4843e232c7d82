"""A node whose Redis goes away (shared replay log and bus): sockets are told to try again
later (1013), answers cut short are saved as failed, /readyz is not ready; when Redis is back
the node serves again without a restart, and clients start over in the new epoch.

The Redis that goes away is the test's own redis-server, never the machine's."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.redis_server import RedisServer
from tests.support.server import RunningServer
from tests.support.waiting import eventually

TIMEOUT_S = 20.0
WORDS = " ".join(f"w{i}" for i in range(200))


async def _ready(server: RunningServer) -> bool:
    async with httpx.AsyncClient(base_url=server.http, timeout=5) as http:
        return (await http.get("/readyz")).status_code == 200


def _settings(url: str) -> dict[str, Any]:
    return {
        "bus": {"url": url},
        "replay": {"url": url},
        "projects": [
            {
                "id": "p1",
                "agents": [{"name": "slow", "backend": "echo", "options": {"delay_ms": 30}}],
            }
        ],
    }


async def test_sockets_retry_later_answers_are_saved_and_the_node_recovers_by_itself(
    server_factory: ServerFactory, private_redis: RedisServer
) -> None:
    server = await server_factory(**_settings(private_redis.url))
    client_id, thread = f"outage-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    client = await WsClient.open(server.ws(f"/ws/chat/{client_id}"))
    welcome = await client.recv()
    await client.chat(WORDS, agent="slow", project="p1", thread_id=thread, id="long")
    for _ in range(3):
        await client.until_type("response", TIMEOUT_S)
    async with private_redis.stopped():
        # The answer stalls; the client's next heartbeat cannot be answered through the log.
        await client.send({"type": "ping", "ts": 1})
        assert await client.closed_with(TIMEOUT_S) == 1013
        late = await WsClient.open(server.ws(f"/ws/chat/{client_id}-2"))
        assert await late.closed_with(TIMEOUT_S) == 1013
        await eventually(lambda: _negate(_ready(server)), timeout=TIMEOUT_S)
        # The answer could not go on: saved as failed with its text so far, in the store.
        key = ConversationKey("p1", "slow", thread)

        async def saved_failed() -> bool:
            history = await server.gateway.store.history(key, 10)
            return bool(history) and history[-1].status == "failed"

        await eventually(saved_failed, timeout=TIMEOUT_S)
        answer = (await server.gateway.store.history(key, 10))[-1]
        assert answer.role == "assistant" and WORDS.startswith(answer.content)
    await eventually(lambda: _ready(server), timeout=TIMEOUT_S)
    again = await WsClient.open(
        server.ws(f"/ws/chat/{client_id}?last_seq=3&epoch={welcome['epoch']}")
    )
    restarted = await again.recv()
    assert restarted["resumed"] is False and restarted["reason"] == "epoch_changed"
    await again.chat("back again", agent="slow", project="p1", thread_id=thread, id="after")
    text, end = await again.answer("after", TIMEOUT_S)
    assert text == "back again" and end["finish_reason"] == "stop"
    await again.close()


async def _negate(ready: Any) -> bool:
    return not await ready
