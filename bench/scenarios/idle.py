"""Scenario B: idle connections: server memory per socket and the time to open them.

After a one-chat warm-up, the server's RSS (the process and its children) is read, N clients
connect (dari: until `welcome` arrives) with at most 64 handshakes in flight per worker, and
the RSS is read again 1.5 s later (1 s with --quick). KB per connection = RSS growth ÷ N.
"""

from __future__ import annotations

import math
import time

from harness import stats
from harness.config import BenchConfig
from harness.report import Measured, Metric, Table
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


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    target = TARGETS[target_name]
    out = Measured()
    for n in cfg.idle_counts:
        with session(target, cfg, delay_ms=20, run_id=f"i{n}") as sess:
            time.sleep(0.5)  # let the warm-up chat's objects settle
            sess.wait_quiet(cfg.quiet_wait_s)
            rss0 = sess.server.rss_bytes()
            procs = max(cfg.load_procs, math.ceil(n / PER_WORKER))
            group = sess.load(n, procs, budget_s=30 + n / 100)
            try:
                start = sess.mark(group)
                result = stats.merge(group.wait_ready())
                connecting = sess.since(start, group)
                start = sess.mark(group)
                time.sleep(cfg.idle_settle_s)
                idle = sess.since(start, group)
                rss1 = sess.server.rss_bytes()
                group.send("stop")
                final = stats.merge(group.results())
            finally:
                group.close()
        where = f"{target_name} at {n:,} idle"
        kb = (rss1 - rss0) / 1024 / result.clients if result.clients else None
        out.put(f"{n}.kb", kb)
        out.put(f"{n}.mb", rss1 / 2**20)
        out.put(f"{n}.secs", result.connect_s, noisy=connecting.noisy)
        p99 = stats.ms(stats.percentile(result.connect_lat, 99))
        out.put(f"{n}.p99", p99, noisy=connecting.noisy)
        out.put(f"{n}.cpu", idle.server_cpu_pct, noisy=idle.noisy)
        out.notes += [f"{where}: {p}" for p in stats.problems(result, n)]
        if final.alive < result.clients:
            closed = result.clients - final.alive
            out.notes.append(f"{where}: {closed} sockets were closed while idle")
        out.notes += connecting.warnings(f"{where} (connecting)")
        if final.errors:
            out.notes.append(f"{where}: {final.errors}")
    return out
