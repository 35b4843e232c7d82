"""Streams for dialects that are not a dari socket: AI SDK and AG-UI over HTTP (SSE) or WebSocket.

Each stream is an internal, ephemeral hub client (``thread.<random>``, like the second dialect's
sockets, so no ``/ws/chat`` socket can attach to it) whose replay log is read here instead of by a
socket writer. Chats, cancels and subscriptions go through :class:`ChatSession`, so auth,
idempotency, ordering, the double-texting policy and history are the engine's own; the endpoint
only renders the frames that land in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from dari.app.gateway import Gateway
from dari.app.session import ChatSession
from dari.app.ws import THREAD_PREFIX
from dari.auth.base import Principal
from dari.hub.connection import Connection
from dari.hub.replay import ReplayLog
from dari.protocol import frames
from dari.protocol.codec import decode_client_frame
from dari.protocol.errors import InternalError, ProtocolError, RateLimited, TooLarge
from dari.protocol.frames import ChatIn, ConversationKey, Frame, HistoryIn, SubscribeIn

# The hub's internal clients share the second dialect's prefix: refused on /ws/chat.
CLIENT_PREFIX = THREAD_PREFIX
SSE_KEEPALIVE = ": keep-alive\n\n"  # an SSE comment: parsers skip it, idle proxies see traffic
_BATCH = 256
# A frontend sends the whole conversation with every request: bounded by this many chat frames.
_BODY_FRAMES = 16
_FINISHED: dict[str, str] = {"complete": "stop", "cancelled": "cancelled", "failed": "error"}
_IN_SNAPSHOT = frozenset({"start", "response", "reasoning", "step", "tool"})  # what it covers


class StreamLost(InternalError):
    """The stream cannot go on: it fell behind the replay window, or the hub closed it."""


class StreamSink(Connection):
    """What the hub sees attached for a stream: it calls ``notify``, ``offer`` and ``close``.

    There is no socket to write to, so :class:`Connection`'s writer is not set up; the
    endpoint reads the client's log through :meth:`frames` at its own pace. Pieces it has not
    read yet are merged by the log, so a slow HTTP reader gets fewer, larger pieces.
    """

    __slots__ = ("_gather_timer", "_pending", "_wake")

    def __init__(self, client_id: str, user_id: str, replay: ReplayLog, generation: int) -> None:
        # Deliberately not Connection.__init__: it prepares a socket writer this sink lacks.
        self.client_id = client_id
        self.user_id = user_id
        self.replay = replay
        self.generation = generation
        self.sent = 0
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._wake = asyncio.Event()
        self._pending: list[Frame] = []  # read already, to be handed out by frames() first
        self._gather_timer: asyncio.TimerHandle | None = None

    def notify(self, gather_s: float = 0.0) -> None:
        # As a socket's writer (Connection.notify): an agent's pieces may wait up to
        # ``gather_s`` for more to merge in the log; anything else wakes the reader at once.
        if self._wake.is_set():
            return
        if gather_s:
            if self._gather_timer is None:
                self._gather_timer = asyncio.get_running_loop().call_later(
                    gather_s, self._gathered
                )
            return
        self._gathered()

    def _gathered(self) -> None:
        if self._gather_timer is not None:
            self._gather_timer.cancel()
            self._gather_timer = None
        self._wake.set()

    def offer(self, epoch: str, seq: int, frame: Frame) -> None:
        """Several nodes: frames are read back from the shared log instead."""

    async def close(self, code: int, reason: str = "") -> None:
        self.close_code = code
        self.closed.set()
        self._gathered()

    async def stop(self) -> None:
        await self.close(1000)

    async def ready(self) -> list[Frame]:
        """The frames logged and not handed out yet, without waiting for more."""
        batch = self._pending
        self._pending = []
        while True:
            read = await self.replay.read(self.client_id, self.sent, _BATCH)
            if read is None:
                raise StreamLost("the stream fell behind the replay window")
            if not read:
                return batch
            self.sent = read[-1]["seq"]
            batch.extend(read)

    def push_back(self, batch: list[Frame]) -> None:
        """Frames :meth:`frames` hands out before anything logged after them."""
        self._pending = batch + self._pending

    async def frames(self, idle_s: float | None = None) -> AsyncIterator[Frame | None]:
        """Every frame logged for this client, in order, as it comes; ``None`` after
        ``idle_s`` seconds without one (a keep-alive point). Ends once the hub closed it."""
        while True:
            self._wake.clear()  # before the read: a frame logged after it wakes the wait below
            batch = await self.ready()
            for frame in batch:
                yield frame
            if batch:
                continue
            if self.closed.is_set():
                return
            try:
                async with asyncio.timeout(idle_s):
                    await self._wake.wait()
            except TimeoutError:
                yield None


@dataclass(slots=True)
class Stream:
    """One open stream: its sink (the frames) and its session (what it may do)."""

    gateway: Gateway
    principal: Principal
    sink: StreamSink
    session: ChatSession

    async def chat(self, chat: ChatIn) -> tuple[str, bool]:
        """Accept ``chat`` as a ``chat`` frame would be; returns ``(request_id, duplicate)``.

        Raises the engine's :class:`DariError` (forbidden, queue_full, ...) unchanged. A
        duplicate (the same ``id`` again) is shown from its start: see :meth:`_show_again`.
        """
        await self.session.chat(chat)
        batch = await self.sink.ready()
        acks = [f for f in batch if f.get("type") == "ack" and f.get("id") == chat.id]
        if not acks:
            raise InternalError("the chat was accepted but not acknowledged")
        # With several nodes the answer may already have started: keep its frames.
        self.sink.push_back([f for f in batch if f is not acks[0]])
        request_id, duplicate = str(acks[0]["request_id"]), bool(acks[0]["duplicate"])
        if duplicate:
            key = self.gateway.conversations.key(
                self.principal, chat.project_id, chat.agent_name, chat.thread_id
            )
            await self._show_again(key, request_id)
        return request_id, duplicate

    async def snapshots(self, key: ConversationKey) -> list[Frame]:
        """Follow ``key`` from now on (a ``subscribe``); the ``snapshot`` of each answer
        running in it. The snapshots stay in line for :meth:`StreamSink.frames`, before the
        live pieces."""
        await self.session.subscribe(SubscribeIn(type="subscribe", **key.fields()))
        batch = await self.sink.ready()
        # Several nodes: pieces fanned out after the subscription may be logged before the
        # snapshot, which holds them already (it is read and logged in one step).
        at = {f["request_id"]: i for i, f in enumerate(batch) if f.get("type") == "snapshot"}
        self.sink.push_back(
            [
                f
                for i, f in enumerate(batch)
                if not (f.get("type") in _IN_SNAPSHOT and i < at.get(f.get("request_id"), -1))
            ]
        )
        return [f for f in batch if f.get("type") == "snapshot"]

    async def history(self, key: ConversationKey, limit: int) -> list[Frame]:
        """The conversation's saved messages (a ``history`` frame's), oldest first; the
        frames logged meanwhile stay in line."""
        await self.session.history(HistoryIn(type="history", limit=limit, **key.fields()))
        batch = await self.sink.ready()
        found = [f for f in batch if f.get("type") == "history"]
        self.sink.push_back([f for f in batch if f.get("type") != "history"])
        messages: list[Frame] = found[-1]["messages"] if found else []
        return messages

    async def answer(
        self, key: ConversationKey, request_id: str, idle_s: float
    ) -> AsyncIterator[Frame | None]:
        """The frames of answer ``request_id`` (and reports into ``key`` meanwhile), through
        its ``end``; ``None`` after ``idle_s`` quiet seconds. Raises :class:`StreamLost` if
        the stream is closed first (the server is stopping)."""
        async for frame in self.sink.frames(idle_s):
            if frame is None or relevant(frame, request_id, key):
                yield frame
                if frame is not None and frame["type"] == "end":
                    return
        raise StreamLost("the stream was closed before the answer ended; resume it")

    async def _show_again(self, key: ConversationKey, request_id: str) -> None:
        """A chat sent again: its answer from the start. Running: its snapshot, then live
        pieces. Queued: nothing yet (its ``start`` follows). Finished: the saved answer as
        ``start``, one ``response`` and ``end``."""
        user = self.principal.user_id
        if await self.gateway.runner.locate(request_id, user) is not None:
            await self.snapshots(key)
            return
        saved: list[Frame] = [frames.answer_frame("start", key, request_id)]
        finish = "stop"  # accepted long ago, its answer no longer among the recent messages
        for record in reversed(await self.gateway.store.history(key, 500)):
            if record.request_id == request_id and record.role == "assistant":
                if record.content:
                    saved.append(
                        frames.answer_frame("response", key, request_id, content=record.content)
                    )
                finish = _FINISHED.get(record.status, "error")
                break
        saved.append(frames.answer_frame("end", key, request_id, finish_reason=finish))
        self.sink.push_back(saved)


@contextlib.asynccontextmanager
async def open_stream(gateway: Gateway, principal: Principal) -> AsyncIterator[Stream]:
    """An attached internal client for the duration of one stream; forgotten afterwards.

    A stream counts against the user's ``max_connections_per_user`` like a socket."""
    hub = gateway.hub
    if hub.open_connections(principal.user_id) >= gateway.settings.limits.max_connections_per_user:
        raise RateLimited("too many open connections and streams for this user")
    client_id = f"{CLIENT_PREFIX}{uuid.uuid4().hex}"
    hub.client(client_id, principal, ephemeral=True)
    sink = StreamSink(client_id, principal.user_id, gateway.replay, hub.next_generation())
    hub.attach(sink)
    try:
        await hub.watch(sink)  # several nodes: frames logged elsewhere wake this reader
        yield Stream(gateway, principal, sink, ChatSession(gateway, principal, client_id))
    finally:
        sink.closed.set()
        await hub.detach(sink)


