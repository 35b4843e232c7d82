"""Load generator: many picows WebSocket clients in one process, driven from a pipe.

A worker process connects its clients, reports ``ready``, then either streams chats during a
time window (``stream``) or just holds the sockets open (``idle``) until told to stop. It never
outlives ``spec.deadline``: every wait is bounded, and it exits on its own.

Per-frame work is kept to callbacks (no coroutine per frame) so that one process on one core
can receive well over 100 k frames/s, several times what the servers under test can send.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from harness.procs import LOAD_CPU, pin, raise_nofile

TEXT = WSMsgType.TEXT


@dataclass
class LoadSpec:
    url: str  # prefix; the client id is appended
    client_ids: list[str]
    dari: bool  # dari dialect: welcome first, chat needs project/agent, seq is checked
    project_id: str
    agent_name: str
    tokens: int = 100  # words per answer
    interval: float = 0.02  # seconds between the agent's pieces; 0 = as fast as possible
    stagger: float = 1.0  # first chats are spread uniformly over this many seconds
    deadline: float = 0.0  # absolute time.monotonic() after which the worker gives up
    connect_concurrency: int = 64
    handshake_timeout: float = 15.0
    cpu: int = LOAD_CPU
    subscribe: bool = False  # dari: subscribe to the project after welcome (fan-out listeners)
    record: tuple[str, ...] = ()  # frame types whose (content, arrival time) are kept as marks
    # dari: client id -> a thread it follows instead of chatting (subscribes to that
    # conversation after welcome and checks each answer that starts there)
    listen: dict[str, str] = field(default_factory=dict)


@dataclass
class Go:
    """Absolute ``time.monotonic()`` marks (the clock is shared by all processes on Linux)."""

    start: float  # first chats from here (plus stagger)
    w0: float  # measurement window: tokens received in [w0, w1] are counted
    w1: float
    stop_chats: float  # no new chat after this; running answers finish
    hard: float  # give up on unfinished answers


@dataclass
class LoadResult:
    clients: int = 0
    connect_s: float = 0.0
    connect_lat: list[float] = field(default_factory=list)
    connect_errors: dict[str, int] = field(default_factory=dict)
    tokens: int = 0  # words received inside the window
    frames: int = 0  # response frames received inside the window
    answers: int = 0  # answers that ended inside the window
    latencies: array[float] = field(default_factory=lambda: array("d"))
    ttft: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    mismatches: int = 0  # answers whose text differs from the message
    seq_gaps: int = 0
    dropped: int = 0  # sockets closed by the server
    unfinished: int = 0  # answers still running at the hard stop
    alive: int = 0  # idle mode: sockets still open when told to stop
    marks: list[tuple[str, float]] = field(default_factory=list)  # recorded frames' arrivals
    resumed: int = 0  # welcome frames with resumed: true
    storm: LoadResult | None = None  # the reconnect storm's own connect figures


class Run:
    """State shared by the clients of one worker."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.loop = asyncio.get_running_loop()
        self.result = LoadResult()
        self.errors: Counter[str] = Counter()
        self.clients: list[Client] = []
        self.message = " ".join(f"w{i}" for i in range(spec.tokens))
        self.go = Go(0.0, float("inf"), float("inf"), float("inf"), float("inf"))
        self.closing = False
        self.finished = 0
        self.all_finished: asyncio.Future[None] = self.loop.create_future()

    def client_finished(self) -> None:
        self.finished += 1
        if self.finished >= len(self.clients) and not self.all_finished.done():
            self.all_finished.set_result(None)


