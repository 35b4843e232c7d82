"""AG-UI on the engine: an agent endpoint any AG-UI client (``HttpAgent``, CopilotKit) can run.

- ``POST /api/ag-ui/{project}/{agent}``: a ``RunAgentInput`` (``threadId`` is the dari thread,
  ``runId`` the chat's idempotency key, the last user message the input) answered by the run's
  events over SSE.
- ``WS /api/ag-ui/{project}/{agent}/ws[?threadId=…]``: the same events, one JSON event per text
  frame; each text frame sent is a ``RunAgentInput``. The socket follows its thread: every
  answer in it (from any frontend) is a run. Beyond the spec, reconnection: a socket that opens
  on a thread gets ``MESSAGES_SNAPSHOT`` (the saved messages) inside the running answer's run,
  then that answer's events so far and live ones; with nothing running, the snapshot comes in
  a run of its own.

An agent's question ends its run with the interrupt outcome (``RUN_FINISHED`` ``outcome:
{type: "interrupt"}``) while the dari answer waits. A run whose input has ``resume`` entries
answers them (``resolved``: the entry's ``payload`` is the value; ``cancelled``: the waiting
answer is cancelled) instead of sending a message, and its events are the rest of that answer.
On the socket, an answered question (from any client) starts the rest as a new run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

from ag_ui.core import RunAgentInput, RunErrorEvent
from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect

from dari.app.credentials import credentials_of
from dari.app.gateway import Gateway
from dari.app.origin import origin_allowed
from dari.app.rest import gateway_of, principal_of
from dari.app.streams import (
    SSE_KEEPALIVE,
    Stream,
    chat_frame,
    conversation_key,
    open_stream,
    prepared_stream,
    read_body,
    sse_response,
)
from dari.auth.base import Principal
from dari.protocol import ag_ui, frames
from dari.protocol.errors import CloseCode, DariError, LookupFailed, ProtocolError, RateLimited
from dari.protocol.frames import CancelIn, ConversationKey

router = APIRouter(prefix="/api/ag-ui/{project_id}/{agent_name}")
HEADERS = {
    "content-type": ag_ui.CONTENT_TYPE,
    "cache-control": "no-cache",
    "connection": "keep-alive",
    "x-accel-buffering": "no",
}
HISTORY_LIMIT = 200  # saved messages in a reconnecting socket's MESSAGES_SNAPSHOT


async def _accept_run(stream: Stream, key: ConversationKey, run: RunAgentInput) -> str:
    """Accept a run's input as a ``chat`` (its ``runId`` is the id); the answer's request id."""
    text, images = ag_ui.user_input(run)
    chat = chat_frame(stream.gateway, key, run.run_id, text, images)
    request_id, _ = await stream.chat(chat)
    return request_id


async def _resume_run(stream: Stream, key: ConversationKey, run: RunAgentInput) -> str:
    """Answer (or cancel) the questions a run's ``resume`` entries name; the request id of the
    answer that asked them, whose rest this run streams."""
    # Following first: every frame of the answer after the snapshot reaches this stream.
    snapshots = await stream.snapshots(key)
    for entry in run.resume or []:
        if entry.status == "resolved":
            await stream.session.answer(entry.interrupt_id, entry.payload)
        else:
            await stream.session.cancel(CancelIn(type="cancel", **key.fields()))
    if not snapshots:
        raise LookupFailed("nothing in this thread is waiting for an answer")
    return str(snapshots[0]["request_id"])


async def stream_run(
    stream: Stream,
    key: ConversationKey,
    run_id: str,
    request_id: str,
    idle_s: float,
    continuing: frozenset[str] | None = None,
) -> AsyncIterator[str]:
    run = ag_ui.RunStream(key.thread_id, run_id, request_id, continuing=continuing)
    for event in run.begin():
        yield ag_ui.sse(event)
    try:
        async for frame in stream.answer(key, request_id, idle_s):
            if frame is None:
                yield SSE_KEEPALIVE
                continue
            for event in run.feed(frame):
                yield ag_ui.sse(event)
            if run.done:
                return  # ended, or paused on a question (the interrupt outcome)
    except DariError as exc:
        yield ag_ui.sse(RunErrorEvent(message=exc.message, code=str(exc.code)))


@router.post("")
async def run_agent(project_id: str, agent_name: str, request: Request) -> Response:
    gateway = gateway_of(request)
    principal = principal_of(request)
    run = ag_ui.parse_input(await read_body(request, gateway))
    key = conversation_key(gateway, principal, project_id, agent_name, run.thread_id)
    idle_s = gateway.settings.heartbeat_s
    if run.resume:
        opened, stream, request_id = await prepared_stream(
            gateway, principal, lambda stream: _resume_run(stream, key, run)
        )
        answered = frozenset(entry.interrupt_id for entry in run.resume)
        body = stream_run(stream, key, run.run_id, request_id, idle_s, answered)
        return sse_response(body, opened, HEADERS)
    opened, stream, request_id = await prepared_stream(
        gateway, principal, lambda stream: _accept_run(stream, key, run)
    )
    body = stream_run(stream, key, run.run_id, request_id, idle_s)
    return sse_response(body, opened, HEADERS)


# --- the WebSocket binding ----------------------------------------------------------------


async def _authenticate(websocket: WebSocket, gateway: Gateway) -> Principal | None:
    """The principal, or None after refusing the socket (the close code says why)."""
    if not origin_allowed(websocket, gateway.settings):
        await websocket.close(code=CloseCode.POLICY_VIOLATION)  # before accept: HTTP 403
        return None
    try:
        return gateway.authenticator.authenticate(
            credentials_of(websocket, gateway.settings.auth.cookie_name, allow_query_token=True)
        )
    except DariError as exc:
        await websocket.accept()
        await websocket.close(code=CloseCode.UNAUTHORIZED, reason=exc.message[:120])
        return None


class _ThreadSocket:
    """One socket following one thread: the writer renders its log, the reader takes runs."""

    def __init__(self, websocket: WebSocket, stream: Stream, project_id: str, agent_name: str):
        self.websocket = websocket
        self.stream = stream
        self.project_id = project_id
        self.agent_name = agent_name
        self.key: ConversationKey | None = None
        self.writer: asyncio.Task[None] | None = None

    async def follow(self, thread_id: str) -> None:
        """Join the thread: its saved messages, the running answer so far, then live."""
        stream = self.stream
        key = conversation_key(
            stream.gateway, stream.principal, self.project_id, self.agent_name, thread_id
        )
        await stream.snapshots(key)
        history = await stream.history(key, HISTORY_LIMIT)
        pending = await stream.sink.ready()
        stream.sink.push_back(pending)
        # Answers whose run is sent as events (running, or begun since) stay out of the
        # snapshot, so no text is shown twice; the snapshot opens the first of those runs.
        running = {str(f["request_id"]) for f in pending if f.get("type") in ("start", "snapshot")}
        snapshot = ag_ui.messages_snapshot(history, running)
        thread = ag_ui.ThreadStream(thread_id, snapshot if running else None)
        if not running:
            run_id = f"history-{uuid.uuid4().hex[:12]}"
            for event in ag_ui.history_run(thread_id, run_id, snapshot):
                await self.websocket.send_text(ag_ui.text(event))
        self.key = key
        self.writer = asyncio.create_task(self._write(thread))

    async def _write(self, thread: ag_ui.ThreadStream) -> None:
        try:
            async for frame in self.stream.sink.frames():
                if frame is None:
                    continue
                for event in thread.feed(frame):
                    await self.websocket.send_text(ag_ui.text(event))
        except DariError as exc:
            error = RunErrorEvent(message=exc.message, code=str(exc.code))
            with contextlib.suppress(Exception):
                await self.websocket.send_text(ag_ui.text(error))
        except Exception:  # the socket went away: the reader sees the disconnect
            return
        with contextlib.suppress(Exception):
            await self.websocket.close(code=CloseCode.TRY_AGAIN_LATER, reason="stream closed")

    async def take(self, data: str) -> None:
        """One ``RunAgentInput``; refusals come back as ``RUN_ERROR`` through the log, in line
        with the events."""
        run: RunAgentInput | None = None
        try:
            run = ag_ui.parse_input(data)
            if self.key is None:
                await self.follow(run.thread_id)
            assert self.key is not None
            if run.thread_id != self.key.thread_id:
                raise ProtocolError(
                    f"this socket follows thread {self.key.thread_id!r}; open another for "
                    f"{run.thread_id!r}"
                )
            if run.resume:
                await self._resume(run)
            else:
                await _accept_run(self.stream, self.key, run)
        except DariError as exc:
            run_id = run.run_id if run is not None else None
            if self.key is None:  # nothing follows the log yet: say it directly
                thread_id = run.thread_id if run is not None else ""
                for event in ag_ui.refused_run(thread_id, run_id, exc.message, str(exc.code)):
                    await self.websocket.send_text(ag_ui.text(event))
                return
            await self.stream.session.reply(frames.error(exc.code, exc.message, run_id))


    async def _resume(self, run: RunAgentInput) -> None:
        """Answer or cancel the questions named; the rest of the answer follows as a run."""
        assert self.key is not None
        for entry in run.resume or []:
            if entry.status == "resolved":
                await self.stream.session.answer(entry.interrupt_id, entry.payload)
            else:
                await self.stream.session.cancel(CancelIn(type="cancel", **self.key.fields()))


@router.websocket("/ws")
async def run_socket(websocket: WebSocket, project_id: str, agent_name: str) -> None:
    gateway: Gateway = websocket.app.state.gateway
    principal = await _authenticate(websocket, gateway)
    if principal is None:
        return
    if not principal.can_use(project_id, agent_name):
        await websocket.accept()
        await websocket.close(code=CloseCode.FORBIDDEN, reason="not allowed to use this agent")
        return
    await websocket.accept()
    try:
        async with open_stream(gateway, principal) as stream:
            await _serve(_ThreadSocket(websocket, stream, project_id, agent_name))
    except RateLimited as exc:  # past the user's connection cap
        await websocket.close(code=CloseCode.POLICY_VIOLATION, reason=exc.message[:120])


async def _serve(socket: _ThreadSocket) -> None:
    websocket = socket.websocket
    try:
        thread_id = websocket.query_params.get("threadId")
        if thread_id is not None:
            await socket.follow(thread_id)
        expires_at = socket.stream.principal.expires_at
        while True:
            # The token's expiry ends the socket, as on /ws/chat (also under steady traffic).
            timeout = None if expires_at is None else max(0.0, expires_at - time.time())
            try:
                async with asyncio.timeout(timeout):
                    message = await websocket.receive()
            except TimeoutError:
                await websocket.close(code=CloseCode.UNAUTHORIZED, reason="token expired")
                return
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            if data is None:
                data = (message.get("bytes") or b"").decode("utf-8", "replace")
            await socket.take(data)
    except DariError as exc:  # the thread given on the URL is not one this user may follow
        await websocket.close(code=CloseCode.POLICY_VIOLATION, reason=exc.message[:120])
    except WebSocketDisconnect:
        pass
    finally:
        if socket.writer is not None:
            socket.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await socket.writer