def relevant(frame: Frame, request_id: str, key: ConversationKey) -> bool:
    """Whether a logged frame belongs to the stream of answer ``request_id`` in ``key``:
    the answer's own frames and the reports delivered into its conversation meanwhile."""
    kind = frame.get("type")
    if kind == "auto_report":
        return (
            frame.get("project_id") == key.project_id
            and frame.get("origin_agent", frame.get("agent_name")) == key.agent_name
            and frame.get("thread_id", key.thread_id) == key.thread_id
        )
    return frame.get("request_id") == request_id and kind not in ("ack", "history")


# --- HTTP plumbing shared by the dialects -----------------------------------------------------


async def read_body(request: Request, gateway: Gateway) -> bytes:
    """The request body, refused past a bound (``too_large``) before it is all buffered."""
    limit = gateway.settings.limits.max_message_bytes * _BODY_FRAMES
    if int(request.headers.get("content-length") or 0) > limit:
        raise TooLarge(f"body exceeds {limit} bytes")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise TooLarge(f"body exceeds {limit} bytes")
    return bytes(body)


def conversation_key(
    gateway: Gateway, principal: Principal, project_id: str, agent_name: str, thread_id: str
) -> ConversationKey:
    """The conversation a dialect's chat or thread id names, once the principal may use it."""
    principal.require(project_id, agent_name)
    gateway.directory.get(project_id, agent_name)
    if not 0 < len(thread_id) <= 128 or "\x00" in thread_id:
        raise ProtocolError("the chat or thread id must be 1 to 128 characters")
    # The user's own conversation under these names (their "main" is theirs alone).
    return gateway.conversations.key(principal, project_id, agent_name, thread_id)