class Client(WSListener):  # type: ignore[misc]
    def __init__(self, run: Run, client_id: str) -> None:
        self.run = run
        self.cid = client_id
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future[None] = run.loop.create_future()
        self.position: int | None = None
        self.count = 0
        self.busy = False
        self.done = False
        self.t_send = 0.0
        self.t_ref = 0.0
        self.t_first = 0.0
        self.words = 0
        self.in_word = False
        self.parts: list[str] = []
        self.seen: set[str] = set()  # contents of recorded frames (fan-out: once each)
        self.follows = run.spec.listen.get(client_id)  # a listener's thread, else None

    # --- picows callbacks -------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if not self.run.spec.dari:
            self.ready.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != TEXT:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        now = time.monotonic()
        msg = orjson.loads(frame.get_payload_as_bytes())
        kind = msg.get("type")
        if self.run.spec.dari:
            self._check_seq(kind, msg.get("seq"))
        if kind == "response":
            self._on_piece(now, msg["content"])
        elif kind == "start":
            if self.follows is not None:
                self._begin(now)  # a listener's answer starts with its start frame
            self.t_ref = now
        elif kind == "end":
            self._on_end(now)
        elif kind == "welcome":
            if msg.get("resumed"):
                self.run.result.resumed += 1
            if self.follows is not None:
                spec = self.run.spec
                payload = {
                    "type": "subscribe",
                    "project_id": spec.project_id,
                    "agent_name": spec.agent_name,
                    "thread_id": self.follows,
                }
                transport.send(TEXT, orjson.dumps(payload))
            elif self.run.spec.subscribe:
                payload = {"type": "subscribe", "project_id": self.run.spec.project_id}
                transport.send(TEXT, orjson.dumps(payload))
            elif not self.ready.done():
                self.ready.set_result(None)
        elif kind == "subscribed":
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind in self.run.spec.record:
            content = str(msg.get("content"))
            if content in self.seen:
                self.run.errors[f"duplicate {kind}"] += 1
            self.seen.add(content)
            self.run.result.marks.append((content, now))
        elif kind == "error":
            self.run.errors[str(msg.get("code"))] += 1
            if self.busy and msg.get("request_id") in (None, self._request_id()):
                self._fail()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))
        if not self.run.closing:
            self.run.result.dropped += 1
            self._finish()

    # --- streaming --------------------------------------------------------------------------

    def _request_id(self) -> str:
        return f"{self.cid}-{self.count}"

    def send_chat(self) -> None:
        if self.done or self.follows is not None:
            return
        if self.transport is None or self.transport.is_disconnected:
            return
        spec = self.run.spec
        self.count += 1
        frame: dict[str, Any] = {"type": "chat", "message": self.run.message}
        if spec.dari:
            frame.update(
                id=self._request_id(),
                agent_name=spec.agent_name,
                project_id=spec.project_id,
                thread_id=self.cid,  # one conversation per client: no shared FIFO, no fan-out
            )
        self._begin(time.monotonic())
        self.transport.send(TEXT, orjson.dumps(frame))

    def _begin(self, now: float) -> None:
        self.busy = True
        self.words = 0
        self.in_word = False
        self.parts.clear()
        self.t_first = 0.0
        self.t_send = self.t_ref = now

    def _on_piece(self, now: float, content: str) -> None:
        run = self.run
        go = run.go
        if not self.t_first:
            # Every answer counts, warm-up included: a saturated server may start none in the
            # window, and its slow first tokens are exactly what should show.
            self.t_first = now
            run.result.ttft.append(now - self.t_send)
        self.parts.append(content)
        if not content:
            return
        # Tokens are counted by text (dari may merge pieces under back-pressure): a word
        # starts where non-space follows space or the start of the answer.
        new = len(content.split())
        if self.in_word and not content[0].isspace():
            new -= 1
        self.in_word = not content[-1].isspace()
        if go.w0 <= now <= go.w1:
            res = run.result
            res.frames += 1
            res.tokens += new
            interval = run.spec.interval
            if interval > 0:
                # Word k (from 0) is due (k + 1) intervals after the `start` frame arrived.
                base = now - self.t_ref
                lat = res.latencies
                for k in range(self.words + 1, self.words + new + 1):
                    lat.append(base - k * interval)
        self.words += new

    def _on_end(self, now: float) -> None:
        run = self.run
        if not self.busy:
            return
        self.busy = False
        if "".join(self.parts) != run.message:
            run.result.mismatches += 1
        if run.go.w0 <= now <= run.go.w1:
            run.result.answers += 1
        self._next(now)

    def _fail(self) -> None:
        self.busy = False
        # A refused chat (queue_full, rate_limited, ...) is retried shortly, not hammered.
        self.run.loop.call_later(0.05, self._next, time.monotonic())

    def _next(self, now: float) -> None:
        if self.follows is not None:
            if now >= self.run.go.stop_chats:
                self._finish()  # the followed client sends no chat after this either
            return
        if now < self.run.go.stop_chats:
            self.send_chat()
        else:
            self._finish()

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self.run.client_finished()

    def _check_seq(self, kind: str | None, seq: object) -> None:
        if not isinstance(seq, int):
            return
        if kind == "welcome":
            self.position = seq  # welcome does not advance seq (DESIGN.md)
            return
        if self.position is not None and seq != self.position + 1:
            self.run.result.seq_gaps += 1
        self.position = seq


