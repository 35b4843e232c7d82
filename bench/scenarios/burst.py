"""Scenario A': unpaced streaming, the server's ceiling (as PERF-NOTES measured it).

The agent yields its words as fast as the server takes them (one ``sleep(0)`` per piece), every
client chats in a loop. Shows tokens/s, frames/s and server CPU per token; dari may merge pieces
under back-pressure, so tokens and frames can differ.
"""

from __future__ import annotations

from harness import stats
from harness.config import BenchConfig
from harness.report import Measured, Metric, Table
from harness.session import go_marks, session
from harness.targets import TARGETS

NAME = "burst"


def table(cfg: BenchConfig) -> Table:
    n = cfg.burst_clients
    return Table(
        title=f"A'. Unpaced streaming, {n} clients, {cfg.burst_tokens}-word answers",
        method=(
            f"No pacing: the ceiling of one server core. Measured over {cfg.burst_measure_s:g} s "
            f"after {cfg.burst_warmup_s:g} s of warm-up. CPU µs per token = server CPU time ÷ "
            "words delivered."
        ),
        metrics=[
            Metric("tps", "tokens/s", "higher"),
            Metric("fps", "response frames/s", "higher"),
            Metric("tpf", "words per frame", "", 2),
            Metric("us", "server CPU µs per token", "lower", 1),
            Metric("ttft50", "first token p50 ms", "lower", 1),
            Metric("ttft99", "first token p99 ms", "lower", 1),
            Metric("cpu", "server CPU %", "", 0),
            Metric("load", "load generator CPU %", "", 0),
        ],
    )


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    target = TARGETS[target_name]
    n = cfg.burst_clients
    with session(target, cfg, delay_ms=0, run_id="b") as sess:
        group = sess.load(
            n,
            cfg.load_procs,
            budget_s=30 + n / 100 + cfg.quiet_wait_s + cfg.burst_measure_s + cfg.drain_s,
            tokens=cfg.burst_tokens,
            interval=0.0,
            stagger=0.2,
        )
        try:
            group.wait_ready()
            sess.wait_quiet(cfg.quiet_wait_s)
            go = go_marks(0.2, cfg.burst_warmup_s, cfg.burst_measure_s, cfg.drain_s)
            group.send("go", go)
            sample = sess.measure(group, go.w0, go.w1)
            result = stats.merge(group.results())
        finally:
            group.close()
    secs = go.w1 - go.w0
    out = Measured()
    noisy = sample.noisy
    out.put("tps", result.tokens / secs, noisy=noisy)
    out.put("fps", result.frames / secs, noisy=noisy)
    out.put("tpf", result.tokens / result.frames if result.frames else None)
    us = 1e6 * sample.server_cpu_s / result.tokens if result.tokens else None
    out.put("us", us, noisy=noisy)
    out.put("ttft50", stats.ms(stats.percentile(result.ttft, 50)), noisy=noisy)
    out.put("ttft99", stats.ms(stats.percentile(result.ttft, 99)), noisy=noisy)
    out.put("cpu", sample.server_cpu_pct, noisy=noisy)
    out.put("load", sample.load_cpu_pct, noisy=noisy)
    out.notes += [f"{target_name}: {p}" for p in stats.problems(result, n)]
    out.notes += sample.warnings(target_name)
    return out
