"""The async Python client of dari.

    async with dari.client.connect(url, client_id="me") as client:
        request_id = await client.chat("안녕하세요", agent_name="집사", project_id="project_001")
        async for frame in client.frames():
            ...

It reconnects by itself (exponential back-off with jitter), resumes from the last ``seq`` it
processed, drops frames it has already seen, resends chats not yet acknowledged with the same
``id``, sends JSON pings and treats a missing ``pong`` as a dead link, and never reconnects
after 4401/4403 (or 1000, or 4409: another connection took over this client_id).
"""

from dari.client.answers import Answer, AnswerBook
from dari.client.backoff import backoff
from dari.client.client import ClientClosed, DariClient, connect

__all__ = ["Answer", "AnswerBook", "ClientClosed", "DariClient", "backoff", "connect"]