# --- worker process ---------------------------------------------------------------------------


async def _connect_all(run: Run, queries: dict[str, str] | None = None) -> None:
    """Connect every client of the run; ``queries`` adds a query string per client id."""
    spec = run.spec
    sem = asyncio.Semaphore(spec.connect_concurrency)
    errors: Counter[str] = Counter()

    async def one(cid: str) -> None:
        async with sem:
            t0 = time.monotonic()
            client: Client | None = None
            try:
                async with asyncio.timeout(spec.handshake_timeout):
                    _, client = await ws_connect(
                        lambda: Client(run, cid),
                        spec.url + cid + (queries or {}).get(cid, ""),
                        websocket_handshake_timeout=spec.handshake_timeout,
                        read_buffer_init_size=4096,
                    )
                    await client.ready
            except Exception as exc:
                errors[type(exc).__name__] += 1
                if client is not None and client.transport is not None:
                    client.transport.disconnect()
                return
            run.result.connect_lat.append(time.monotonic() - t0)
            run.clients.append(client)

    t0 = time.monotonic()
    await asyncio.gather(*(one(cid) for cid in spec.client_ids))
    run.result.connect_s = time.monotonic() - t0
    run.result.connect_errors = dict(errors)
    run.result.clients = len(run.clients)


async def _storm(run: Run, at: float) -> Run:
    """Drop every socket (no close frame, as a network failure would), then reconnect them all
    at the absolute time ``at``, at once, each resuming from the last ``seq`` it saw."""
    run.closing = True
    for client in run.clients:
        if client.transport is not None and not client.transport.is_disconnected:
            client.transport.disconnect()
    queries = {c.cid: f"?last_seq={c.position}" for c in run.clients if c.position is not None}
    ids = [c.cid for c in run.clients]
    storm = Run(replace(run.spec, client_ids=ids, connect_concurrency=max(1, len(ids))))
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    await _connect_all(storm, queries)
    return storm


async def _recv(conn: Connection, until: float) -> Any:
    """Wait for the parent's next message without blocking the event loop."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
    try:
        async with asyncio.timeout(max(0.0, until - time.monotonic())):
            await readable
    finally:
        loop.remove_reader(fd)
        os.set_blocking(fd, True)  # uvloop made it non-blocking; big results need blocking writes
    return conn.recv()


async def _stream(run: Run, go: Go) -> None:
    run.go = go
    spec = run.spec
    if not run.clients:
        return
    for client in run.clients:
        delay = go.start + random.random() * spec.stagger - time.monotonic()
        run.loop.call_later(max(0.0, delay), client.send_chat)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, go.hard - time.monotonic())):
            await run.all_finished
    run.result.unfinished = sum(1 for c in run.clients if c.busy)


async def _close_all(run: Run) -> None:
    run.closing = True
    for client in run.clients:
        transport = client.transport
        if transport is not None and not transport.is_disconnected:
            transport.send_close()
            transport.disconnect()
    await asyncio.sleep(0.2)  # let the close frames go out


async def _main(spec: LoadSpec, conn: Connection) -> None:
    run = Run(spec)
    runs = [run]
    try:
        async with asyncio.timeout(max(0.0, spec.deadline - time.monotonic())):
            await _connect_all(run)
            conn.send(("ready", run.result))
            msg = await _recv(conn, spec.deadline)  # idle mode: "stop" once measured
            if msg[0] == "go":
                await _stream(run, msg[1])
            elif msg[0] == "storm":
                storm = await _storm(run, msg[1])
                runs.append(storm)
                storm.result.errors = dict(storm.errors)
                conn.send(("stormed", storm.result))
                await _recv(conn, spec.deadline)  # "stop"
                storm.result.alive = _alive(storm)
                run.result.storm = storm.result
            run.result.alive = _alive(run)
    except TimeoutError:
        run.result.unfinished = sum(1 for c in run.clients if c.busy)
        run.errors["worker_deadline"] += 1
    run.result.errors = dict(run.errors)
    for each in runs:
        await _close_all(each)
    conn.send(("result", run.result))


def _alive(run: Run) -> int:
    return sum(
        1 for c in run.clients if c.transport is not None and not c.transport.is_disconnected
    )


def worker(spec: LoadSpec, conn: Connection) -> None:
    """Process entry point."""
    pin(spec.cpu)
    raise_nofile()
    try:
        uvloop.run(_main(spec, conn))
    finally:
        conn.close()
