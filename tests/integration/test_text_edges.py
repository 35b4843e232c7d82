"""U+0000 cannot be stored in PostgreSQL: refused in chats, replaced in answers, on every engine."""

from __future__ import annotations

import json

from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.client import WsClient

NUL_AGENT = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                {
                    "name": "nul",
                    "backend": "python",
                    "options": {"entrypoint": "tests.support.agents:nul_writer"},
                },
                {"name": "echo", "backend": "echo"},
            ],
        }
    ]
}


async def test_nul_in_a_chat_is_refused_and_in_an_answer_replaced(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**NUL_AGENT)
    client = await WsClient.open(server.ws("/ws/chat/nul"))
    await client.recv()
    await client.send(
        json.dumps({"type": "chat", "message": "a\x00b", "agent_name": "echo", "project_id": "p1"})
    )
    error = await client.until_type("error")
    assert error["code"] == "bad_request" and "U+0000" in error["message"]
    await client.chat("go", agent="nul", project="p1", id="n1")
    text, end = await client.answer("n1")
    assert text == "before\ufffdafter" and end["finish_reason"] == "stop"
    saved = await server.gateway.store.history(ConversationKey("p1", "nul"), 1)
    assert saved[-1].content == text
    await client.close()
