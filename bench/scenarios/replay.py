"""Scenario E: replay on resume: a client misses 10,000 frames, reconnects, gets them all.

dari only. The client connects, chats with an agent that waits 300 ms and then emits 9,999
``step`` frames (each its own frame; dari merges only ``response`` pieces), receives ``start``
and disconnects. Once the answer is saved (the harness polls the REST history), the client
reconnects with ``last_seq`` = the ``start`` frame's seq: the 9,999 steps and the ``end`` frame
are 10,000 missed frames, exactly the default replay log size. Time = connect sent → last
replayed frame received, by a picows client in a separate process; repeated, median reported.
Checks: ``resumed: true``, seq contiguous from ``last_seq + 1``, steps in order, none twice.
If the server closes the socket midway, the client reconnects at once from the last seq it
got (dari's clients do the same, with back-off). Run twice: with dari's default limits, and
with ``limits.max_lag_frames`` raised above the number of missed frames.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from dataclasses import replace
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from websockets.sync.client import connect

from harness import stats
from harness.config import BenchConfig
from harness.report import Measured, Metric, Table
from harness.script import run_in_worker
from harness.session import Session, session
from harness.targets import BENCH_PROJECT, STEPS_AGENT, TARGETS, Target

NAME = "replay"
ONLY = ("dari",)
REPEATS = 3


def table(cfg: BenchConfig) -> Table:
    return Table(
        title=f"E. Replay of {cfg.replay_frames:,} missed frames on resume",
        method=__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() if __doc__ else "",
        metrics=[
            m
            for prefix, label in (("d", "default limits"), ("r", "max_lag_frames raised"))
            for m in (
                Metric(f"{prefix}.frames", f"{label}: frames replayed", ""),
                Metric(f"{prefix}.reconnects", f"{label}: reconnects needed", ""),
                Metric(f"{prefix}.welcome", f"{label}: connect → welcome ms", "", 1),
                Metric(f"{prefix}.total", f"{label}: connect → last frame ms, median", "", 1),
                Metric(f"{prefix}.worst", f"{label}: connect → last frame ms, slowest", "", 1),
                Metric(f"{prefix}.fps", f"{label}: replayed frames/s", "", 0),
                Metric(f"{prefix}.us", f"{label}: server CPU µs per replayed frame", "", 1),
                Metric(f"{prefix}.produce", f"{label}: producing the missed frames, s", "", 2),
            )
        ],
    )


def _miss(sess: Session, cid: str, count: int) -> tuple[int, str]:
    """Chat so that ``count`` frames are logged while away; return (last seq seen, request id)."""
    rid = f"{cid}-1"
    with connect(sess.url + cid, compression=None, open_timeout=10, close_timeout=2) as ws:
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome["type"] == "welcome", welcome
        chat = {
            "type": "chat",
            "id": rid,
            "message": f"{count - 1} 300",
            "agent_name": STEPS_AGENT,
            "project_id": BENCH_PROJECT,
            "thread_id": cid,
        }
        ws.send(json.dumps(chat))
        while True:
            frame = json.loads(ws.recv(timeout=10))
            if frame["type"] == "error":
                raise RuntimeError(f"chat refused: {frame}")
            if frame["type"] == "start":
                return int(frame["seq"]), rid


def _wait_saved(sess: Session, cid: str, rid: str, timeout: float) -> None:
    path = f"/api/projects/{BENCH_PROJECT}/agents/{STEPS_AGENT}/threads/{cid}/messages?limit=5"
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection("127.0.0.1", sess.port, timeout=10)
    try:
        while time.monotonic() < deadline:
            conn.request("GET", path)
            body = json.loads(conn.getresponse().read())
            for m in body.get("messages", []):
                mine = m.get("request_id") == rid and m.get("role") == "assistant"
                if mine and m.get("status") != "streaming":
                    return
            time.sleep(0.05)
    finally:
        conn.close()
    raise TimeoutError("the answer producing the missed frames did not finish")


class _Resumer(WSListener):  # type: ignore[misc]
    """One resuming client; it keeps its position (and checks) across reconnects."""

    def __init__(self, last_seq: int, done: asyncio.Future[None]) -> None:
        self.position = last_seq
        self.done = done
        self.closed: asyncio.Future[int | None] = done.get_loop().create_future()
        self.head: int | None = None
        self.t_welcome = 0.0
        self.frames = 0
        self.next_step = 0
        self.problems: list[str] = []
        self.close_codes: list[int | None] = []

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_codes.append(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        msg = orjson.loads(frame.get_payload_as_bytes())
        kind, seq = msg.get("type"), msg.get("seq")
        if kind == "welcome":
            self.t_welcome = self.t_welcome or time.monotonic()
            self.head = int(msg["last_seq"])
            if not msg.get("resumed"):
                self.problems.append(f"welcome says resumed: false ({msg.get('reason')})")
                self.done.set_result(None)
            elif self.head <= self.position:
                self.done.set_result(None)
            return
        if seq != self.position + 1:
            self.problems.append(f"seq {seq} after {self.position}")
        self.position = seq if isinstance(seq, int) else self.position
        self.frames += 1
        if kind == "step":
            if msg.get("content") != str(self.next_step):
                self.problems.append(f"step {msg.get('content')} where {self.next_step} was due")
            self.next_step += 1
        if self.head is not None and self.position >= self.head and not self.done.done():
            self.done.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def resume(url: str, last_seq: int, timeout: float, max_reconnects: int) -> dict[str, Any]:
    """Reconnect with ``last_seq``; time the welcome and the last replayed frame.

    If the server closes the socket before everything has arrived, reconnect at once from the
    last seq received (as dari's clients do, without their back-off), up to ``max_reconnects``.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    listener = _Resumer(last_seq, done)
    reconnects = 0
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while True:
                listener.closed = loop.create_future()
                transport, _ = await ws_connect(
                    lambda: listener,
                    f"{url}?last_seq={listener.position}",
                    read_buffer_init_size=1 << 16,
                )
                await asyncio.wait([done, listener.closed], return_when=asyncio.FIRST_COMPLETED)
                if done.done() or reconnects >= max_reconnects:
                    break
                reconnects += 1
    except TimeoutError:
        listener.problems.append(f"only {listener.frames} frames within {timeout:g} s")
    t1 = time.monotonic()
    if not done.done():
        listener.problems.append(f"gave up after {reconnects} reconnects")
    transport.send_close()
    transport.disconnect()
    return {
        "welcome": listener.t_welcome - t0 if listener.t_welcome else None,
        "total": t1 - t0,
        "frames": listener.frames,
        "steps": listener.next_step,
        "reconnects": reconnects,
        "close_codes": sorted(set(listener.close_codes), key=str),
        "problems": listener.problems,
    }


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    out = Measured()
    base = TARGETS[target_name]
    raised = replace(
        base,
        env={**base.env, "DARI_LIMITS__MAX_LAG_FRAMES": str(max(2000, 2 * cfg.replay_frames))},
    )
    for prefix, target in (("d", base), ("r", raised)):
        _run(prefix, target, cfg, out)
    return out


def _run(prefix: str, target: Target, cfg: BenchConfig, out: Measured) -> None:
    count = cfg.replay_frames
    cid = "replay-0"
    with session(target, cfg, delay_ms=0, run_id=f"r{prefix}") as sess:
        t0 = time.monotonic()
        last_seq, rid = _miss(sess, cid, count)
        _wait_saved(sess, cid, rid, timeout=30 + count / 1000)
        produced = time.monotonic() - t0
        time.sleep(0.3)
        sess.wait_quiet(cfg.quiet_wait_s)
        runs = []
        for _ in range(REPEATS):
            start = sess.mark()
            got = run_in_worker(resume, sess.url + cid, last_seq, 30.0, 1000, timeout=60)
            sample = sess.since(start)
            runs.append((got, sample))
    totals = [g["total"] for g, _ in runs]
    got, sample = runs[totals.index(stats.percentile(totals, 50))]
    noisy = sample.noisy
    out.put(f"{prefix}.frames", got["frames"])
    out.put(f"{prefix}.reconnects", got["reconnects"])
    out.put(f"{prefix}.welcome", stats.ms(got["welcome"]), noisy=noisy)
    out.put(f"{prefix}.total", stats.ms(got["total"]), noisy=noisy)
    out.put(f"{prefix}.worst", stats.ms(max(totals)), noisy=noisy)
    fps = got["frames"] / got["total"] if got["total"] else None
    out.put(f"{prefix}.fps", fps, noisy=noisy)
    frames = got["frames"]
    out.put(f"{prefix}.us", 1e6 * sample.server_cpu_s / frames if frames else None, noisy=noisy)
    out.put(f"{prefix}.produce", produced)
    where = "dari" + (" (max_lag_frames raised)" if prefix == "r" else "")
    if got["reconnects"]:
        out.notes.append(
            f"{where}: the server closed the resuming socket {got['reconnects']} times "
            f"(close codes {got['close_codes']}); the client reconnected from its last seq"
        )
    for g, _ in runs:
        if g["frames"] != count:
            out.notes.append(f"{where}: {g['frames']:,} frames replayed, {count:,} were missed")
        if g["steps"] != count - 1:
            out.notes.append(f"{where}: {g['steps']:,} steps replayed of {count - 1:,}")
        out.notes += [f"{where}: {p}" for p in g["problems"][:5]]
    out.notes += sample.warnings(f"{where} replay")
