"""One attached socket and its writer.

Producers never write to the socket: they append to the client's replay log and notify the
connection. The writer sends what the log holds after ``sent``, so a slow socket only delays
itself; pieces that pile up meanwhile are merged by the log. A socket that stays stalled
for ``send_timeout_s``, or falls ``max_lag_frames`` behind, is closed with 1013 and the client
catches up by resuming.

Two writers, one behaviour:

- direct (one node on uvicorn, the default): a notification schedules one callback for the
  next turn of the event loop, which frames everything ready and writes it in one system call
  (``dari.transport.DirectSocket``). No task exists while the socket is idle; one waits only
  while the transport is paused (its buffer full).
- task: a writer task per socket that awaits the log (a replay log in Redis, or another ASGI
  server); on uvicorn it frames each batch it read and writes it in one system call too, on
  another server it awaits the ASGI ``send`` per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dari.hub.replay import ReplayLog
from dari.metrics import BYTES_OUT, FRAMES_OUT
from dari.protocol.codec import encode
from dari.protocol.errors import CloseCode
from dari.protocol.frames import Frame
from dari.transport import SERVER_SEND, DirectSocket

log = logging.getLogger("dari.hub")

# Turns a logged frame into wire text, or None to skip it on this socket (e.g. another dialect).
Renderer = Callable[[Frame], str | None]

_BATCH = 256
_MAX_OFFERED = 4096


class Connection:
    # Slots and no spare Events: an idle connection's size is most of what 10,000 idle
    # sockets cost.
    __slots__ = (
        "_backlog_end",
        "_closing",
        "_direct",
        "_gather_due",
        "_log_head",
        "_memory",
        "_offered",
        "_progress_waiter",
        "_pump_scheduled",
        "_pump_timer",
        "_sending_since",
        "_server_send",
        "_socket",
        "_stall_timer",
        "_stalled",
        "_started",
        "_wake_waiter",
        "_woken",
        "_writer",
        "client_id",
        "close_code",
        "closed",
        "frames_sent",
        "generation",
        "max_lag_frames",
        "render",
        "replay",
        "send_timeout_s",
        "sent",
        "user_id",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        client_id: str,
        user_id: str,
        replay: ReplayLog,
        *,
        position: int,
        send_timeout_s: float,
        max_lag_frames: int,
        render: Renderer = encode,
        generation: int = 0,
        log_head: int | None = None,
    ) -> None:
        self.websocket = websocket
        self.client_id = client_id
        self.user_id = user_id
        self.replay = replay
        self.sent = position
        self.send_timeout_s = send_timeout_s
        self.max_lag_frames = max_lag_frames
        self.render = render
        # Data frames go straight to the server's send when the app exposes it (see
        # dari.transport.ExposeServerSend); Starlette's state checks add per-frame cost and
        # nothing else.
        self._server_send = websocket.scope.get(SERVER_SEND)
        # The direct writer reads the log without awaiting: only the in-memory log allows it.
        self._memory = replay.immediate()
        self._socket = DirectSocket.for_send(self._server_send)
        self._direct = self._socket if self._memory else None
        self._started = False
        self._pump_scheduled = False
        # A pump held back to gather an answer's pieces (its agent's stream_gather_ms).
        self._pump_timer: asyncio.TimerHandle | None = None
        # The task writer's counterpart: when it may send what woke it, None for at once.
        self._gather_due: float | None = None
        # The log's head when writing began: a resuming client's backlog up to there is not
        # lag (max_lag_frames is about falling behind new traffic, not about catching up).
        self._backlog_end = 0
        # The head as the handshake read it, if it did: the writer then need not ask the
        # shared log again (a round trip per connection on several nodes).
        self._log_head = log_head
        # Several nodes: frames this node logged for the client, by seq, handed over as they
        # were logged so the writer need not read them back from Redis.
        self._offered: dict[int, Frame] = {}
        self._closing: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.frames_sent = 0
        self._woken = False  # notified since the writer last looked
        self._wake_waiter: asyncio.Future[None] | None = None
        self._progress_waiter: asyncio.Future[None] | None = None  # resolved after a batch
        self.generation = generation  # arrival order of the handshake (Hub.next_generation)
        # Stall detection without a timeout context per batch (the hot path): the writer
        # notes when a batch began; a timer, armed at most once per send_timeout_s, checks it.
        self._writer: asyncio.Task[None] | None = None
        self._sending_since: float | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stalled = False

    @property
    def writes_directly(self) -> bool:
        return self._direct is not None

    def start(self) -> None:
        """Begin sending what the log holds after ``sent`` (after ``welcome``)."""
        self._started = True
        if self._memory is not None:
            self._backlog_end = self._memory.head_now(self.client_id)
        if self._direct is None:
            self._writer = asyncio.get_running_loop().create_task(self.run_writer())
        self.notify()

    async def stop(self) -> None:
        """The socket is done: stop writing, wait for the writer to finish."""
        self.closed.set()
        self.notify()
        for task in (self._writer, self._closing):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def notify(self, gather_s: float = 0.0) -> None:
        """Something was logged for this client. ``gather_s`` > 0: it is an answer's piece
        that may wait that long for more pieces to merge with it in the unsent tail (the
        agent's ``stream_gather_ms``); anything else, and a wait already running out, goes at
        the writer's next turn."""
        if self._direct is not None:
            # One callback per turn of the loop however many pieces arrive: pieces added
            # before it runs merge into the unsent tail (fewer, fuller frames when busy).
            if not self._started or self._writer is not None:
                self._woken = True
                return
            self._woken = True
            if self._pump_scheduled:
                timer = self._pump_timer
                if timer is not None and not gather_s:  # this one may not wait: go now
                    timer.cancel()
                    self._pump_timer = None
                    asyncio.get_running_loop().call_soon(self._pump)
            elif gather_s:
                self._pump_scheduled = True
                self._pump_timer = asyncio.get_running_loop().call_later(gather_s, self._pump)
            else:
                self._pump_scheduled = True
                asyncio.get_running_loop().call_soon(self._pump)
            return
        if gather_s:
            if self._woken:
                return  # the writer already has something to send: its due time stands
            self._gather_due = asyncio.get_running_loop().time() + gather_s
        else:
            self._gather_due = None
        self._woken = True
        waiter = self._wake_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _woken_up(self) -> None:
        """Until something was logged and, for gathered pieces, their wait ran out."""
        loop = asyncio.get_running_loop()
        while True:
            timer: asyncio.TimerHandle | None = None
            if self._woken:
                due = self._gather_due
                if due is None:
                    return
                if due <= loop.time():
                    self._gather_due = None
                    return
                timer = loop.call_later(due - loop.time(), self._gathered)
            self._wake_waiter = loop.create_future()
            try:
                await self._wake_waiter
            finally:
                self._wake_waiter = None
                if timer is not None:
                    timer.cancel()

    def _gathered(self) -> None:
        self._gather_due = None
        waiter = self._wake_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _batch_sent(self, count: int, size: int) -> None:
        """Counted per batch, not per frame (the hot path); wakes ``flush``. ``size`` is in
        UTF-8 bytes on both writers."""
        self.frames_sent += count
        FRAMES_OUT.inc(count)
        BYTES_OUT.inc(size)
        waiter = self._progress_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stall_ended(self, task: asyncio.Task[None] | None) -> bool:
        """Whether the cancellation ``task`` is handling came from the stall timer; if so it
        is absorbed (the caller closes the socket with 1013) rather than propagated."""
        if not self._stalled or task is None:
            return False
        task.uncancel()
        return True

    async def send_direct(self, frame: Frame) -> None:
        """Send a frame outside the log (``welcome``): only before the writer starts."""
        text = self.render(frame)
        if text is None:
            return
        try:
            await self.websocket.send_text(text)
        except RuntimeError:
            # The peer vanished during the handshake: the server never completed the accept.
            raise WebSocketDisconnect(1006) from None

    def _pump(self) -> None:
        """Direct writer: send everything ready now; hand over to a task while paused."""
        self._pump_scheduled = False
        self._pump_timer = None
        self._woken = False
        direct, memory = self._direct, self._memory
        assert direct is not None and memory is not None
        client_id = self.client_id
        while not self.closed.is_set() and self._writer is None:
            if direct.gone:
                return  # the reader sees the disconnect and ends the socket
            if not direct.writable:
                self._writer = asyncio.get_running_loop().create_task(self._until_writable())
                return
            frames = memory.read_now(client_id, self.sent, _BATCH)
            if frames is None:
                self._close_soon("fell behind the replay window")
                return
            if not frames:
                return
            texts, size = self._encoded(frames)
            try:
                if texts:
                    direct.write_texts(texts)
            except Exception:  # the socket went away under us: the reader loop notices too
                log.debug("writing to %s failed", client_id, exc_info=True)
                self.closed.set()
                return
            self.sent = frames[-1]["seq"]
            self._batch_sent(len(texts), size)
            head = memory.head_now(client_id)
            if self._lag(head) > self.max_lag_frames:
                self._close_soon("client too slow")
                return
            if head <= self.sent:
                return

    async def _until_writable(self) -> None:
        """Direct writer, slow path: the transport is paused; wait, at most send_timeout_s."""
        assert self._direct is not None
        self._watch_send()
        try:
            await self._direct.wait_writable()
        except asyncio.CancelledError:
            if not self._stall_ended(asyncio.current_task()):
                raise
            self._writer = None
            await self.close(CloseCode.TRY_AGAIN_LATER, "client too slow")
            return
        finally:
            self._sending_since = None
        self._writer = None
        self._pump()

    def offer(self, epoch: str, seq: int, frame: Frame) -> None:
        """A frame just logged for this client as ``seq`` (shared log): the writer sends it
        from here when it is next in line, and reads the log for anything else."""
        if self._memory is not None or seq <= self.sent:
            return
        if self.replay.reading_epoch(self.client_id) != epoch:
            return  # another numbering: the writer's next read finds out and ends the socket
        if len(self._offered) >= _MAX_OFFERED:
            self._offered.clear()  # a client this far behind is served from the log
        self._offered[seq] = {**frame, "seq": seq}

    def skip_to(self, position: int) -> None:
        """Before ``start``: begin after ``position`` instead (frames up to it are not sent)."""
        self.sent = max(self.sent, position)
        for seq in [seq for seq in self._offered if seq <= self.sent]:
            del self._offered[seq]

    def _take_offered(self) -> list[Frame]:
        offered = self._offered
        frames: list[Frame] = []
        seq = self.sent + 1
        while seq in offered and len(frames) < _BATCH:
            frames.append(offered.pop(seq))
            seq += 1
        return frames

    def _lag(self, head: int) -> int:
        """Unsent frames logged since writing began."""
        return head - max(self.sent, self._backlog_end)

    def _close_soon(self, reason: str) -> None:
        self._closing = asyncio.get_running_loop().create_task(
            self.close(CloseCode.TRY_AGAIN_LATER, reason)
        )

    async def run_writer(self) -> None:
        self._writer = asyncio.current_task()
        try:
            if self._memory is None:
                head = self._log_head
                if head is None:
                    head = (await self.replay.position(self.client_id)).head
                self._backlog_end = head
            while not self.closed.is_set():
                await self._woken_up()
                # Let producers that are ready run first: pieces they add now merge into the
                # unsent tail, so a busy server sends fewer, fuller frames (no timed delay).
                await asyncio.sleep(0)
                self._woken = False
                if not await self._drain():
                    return
        except Exception:  # the socket went away under us: the reader loop notices too
            log.debug("writer for %s stopped", self.client_id, exc_info=True)
            self.closed.set()
        finally:
            self._sending_since = None
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None

    def _watch_send(self) -> None:
        loop = asyncio.get_running_loop()
        self._sending_since = loop.time()
        if self._stall_timer is None:
            self._stall_timer = loop.call_later(self.send_timeout_s, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_timer = None
        since = self._sending_since
        if since is None or self._writer is None:
            return  # not sending: the next batch arms the timer again
        loop = asyncio.get_running_loop()
        left = since + self.send_timeout_s - loop.time()
        if left > 0:
            self._stall_timer = loop.call_later(left, self._check_stall)
        else:
            self._stalled = True
            self._writer.cancel()

    async def _drain(self) -> bool:
        """Send everything the log holds after ``sent``; False once the connection is done."""
        while not self.closed.is_set():
            frames: list[Frame] | None = self._take_offered()
            if not frames:
                frames = await self.replay.read(self.client_id, self.sent, _BATCH)
                if frames and self._offered:
                    last = frames[-1]["seq"]
                    for seq in [s for s in self._offered if s <= last]:
                        del self._offered[seq]  # read from the log instead
            if frames is None:
                await self.close(CloseCode.TRY_AGAIN_LATER, "fell behind the replay window")
                return False
            if not frames:
                return True
            count = size = 0
            self._watch_send()
            try:
                if self._socket is not None:
                    count, size = await self._write_batch(self._socket, frames)
                else:
                    count, size = await self._send_each(frames)
            except asyncio.CancelledError:
                if not self._stall_ended(asyncio.current_task()):
                    raise
                await self.close(CloseCode.TRY_AGAIN_LATER, "client too slow")
                return False
            finally:
                self._sending_since = None
                self._batch_sent(count, size)
            if len(frames) < _BATCH:
                # The read reached the head: anything logged since has notified this socket,
                # so the loop comes back for it. No position query (a Redis round trip).
                return True
            position = await self.replay.position(self.client_id)
            if self._lag(position.head) > self.max_lag_frames:
                await self.close(CloseCode.TRY_AGAIN_LATER, "client too slow")
                return False
            if position.head <= self.sent:
                return True  # all sent: no second read to find that out
        return False

    def _encoded(self, frames: list[Frame]) -> tuple[list[bytes], int]:
        """The frames this socket shows, as UTF-8 texts, and their size in bytes."""
        texts: list[bytes] = []
        size = 0
        render = self.render
        for frame in frames:
            text = render(frame)
            if text is not None:
                data = text.encode()
                texts.append(data)
                size += len(data)
        return texts, size

    async def _write_batch(self, socket: DirectSocket, frames: list[Frame]) -> tuple[int, int]:
        """Frame the batch and write it in one system call, once the transport takes data."""
        texts, size = self._encoded(frames)
        if not socket.writable:
            await socket.wait_writable()
        if socket.gone:
            raise ConnectionError("the socket is gone")  # the reader ends it
        if texts:
            socket.write_texts(texts)
        self.sent = frames[-1]["seq"]
        return len(texts), size

    async def _send_each(self, frames: list[Frame]) -> tuple[int, int]:
        """Another ASGI server: its ``send`` per frame."""
        count = size = 0
        server_send = self._server_send
        for frame in frames:
            text = self.render(frame)
            if text is not None:
                if server_send is not None:
                    await server_send({"type": "websocket.send", "text": text})
                else:
                    await self.websocket.send_text(text)
                count += 1
                size += len(text.encode())
            self.sent = frame["seq"]
        return count, size

    async def flush(self, seq: int, timeout: float) -> None:
        """Wait (at most ``timeout``) until the writer has sent the frame numbered ``seq``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.sent < seq and not self.closed.is_set():
                    waiter = asyncio.get_running_loop().create_future()
                    self._progress_waiter = waiter
                    self.notify()
                    await waiter

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.close_code = code
        self.notify()
        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.websocket.close(code=code, reason=reason)
