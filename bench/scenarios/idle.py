"""Scenario B: idle connections: server memory per socket and the time to open them.

After a one-chat warm-up, the server's RSS (the process and its children) is read, N clients
connect (dari: until `welcome` arrives) with at most 64 handshakes in flight per worker, and
the RSS is read again 1.5 s later. KB per connection = RSS growth ÷ N.
"""

from __future__ import annotations

import math
import time

from harness import stats
from harness.config import BenchConfig
from harness.report import Metric, Table
from harness.session import session
from harness.targets import TARGETS

NAME = "idle"
PER_WORKER = 5000  # sockets per load worker process


def table(cfg: BenchConfig) -> Table:
    metrics = []
    for n in cfg.idle_counts:
        metrics += [
            Metric(f"{n}.kb", f"{n:,} idle: KB per connection", "lower", 1),
            Metric(f"{n}.mb", f"{n:,} idle: server RSS MB", "lower", 1),
            Metric(f"{n}.secs", f"{n:,} idle: seconds to connect all", "lower", 2),
            Metric(f"{n}.p99", f"{n:,} idle: handshake p99 ms", "lower", 1),
            Metric(f"{n}.cpu", f"{n:,} idle: server CPU % while idle", "lower", 1),
        ]
    return Table(
        title="B. Idle connections",
        method=__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() if __doc__ else "",
        metrics=metrics,
    )


def measure(target_name: str, cfg: BenchConfig) -> tuple[dict[str, float | None], list[str]]:
    target = TARGETS[target_name]
    values: dict[str, float | None] = {}
    notes: list[str] = []
    for n in cfg.idle_counts:
        with session(target, cfg, delay_ms=20, run_id=f"i{n}") as sess:
            time.sleep(0.5)  # let the warm-up chat's objects settle
            rss0 = sess.server.rss_bytes()
            procs = max(cfg.load_procs, math.ceil(n / PER_WORKER))
            group = sess.load(n, procs, budget_s=30 + n / 100)
            try:
                result = stats.merge(group.wait_ready())
                now = time.monotonic()
                sample = sess.measure(group, now + 0.5, now + 1.5)
                rss1 = sess.server.rss_bytes()
                group.send("stop")
                final = stats.merge(group.results())
            finally:
                group.close()
        values[f"{n}.kb"] = (rss1 - rss0) / 1024 / result.clients if result.clients else None
        values[f"{n}.mb"] = rss1 / 2**20
        values[f"{n}.secs"] = result.connect_s
        values[f"{n}.p99"] = stats.ms(stats.percentile(result.connect_lat, 99))
        values[f"{n}.cpu"] = sample.server_cpu_pct
        notes += [f"{target_name} at {n:,} idle: {p}" for p in stats.problems(result, n)]
        if final.alive < result.clients:
            notes.append(
                f"{target_name} at {n:,} idle: {result.clients - final.alive} sockets were closed"
                " while idle"
            )
        notes += sample.warnings(f"{target_name} at {n:,} idle")
        if final.errors:
            notes.append(f"{target_name} at {n:,} idle: {final.errors}")
    return values, notes
