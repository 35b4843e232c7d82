"""Scenario A': unpaced streaming (saturation), the server's ceiling at 100 and 1,000 clients.

The agent yields its words as fast as the server takes them (one ``sleep(0)`` per piece), every
client chats in a loop. Shows tokens/s, frames/s and server CPU per token; dari may merge pieces
under back-pressure, so tokens and frames can differ.
"""

from __future__ import annotations

from harness import stats
from harness.config import BenchConfig
from harness.report import Measured, Metric, Table
from harness.session import Session, session
from harness.targets import TARGETS

NAME = "burst"


def table(cfg: BenchConfig) -> Table:
    metrics = []
    for n in cfg.burst_levels:
        metrics += [
            Metric(f"{n}.tps", f"{n} clients: tokens/s", "higher"),
            Metric(f"{n}.fps", f"{n} clients: response frames/s", "higher"),
            Metric(f"{n}.tpf", f"{n} clients: words per frame", "", 2),
            Metric(f"{n}.us", f"{n} clients: server CPU µs per token", "lower", 1),
            Metric(f"{n}.ttft50", f"{n} clients: first token p50 ms", "lower", 1),
            Metric(f"{n}.ttft99", f"{n} clients: first token p99 ms", "lower", 1),
            Metric(f"{n}.cpu", f"{n} clients: server CPU %", "", 0),
            Metric(f"{n}.load", f"{n} clients: load generator CPU %", "", 0),
        ]
    levels = " and ".join(f"{n:,}" for n in cfg.burst_levels)
    return Table(
        title=f"A'. Unpaced streaming (saturation), {levels} clients, {cfg.burst_tokens}-word "
        "answers",
        method=(
            f"No pacing: the ceiling of one server core. Measured over {cfg.burst_measure_s:g} s "
            f"after {cfg.burst_warmup_s:g} s of warm-up (plus 1 s per 1,000 clients for the "
            "first chats to start), a fresh server per level. CPU µs per token = server CPU "
            "time ÷ words delivered."
        ),
        metrics=metrics,
    )


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    target = TARGETS[target_name]
    out = Measured()
    for n in cfg.burst_levels:
        with session(target, cfg, delay_ms=0, run_id=f"b{n}") as sess:
            _level(sess, n, cfg, out)
    return out


def _level(sess: Session, n: int, cfg: BenchConfig, out: Measured) -> None:
    stagger = 0.2 if n <= 100 else 0.5
    warmup = cfg.burst_warmup_s + n / 1000
    group = sess.load(
        n,
        cfg.load_procs,
        budget_s=30 + n / 50 + cfg.quiet_wait_s + warmup + cfg.burst_measure_s + cfg.drain_s,
        tokens=cfg.burst_tokens,
        interval=0.0,
        stagger=stagger,
    )
    go, sample, result = sess.run_window(
        group, cfg.quiet_wait_s, warmup, cfg.burst_measure_s, cfg.drain_s + n / 200
    )
    secs = go.w1 - go.w0
    noisy = sample.noisy
    out.put(f"{n}.tps", result.tokens / secs, noisy=noisy)
    out.put(f"{n}.fps", result.frames / secs, noisy=noisy)
    out.put(f"{n}.tpf", result.tokens / result.frames if result.frames else None)
    us = 1e6 * sample.server_cpu_s / result.tokens if result.tokens else None
    out.put(f"{n}.us", us, noisy=noisy)
    out.put(f"{n}.ttft50", stats.ms(stats.percentile(result.ttft, 50)), noisy=noisy)
    out.put(f"{n}.ttft99", stats.ms(stats.percentile(result.ttft, 99)), noisy=noisy)
    out.put(f"{n}.cpu", sample.server_cpu_pct, noisy=noisy)
    out.put(f"{n}.load", sample.load_cpu_pct, noisy=noisy)
    where = f"{sess.target.name} at {n} clients"
    out.notes += [f"{where}: {p}" for p in stats.problems(result, n)]
    out.notes += sample.warnings(where)
