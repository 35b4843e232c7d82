"""The connection loop of the Python client.

One background task owns the socket: it connects, reads frames, and on any failure waits a
jittered back-off and reconnects with ``last_seq`` and ``epoch``. Frames reach the caller
through :meth:`DariClient.frames` exactly once each, in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from dari.client.answers import Answer, AnswerBook
from dari.client.backoff import backoff
from dari.protocol.errors import CloseCode, should_reconnect
from dari.protocol.sequence import SeqTracker, Verdict

log = logging.getLogger("dari.client")
Frame = dict[str, Any]
StateCallback = Callable[[str, int | None], None]


MAX_QUEUED_FRAMES = 10_000


class ClientClosed(Exception):
    """The client stopped for good; ``code`` is the close code (4401, 4403, 4409, 1000...)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"connection closed for good ({code}): {reason}")
        self.code = code
        self.reason = reason


class _Gap(Exception):
    """A frame arrived with a seq past the next one: reconnect and resume."""


class DariClient:
    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        token: str | None = None,
        ping_interval: float = 10.0,
        pong_timeout: float = 10.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        open_timeout: float = 10.0,
        on_state: StateCallback | None = None,
    ) -> None:
        self.base_url = url.rstrip("/")
        self.client_id = client_id
        self.token = token
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.on_state = on_state
        self.tracker = SeqTracker()
        self.answers = AnswerBook()
        self.connects = 0  # successful handshakes, for callers that want to know
        self.state = "connecting"
        # Bounded: a caller that stops reading stops the socket reader too, so the server sees
        # a slow client (and the client catches up by resuming) instead of memory growing.
        self._queue: asyncio.Queue[Frame | ClientClosed] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._pending: dict[str, Frame] = {}  # chats sent but not acknowledged, by id
        self._socket: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed: ClientClosed | None = None
        self._last_pong = 0.0
        self._answer_waiters: dict[str, asyncio.Event] = {}
        # ``threads`` requests waiting for their reply, oldest first (one socket answers in
        # order, and a reply logged while the socket was down arrives on resume).
        self._listings: deque[asyncio.Future[Frame]] = deque()

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> DariClient:
        self._task = asyncio.create_task(self._run())
        await self.wait_connected()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed is None:
            self._closed = ClientClosed(1000, "closed by the client")
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout or self.open_timeout * 3):
            while not self._connected.is_set():
                if self._closed is not None:
                    raise self._closed
                waiter = asyncio.ensure_future(self._connected.wait())
                done = self._task
                assert done is not None
                await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if done.done() and self._closed is not None:
                    raise self._closed

    def _set_state(self, state: str, code: int | None = None) -> None:
        self.state = state
        if self.on_state is not None:
            self.on_state(state, code)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        """Send a frame now if connected; frames other than chats are not kept for resend."""
        if self._closed is not None:
            raise self._closed
        if self._socket is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._socket.send(json.dumps(frame))

    async def chat(
        self,
        message: str,
        *,
        agent_name: str,
        project_id: str,
        thread_id: str = "main",
        images: list[str] | None = None,
        id: str | None = None,
    ) -> str:
        """Send a chat; it is resent with the same id until the server acknowledges it."""
        chat_id = id or f"py-{uuid.uuid4().hex}"
        frame: Frame = {
            "type": "chat",
            "id": chat_id,
            "message": message,
            "agent_name": agent_name,
            "project_id": project_id,
            "thread_id": thread_id,
            "images": images or [],
        }
        self._pending[chat_id] = frame
        await self.send(frame)
        return chat_id

    async def cancel(self, request_id: str) -> None:
        await self.send({"type": "cancel", "request_id": request_id})

    async def resume(self, interrupt_id: str, value: Any = None) -> None:
        """Answer an agent's question (an ``interrupt`` frame's ``interrupt_id``); the answer
        goes on. A refusal (``already_answered``, ``not_found``) comes as an ``error`` frame
        carrying ``interrupt_id``."""
        await self.send({"type": "resume", "interrupt_id": interrupt_id, "value": value})

    async def threads(
        self,
        *,
        project_id: str | None = None,
        agent_name: str | None = None,
        limit: int = 50,
        before: int | None = None,
        timeout: float | None = 10.0,
    ) -> Frame:
        """The caller's conversations, newest activity first: ``{"items": [...], "next": …}``
        (pass ``next`` as ``before`` for the following page). A refused request (an ``error``
        frame, e.g. ``forbidden`` for a project the token does not cover) is not matched to
        it: it ends in ``TimeoutError`` after ``timeout`` seconds."""
        frame: Frame = {"type": "threads", "limit": limit}
        for name, value in (("project_id", project_id), ("agent_name", agent_name)):
            if value is not None:
                frame[name] = value
        if before is not None:
            frame["before"] = before
        reply: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._listings.append(reply)
        try:
            await self.send(frame)
            async with asyncio.timeout(timeout):
                answer = await reply
        finally:
            if reply in self._listings:
                self._listings.remove(reply)
        return {"items": answer.get("items", []), "next": answer.get("next")}

    # --- receiving -------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[Frame]:
        """Every frame once, in order (``welcome`` frames included); ends when the client does."""
        while True:
            item = await self._queue.get()
            if isinstance(item, ClientClosed):
                if item.code not in (1000, None):
                    raise item
                return
            yield item

    async def answer(self, request_id: str, timeout: float | None = None) -> Answer:
        """Wait until the answer to ``request_id`` has ended (tracked in the background)."""
        answer = self.answers.get(request_id)
        if answer.done:
            return answer
        event = self._answer_waiters.setdefault(request_id, asyncio.Event())
        async with asyncio.timeout(timeout):
            while not answer.done:
                if self._closed is not None and self._task is not None and self._task.done():
                    raise self._closed
                waiter = asyncio.ensure_future(event.wait())
                assert self._task is not None
                await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                event.clear()
        return answer

    # --- the connection loop ---------------------------------------------------------------

    def _url(self) -> str:
        parts = urlsplit(f"{self.base_url}/ws/chat/{self.client_id}")
        query: dict[str, str] = {}
        if self.tracker.position is not None:
            query["last_seq"] = str(self.tracker.position)
            if self.tracker.epoch:
                query["epoch"] = self.tracker.epoch
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _run(self) -> None:
        delays = backoff(self.backoff_initial, maximum=self.backoff_max)
        # Until when a handshake this client gave up on (no welcome) may still reach a server:
        # through a slow proxy it can land after a newer one and replace it (4409), which is
        # then no sign of another tab or process.
        orphans_until = 0.0
        while self._closed is None:
            code: int | None = None
            reason = ""
            try:
                headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
                async with ws_connect(
                    self._url(),
                    additional_headers=headers,
                    open_timeout=self.open_timeout,
                    compression=None,
                    max_size=None,
                    ping_interval=None,  # liveness is checked with JSON pings below
                    close_timeout=2,
                ) as socket:
                    self._socket = socket
                    await self._serve(socket)
                    code, reason = socket.close_code, socket.close_reason or ""
                    delays = backoff(self.backoff_initial, maximum=self.backoff_max)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                reason = exc.rcvd.reason if exc.rcvd else ""
            except InvalidStatus as exc:
                code = 4403 if exc.response.status_code == 403 else None
                reason = f"handshake refused with HTTP {exc.response.status_code}"
            except InvalidHandshake as exc:  # the connection broke during the handshake
                log.debug("handshake failed: %r", exc)
            except (OSError, TimeoutError, _Gap) as exc:
                log.debug("connection lost: %r", exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unexpected client failure; reconnecting")
            finally:
                self._socket = None
                if not self._connected.is_set():
                    orphans_until = time.monotonic() + 2 * self.open_timeout
                self._connected.clear()
            if self._closed is not None:
                break
            if code == CloseCode.REPLACED and time.monotonic() < orphans_until:
                log.info("replaced, maybe by a handshake of ours that came late; reconnecting")
            elif not should_reconnect(code):
                self._closed = ClientClosed(code, reason)
                self._set_state("offline", code)
                break
            self._set_state("reconnecting", code)
            await asyncio.sleep(next(delays))
        await self._queue.put(self._closed or ClientClosed(None))
        for event in self._answer_waiters.values():
            event.set()

    async def _serve(self, socket: ClientConnection) -> None:
        pinger = asyncio.create_task(self._ping(socket))
        try:
            async for raw in socket:
                frame = json.loads(raw)
                verdict = self.tracker.observe(frame)
                if verdict is Verdict.DUPLICATE:
                    continue
                if verdict is Verdict.GAP:
                    raise _Gap(f"expected seq {self.tracker.position} + 1, got {frame.get('seq')}")
                await self._deliver(frame, socket)
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def _deliver(self, frame: Frame, socket: ClientConnection) -> None:
        kind = frame.get("type")
        if kind == "welcome":
            self.connects += 1
            self._last_pong = time.monotonic()
            self._connected.set()
            self._set_state("connected")
            for pending in list(self._pending.values()):  # resend what was never acknowledged
                await socket.send(json.dumps(pending))
        elif kind == "ack":
            self._pending.pop(str(frame.get("id")), None)
        elif kind == "threads":
            while self._listings:  # the reply to the oldest listing still waiting
                waiting = self._listings.popleft()
                if not waiting.done():
                    waiting.set_result(frame)
                    break
        elif kind == "pong":
            self._last_pong = time.monotonic()
        elif (
            kind == "error"
            and frame.get("request_id") in self._pending
            # A draining node's refusal: it closes with 1012 next, and the chat goes again,
            # same id, on the next connection.
            and frame.get("code") != "shutting_down"
        ):
            self._pending.pop(frame["request_id"], None)  # refused: resending cannot help
        answer = self.answers.apply(frame)
        if answer is not None and answer.done:
            waiter = self._answer_waiters.get(answer.request_id)
            if waiter is not None:
                waiter.set()
        await self._queue.put(frame)

    async def _ping(self, socket: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            if time.monotonic() - self._last_pong > self.ping_interval + self.pong_timeout:
                log.debug("no pong in time; dropping the connection")
                await socket.close(code=4000, reason="no pong")  # 4000: client-side timeout
                return
            with contextlib.suppress(ConnectionClosed):
                await socket.send(json.dumps({"type": "ping", "ts": time.time()}))


def connect(url: str, client_id: str | None = None, **options: Any) -> DariClient:
    """``async with connect("ws://127.0.0.1:8000", client_id="me") as client: ...``"""
    return DariClient(url, client_id or f"py-{uuid.uuid4().hex[:16]}", **options)