def chat_frame(
    gateway: Gateway, key: ConversationKey, message_id: str, text: str, images: list[str]
) -> ChatIn:
    """The ``chat`` frame for a dialect's input, validated as one from a socket would be."""
    raw: dict[str, Any] = {
        "type": "chat",
        "message": text,
        "images": images,
        "id": message_id,
        **key.fields(),
    }
    frame = decode_client_frame(
        orjson.dumps(raw).decode(), max_bytes=gateway.settings.limits.max_message_bytes
    )
    assert isinstance(frame, ChatIn)
    return frame


def sse_response(
    body: AsyncIterator[str], opened: contextlib.AsyncExitStack, headers: Mapping[str, str]
) -> StreamingResponse:
    """Stream ``body``; the stream's hub client is let go when it ends or the client leaves."""

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

    # The background task also lets go of a stream whose body was never iterated.
    return StreamingResponse(guarded(), headers=headers, background=BackgroundTask(cleanup))


T = TypeVar("T")


async def prepared_stream(
    gateway: Gateway, principal: Principal, prepare: Callable[[Stream], Awaitable[T]]
) -> tuple[contextlib.AsyncExitStack, Stream, T]:
    """An open stream on which ``prepare`` (a chat, a subscription) succeeded, and its result;
    let go of at once if ``prepare`` raised (the request then gets the HTTP error)."""
    opened = contextlib.AsyncExitStack()
    stream = await opened.enter_async_context(open_stream(gateway, principal))
    try:
        return opened, stream, await prepare(stream)
    except BaseException:
        await opened.aclose()
        raise
