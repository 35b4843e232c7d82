"""The AI SDK's chat transport on the engine: POST a chat, GET to resume, DELETE to stop.

``useChat({transport: new DefaultChatTransport({api: ".../api/ai-sdk/{project}/{agent}/chat"})})``
works unchanged: the chat id is the dari thread, the last user message is a ``chat`` (its id is
the idempotency key), and the answer streams as the UI Message Stream v1. ``useChat({resume:
true})`` calls ``GET …/chat/{id}/stream``: 204 when nothing runs in the thread, else the running
answer from its start, then live. ``DELETE`` on the same URL stops the running answer; every
stream of it (the original and any resumed one) ends with ``abort``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from dari.app.gateway import Gateway
from dari.app.rest import gateway_of, principal_of
from dari.app.session import ChatSession
from dari.app.streams import CLIENT_PREFIX, Stream, open_stream, relevant
from dari.auth.base import Principal
from dari.protocol import ai_sdk
from dari.protocol.codec import decode_client_frame
from dari.protocol.errors import DariError, ErrorCode, ProtocolError
from dari.protocol.frames import CancelIn, ChatIn, ConversationKey

log = logging.getLogger("dari.ai_sdk")
router = APIRouter(prefix="/api/ai-sdk/{project_id}/{agent_name}/chat")
# The whole conversation rides along with every request: bounded by this many chat frames.
_BODY_FRAMES = 16


async def _body(request: Request, gateway: Gateway) -> bytes:
    limit = gateway.settings.limits.max_message_bytes * _BODY_FRAMES
    if int(request.headers.get("content-length") or 0) > limit:
        raise ProtocolError(f"body exceeds {limit} bytes", code=ErrorCode.TOO_LARGE)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise ProtocolError(f"body exceeds {limit} bytes", code=ErrorCode.TOO_LARGE)
    return bytes(body)


def chat_frame(
    gateway: Gateway,
    *,
    project_id: str,
    agent_name: str,
    thread_id: str,
    message_id: str | None,
    text: str,
    images: list[str],
) -> ChatIn:
    """The ``chat`` frame for one request's input, validated as one from a socket would be."""
    raw: dict[str, Any] = {
        "type": "chat",
        "message": text,
        "project_id": project_id,
        "agent_name": agent_name,
        "thread_id": thread_id,
        "images": images,
    }
    if message_id is not None:
        raw["id"] = message_id
    frame = decode_client_frame(
        orjson.dumps(raw).decode(), max_bytes=gateway.settings.limits.max_message_bytes
    )
    assert isinstance(frame, ChatIn)
    return frame


async def stream_answer(
    stream: Stream, key: ConversationKey, request_id: str, idle_s: float
) -> AsyncIterator[str]:
    """The SSE text of answer ``request_id``, from what the stream's log holds, to ``end``."""
    answer = ai_sdk.AnswerStream(request_id)
    try:
        async for frame in stream.sink.frames(idle_s):
            if frame is None:
                yield ai_sdk.KEEPALIVE
                continue
            if not relevant(frame, request_id, key):
                continue
            for chunk in answer.feed(frame):
                yield ai_sdk.sse(chunk)
            if answer.done:
                break
        if not answer.done:  # the hub closed the stream (the server is stopping)
            yield ai_sdk.sse({"type": "error", "errorText": "the stream was closed; resume it"})
    except DariError as exc:
        yield ai_sdk.sse({"type": "error", "errorText": exc.message})
    yield ai_sdk.DONE


def _sse_response(
    body: AsyncIterator[str], opened: contextlib.AsyncExitStack, status: int = 200
) -> StreamingResponse:
    async def cleanup() -> None:
        with contextlib.suppress(Exception):
            await opened.aclose()

    async def guarded() -> AsyncIterator[str]:
        try:
            async for text in body:
                yield text
        finally:
            # A client that goes away cancels this; the answer itself goes on.
            await asyncio.shield(cleanup())

    # The background task also closes a stream whose body was never iterated.
    return StreamingResponse(
        guarded(), status_code=status, headers=ai_sdk.HEADERS, background=BackgroundTask(cleanup)
    )


def _key(
    gateway: Gateway, principal: Principal, project_id: str, agent_name: str, chat_id: str
) -> ConversationKey:
    principal.require(project_id, agent_name)
    gateway.directory.get(project_id, agent_name)
    if not 0 < len(chat_id) <= 128 or "\x00" in chat_id:
        raise ProtocolError("the chat id must be 1 to 128 characters")
    return ConversationKey(project_id, agent_name, chat_id)


@router.post("")
async def post_chat(project_id: str, agent_name: str, request: Request) -> Response:
    gateway = gateway_of(request)
    principal = principal_of(request)
    body, user_input = ai_sdk.parse_request(await _body(request, gateway))
    key = _key(gateway, principal, project_id, agent_name, body.id)
    # A new message's id is its idempotency key; regenerating asks again under a new id.
    message_id = (
        f"{user_input.message_id}.{uuid.uuid4().hex[:8]}"
        if user_input.regenerate
        else user_input.message_id
    )
    chat = chat_frame(
        gateway,
        project_id=project_id,
        agent_name=agent_name,
        thread_id=key.thread_id,
        message_id=message_id,
        text=user_input.text,
        images=user_input.images,
    )
    opened = contextlib.AsyncExitStack()
    stream = await opened.enter_async_context(open_stream(gateway, principal))
    try:
        request_id, _ = await stream.chat(chat)
    except BaseException:
        await opened.aclose()
        raise
    idle_s = gateway.settings.heartbeat_s
    return _sse_response(stream_answer(stream, key, request_id, idle_s), opened)


@router.get("/{chat_id}/stream")
async def resume_chat(project_id: str, agent_name: str, chat_id: str, request: Request) -> Response:
    gateway = gateway_of(request)
    principal = principal_of(request)
    key = _key(gateway, principal, project_id, agent_name, chat_id)
    opened = contextlib.AsyncExitStack()
    stream = await opened.enter_async_context(open_stream(gateway, principal))
    try:
        snapshots = await stream.snapshots(key)
    except BaseException:
        await opened.aclose()
        raise
    if not snapshots:
        await opened.aclose()
        return Response(status_code=204)
    request_id = str(snapshots[0]["request_id"])
    idle_s = gateway.settings.heartbeat_s
    return _sse_response(stream_answer(stream, key, request_id, idle_s), opened)


@router.delete("/{chat_id}/stream")
async def stop_chat(project_id: str, agent_name: str, chat_id: str, request: Request) -> Response:
    gateway = gateway_of(request)
    principal = principal_of(request)
    key = _key(gateway, principal, project_id, agent_name, chat_id)
    session = ChatSession(gateway, principal, f"{CLIENT_PREFIX}{uuid.uuid4().hex}")
    # The same cancel as a socket's: the running answer ends cancelled, queued ones are dropped.
    await session.cancel(CancelIn(type="cancel", **key.fields()))
    return JSONResponse({"status": "cancelled", **key.fields()})
