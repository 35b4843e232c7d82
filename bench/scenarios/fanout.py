"""Scenario D: fan-out: one event to 1,000 subscribed clients, trigger to last delivery.

N clients connect; dari's subscribe to the project (``subscribe``, until ``subscribed``). Then
the harness triggers one event per round: for dari an external report,
``POST /api/projects/bench/reports``, which dari saves in the conversation's history and sends
as ``auto_report`` to every client subscribed to the project; for the baselines a
``{"type": "broadcast"}`` frame on a separate WebSocket, which the server sends on to every
open socket. Latency = a client's arrival time − the moment the trigger was sent (one clock for
all processes). Every client must get every round's event exactly once.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from collections import defaultdict

from websockets.sync.client import ClientConnection, connect

from harness import stats
from harness.config import BenchConfig
from harness.report import Measured, Metric, Table
from harness.session import Session, session
from harness.targets import BENCH_AGENT, BENCH_PROJECT, TARGETS

NAME = "fanout"
PER_WORKER = 1000


def table(cfg: BenchConfig) -> Table:
    n = cfg.fanout_clients
    return Table(
        title=f"D. Fan-out: one event to {n:,} clients, {cfg.fanout_rounds} rounds",
        method=__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() if __doc__ else "",
        metrics=[
            Metric("last50", "trigger → last client ms, median round", "lower", 1),
            Metric("last_max", "trigger → last client ms, slowest round", "lower", 1),
            Metric("p50", "per client latency p50 ms", "lower", 1),
            Metric("p99", "per client latency p99 ms", "lower", 1),
            Metric("delivered", f"delivered per round (of {n:,}), lowest", "higher"),
            Metric("trigger", "trigger request ms, median (dari: REST round trip)", "lower", 1),
            Metric("us", "server CPU µs per delivered frame", "lower", 1),
        ],
    )


class _Trigger:
    """Sends one event per round: dari's REST report, or a baseline's broadcast frame."""

    def __init__(self, sess: Session) -> None:
        self.sess = sess
        self.http: http.client.HTTPConnection | None = None
        self.ws: ClientConnection | None = None
        if sess.target.is_dari:
            self.http = http.client.HTTPConnection("127.0.0.1", sess.port, timeout=30)
        else:
            self.ws = connect(sess.url + "fanout-trigger", compression=None, open_timeout=10)

    def fire(self, tag: str) -> None:
        if self.http is not None:
            body = json.dumps({"content": tag, "agent_name": BENCH_AGENT, "thread_id": "fanout"})
            self.http.request(
                "POST",
                f"/api/projects/{BENCH_PROJECT}/reports",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            response = self.http.getresponse()
            text = response.read()
            if response.status != 201:
                raise RuntimeError(f"report refused: {response.status} {text[:200]!r}")
        elif self.ws is not None:
            self.ws.send(json.dumps({"type": "broadcast", "content": tag}))

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.ws is not None:
            self.ws.close()


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    target = TARGETS[target_name]
    n = cfg.fanout_clients
    gap = 0.5 if cfg.fanout_rounds <= 5 else 0.8
    out = Measured()
    with session(target, cfg, delay_ms=20, run_id="f") as sess:
        group = sess.load(
            n,
            max(cfg.load_procs, math.ceil(n / PER_WORKER)),
            budget_s=30 + n / 100 + cfg.quiet_wait_s + cfg.fanout_rounds * (gap + 1),
            subscribe=target.is_dari,
            record=("auto_report", "broadcast"),
        )
        trigger: _Trigger | None = None
        try:
            ready = stats.merge(group.wait_ready())
            trigger = _Trigger(sess)
            sess.wait_quiet(cfg.quiet_wait_s)
            sent: dict[str, float] = {}
            took: list[float] = []
            start = sess.mark(group)
            for r in range(cfg.fanout_rounds):
                tag = f"fanout-{r}"
                sent[tag] = time.monotonic()
                trigger.fire(tag)
                took.append(time.monotonic() - sent[tag])
                time.sleep(max(0.0, sent[tag] + gap - time.monotonic()))
            sample = sess.since(start, group)
            group.send("stop")
            result = stats.merge(group.results())
        finally:
            if trigger is not None:
                trigger.close()
            group.close()
    arrivals: dict[str, list[float]] = defaultdict(list)
    for content, at in result.marks:
        if content in sent:
            arrivals[content].append(at - sent[content])
    lats = [x for xs in arrivals.values() for x in xs]
    lasts = [max(arrivals[tag]) for tag in sent if arrivals[tag]]
    delivered = [len(arrivals[tag]) for tag in sent]
    noisy = sample.noisy
    out.put("last50", stats.ms(stats.percentile(lasts, 50)), noisy=noisy)
    out.put("last_max", stats.ms(max(lasts)) if lasts else None, noisy=noisy)
    out.put("p50", stats.ms(stats.percentile(lats, 50)), noisy=noisy)
    out.put("p99", stats.ms(stats.percentile(lats, 99)), noisy=noisy)
    out.put("delivered", min(delivered))
    out.put("trigger", stats.ms(stats.percentile(took, 50)), noisy=noisy)
    frames = sum(delivered)
    out.put("us", 1e6 * sample.server_cpu_s / frames if frames else None, noisy=noisy)
    where = f"{target_name} fan-out to {n:,}"
    out.notes += [f"{where}: {p}" for p in stats.problems(ready, n)]
    wrong = [d for d in delivered if d != ready.clients]
    if wrong:
        out.notes.append(
            f"{where}: {len(wrong)} of {len(delivered)} rounds not delivered to every connected "
            f"client exactly once (delivered: {', '.join(map(str, delivered))})"
        )
    if result.errors:
        out.notes.append(f"{where}: {result.errors}")
    if result.dropped:
        out.notes.append(f"{where}: {result.dropped} sockets closed by the server")
    if lasts and max(lasts) > gap:
        out.notes.append(f"{where}: a round took longer than the {gap:g} s between rounds")
    out.notes += sample.warnings(where)
    return out
