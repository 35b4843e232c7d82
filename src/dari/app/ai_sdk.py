"""The AI SDK's chat transport on the engine: POST a chat, GET to resume, DELETE to stop.

``useChat({transport: new DefaultChatTransport({api: ".../api/ai-sdk/{project}/{agent}/chat"})})``
works unchanged: the chat id is the dari thread, the last user message is a ``chat`` (its id is
the idempotency key), and the answer streams as the UI Message Stream v1. ``useChat({resume:
true})`` calls ``GET …/chat/{id}/stream``: 204 when nothing runs in the thread, else the running
answer from its start, then live. ``DELETE`` on the same URL stops the running answer; every
stream of it (the original and any resumed one) ends with ``abort``. An agent's question is a
``data-dari-interrupt`` part; a POST whose body has ``resume: {interrupt_id, value}`` answers it
and streams the same answer from its start (as a resume does) to its end.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from dari.app.gateway import Gateway
from dari.app.rest import gateway_of, principal_of
from dari.app.session import ChatSession
from dari.app.streams import (
    CLIENT_PREFIX,
    SSE_KEEPALIVE,
    Stream,
    chat_frame,
    conversation_key,
    prepared_stream,
    read_body,
    sse_response,
)
from dari.auth.base import Principal
from dari.protocol import ai_sdk
from dari.protocol.errors import DariError
from dari.protocol.frames import CancelIn, ConversationKey

router = APIRouter(prefix="/api/ai-sdk/{project_id}/{agent_name}/chat")


async def stream_answer(
    stream: Stream, key: ConversationKey, request_id: str, idle_s: float
) -> AsyncIterator[str]:
    """The SSE text of answer ``request_id`` from its start (or what a resume sees) to its end."""
    answer = ai_sdk.AnswerStream(request_id)
    try:
        async for frame in stream.answer(key, request_id, idle_s):
            if frame is None:
                yield SSE_KEEPALIVE
                continue
            for chunk in answer.feed(frame):
                yield ai_sdk.sse(chunk)
    except DariError as exc:
        yield ai_sdk.sse({"type": "error", "errorText": exc.message})
    yield ai_sdk.DONE


@router.post("")
async def post_chat(project_id: str, agent_name: str, request: Request) -> Response:
    gateway = gateway_of(request)
    principal = principal_of(request)
    raw = await read_body(request, gateway)
    resume = ai_sdk.parse_resume(raw)
    if resume is not None:
        return await _answer_question(gateway, principal, project_id, agent_name, resume)
    body, user_input = ai_sdk.parse_request(raw)
    key = conversation_key(gateway, principal, project_id, agent_name, body.id)
    # A new message's id is its idempotency key; regenerating asks again under a new id.
    message_id = (
        f"{user_input.message_id}.{uuid.uuid4().hex[:8]}"
        if user_input.regenerate
        else user_input.message_id
    )
    chat = chat_frame(gateway, key, message_id, user_input.text, user_input.images)
    opened, stream, (request_id, _) = await prepared_stream(
        gateway, principal, lambda stream: stream.chat(chat)
    )
    idle_s = gateway.settings.heartbeat_s
    return sse_response(stream_answer(stream, key, request_id, idle_s), opened, ai_sdk.HEADERS)


async def _answer_question(
    gateway: Gateway,
    principal: Principal,
    project_id: str,
    agent_name: str,
    resume: ai_sdk.ResumeRequest,
) -> Response:
    """Answer the question, then stream its answer from the start, as a resume does."""
    key = conversation_key(gateway, principal, project_id, agent_name, resume.id)

    async def follow_then_answer(stream: Stream) -> str | None:
        # Following first: every frame of the answer after the snapshot reaches this stream.
        snapshots = await stream.snapshots(key)
        await stream.session.answer(resume.resume.interrupt_id, resume.resume.value)
        return str(snapshots[0]["request_id"]) if snapshots else None

    opened, stream, request_id = await prepared_stream(gateway, principal, follow_then_answer)
    if request_id is None:
        await opened.aclose()
        return Response(status_code=204)
    idle_s = gateway.settings.heartbeat_s
    return sse_response(stream_answer(stream, key, request_id, idle_s), opened, ai_sdk.HEADERS)


@router.get("/{chat_id}/stream")
async def resume_chat(project_id: str, agent_name: str, chat_id: str, request: Request) -> Response:
    gateway = gateway_of(request)
    principal = principal_of(request)
    key = conversation_key(gateway, principal, project_id, agent_name, chat_id)
    opened, stream, snapshots = await prepared_stream(
        gateway, principal, lambda stream: stream.snapshots(key)
    )
    if not snapshots:
        await opened.aclose()
        return Response(status_code=204)
    request_id = str(snapshots[0]["request_id"])
    idle_s = gateway.settings.heartbeat_s
    return sse_response(stream_answer(stream, key, request_id, idle_s), opened, ai_sdk.HEADERS)


@router.delete("/{chat_id}/stream")
async def stop_chat(project_id: str, agent_name: str, chat_id: str, request: Request) -> Response:
    gateway = gateway_of(request)
    principal = principal_of(request)
    key = conversation_key(gateway, principal, project_id, agent_name, chat_id)
    session = ChatSession(gateway, principal, f"{CLIENT_PREFIX}{uuid.uuid4().hex}")
    # The same cancel as a socket's: the running answer ends cancelled, queued ones are dropped.
    await session.cancel(CancelIn(type="cancel", **key.fields()))
    return JSONResponse({"status": "cancelled", **key.fields()})
