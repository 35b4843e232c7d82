"""Scenario F: reconnect storm: 1,000 connected clients lose their sockets and all come back
at the same moment.

N clients connect (at most 64 handshakes in flight per worker) and get ``welcome``. Then every
socket is dropped (TCP close, no WebSocket close frame, as when a network path or a load
balancer fails) and 1 s later all N reconnect at once, with no limit on handshakes in flight;
dari's resume with ``last_seq`` = the seq of their first ``welcome``. Time to all = the storm's
start → the last client's ``welcome`` (baselines: the last completed handshake). Handshake =
one client's connect → ``welcome``.
"""

from __future__ import annotations

import time

from harness import stats
from harness.config import BenchConfig
from harness.loadgen import LoadResult
from harness.report import Measured, Metric, Table
from harness.session import session
from harness.targets import TARGETS

NAME = "storm"


def table(cfg: BenchConfig) -> Table:
    n = cfg.storm_clients
    return Table(
        title=f"F. Reconnect storm: {n:,} clients at once",
        method=__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() if __doc__ else "",
        metrics=[
            Metric("secs", "storm → all reconnected, s", "lower", 2),
            Metric("p50", "handshake p50 ms", "lower", 1),
            Metric("p99", "handshake p99 ms", "lower", 1),
            Metric("ok", f"reconnected (of {n:,})", "higher"),
            Metric("resumed", "welcome with resumed: true", ""),
            Metric("cpu_s", "server CPU seconds for the storm", "lower", 2),
            Metric("first", "first connect of all, s (64 in flight)", "lower", 2),
        ],
    )


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    target = TARGETS[target_name]
    n = cfg.storm_clients
    out = Measured()
    with session(target, cfg, delay_ms=20, run_id="st") as sess:
        group = sess.load(n, cfg.load_procs, budget_s=60 + n / 50 + cfg.quiet_wait_s)
        try:
            first = stats.merge(group.wait_ready())
            sess.wait_quiet(cfg.quiet_wait_s)
            start = sess.mark(group)
            group.send("storm", time.monotonic() + 1.0)
            storm = stats.merge(group.collect("stormed"))
            sample = sess.since(start, group)
            time.sleep(0.5)  # sockets closed by the server right after welcome would show now
            group.send("stop")
            final = group.results()
        finally:
            group.close()
    after = stats.merge(r.storm for r in final if r.storm is not None)
    noisy = sample.noisy
    out.put("secs", storm.connect_s, noisy=noisy)
    out.put("p50", stats.ms(stats.percentile(storm.connect_lat, 50)), noisy=noisy)
    out.put("p99", stats.ms(stats.percentile(storm.connect_lat, 99)), noisy=noisy)
    out.put("ok", storm.clients)
    out.put("resumed", storm.resumed if target.is_dari else None)
    out.put("cpu_s", sample.server_cpu_s, noisy=noisy)
    out.put("first", first.connect_s)
    where = f"{target_name} storm of {n:,}"
    out.notes += [f"{target_name} first connect: {p}" for p in stats.problems(first, n)]
    out.notes += [f"{where}: {p}" for p in _storm_problems(storm, after, first.clients)]
    if target.is_dari and storm.resumed < storm.clients:
        out.notes.append(f"{where}: {storm.clients - storm.resumed} welcomes not resumed")
    if sample.load_cpu_pct > 80:
        out.notes.append(f"{where}: load generator at {sample.load_cpu_pct:.0f}% CPU")
    if sample.noisy:
        out.notes.append(f"{where}: other processes took {sample.foreign_pct:.0f}% of the core")
    return out


def _storm_problems(storm: LoadResult, after: LoadResult, expected: int) -> list[str]:
    found = []
    if storm.clients < expected:
        found.append(f"{expected - storm.clients} failed to reconnect {storm.connect_errors}")
    if storm.errors:
        found.append(f"error frames {storm.errors}")
    if storm.seq_gaps or after.seq_gaps:
        found.append(f"{max(storm.seq_gaps, after.seq_gaps)} seq gaps")
    if after.dropped:
        found.append(f"{after.dropped} sockets closed by the server after reconnecting")
    return found
