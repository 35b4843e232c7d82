"""Scenario A: paced streaming at 1, 100 and 1,000 concurrent clients.

Every client chats in a loop; the agent yields one word every 1/rate seconds on an absolute
schedule, pausing before each word. A word's latency is its arrival minus its expected emit time,
taken as the arrival of the answer's ``start`` frame plus k x interval for the k-th word (k from
1). Tokens are counted by text.
"""

from __future__ import annotations

from harness import stats
from harness.config import BenchConfig
from harness.report import Measured, Metric, Table
from harness.session import Session, session
from harness.targets import TARGETS

NAME = "streaming"


def _metrics(levels: tuple[int, ...]) -> list[Metric]:
    out = []
    for n in levels:
        out += [
            Metric(f"{n}.tps", f"{n} clients: tokens/s", "higher"),
            Metric(f"{n}.kept", f"{n} clients: % of offered tokens", "higher", 1),
            Metric(f"{n}.p50", f"{n} clients: token latency p50 ms", "lower", 1),
            Metric(f"{n}.p99", f"{n} clients: token latency p99 ms", "lower", 1),
            Metric(f"{n}.ttft99", f"{n} clients: first token p99 ms", "lower", 1),
            Metric(f"{n}.fps", f"{n} clients: response frames/s"),
            Metric(f"{n}.cpu", f"{n} clients: server CPU %", "lower", 0),
        ]
    return out


def table(cfg: BenchConfig) -> Table:
    return Table(
        title=f"A. Streaming at {cfg.rate:g} tokens/s per answer, {cfg.tokens}-word answers",
        method=(
            f"Each client chats in a loop; measured over {cfg.measure_s:g} s after "
            f"{cfg.warmup_s:g} s of warm-up. Token latency = arrival − (arrival of `start` + "
            f"k × {cfg.interval * 1000:g} ms) for the k-th word (k from 1); first token = chat "
            "sent → first word, over all answers of the run. Server CPU % is of its one "
            "pinned core; 100 % means saturated."
        ),
        metrics=_metrics(cfg.levels),
    )


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    target = TARGETS[target_name]
    out = Measured()
    delay_ms = cfg.interval * 1000
    if cfg.fresh_servers:
        for n in cfg.levels:
            with session(target, cfg, delay_ms=delay_ms, run_id=f"s{n}") as sess:
                _level(sess, n, cfg, out)
    else:  # --quick: one server for all levels saves its start-up time
        with session(target, cfg, delay_ms=delay_ms, run_id="s") as sess:
            for n in cfg.levels:
                _level(sess, n, cfg, out)
    return out


def _level(sess: Session, n: int, cfg: BenchConfig, out: Measured) -> None:
    answer_s = cfg.tokens * cfg.interval
    stagger = min(1.0, answer_s)
    group = sess.load(
        n,
        cfg.load_procs,
        prefix=f"s{n}",
        budget_s=10 + n / 100 + cfg.quiet_wait_s + cfg.warmup_s + cfg.measure_s + cfg.drain_s + 15,
        tokens=cfg.tokens,
        interval=cfg.interval,
        stagger=stagger,
    )
    go, sample, result = sess.run_window(
        group, cfg.quiet_wait_s, max(cfg.warmup_s, stagger + 0.3), cfg.measure_s, cfg.drain_s
    )
    secs = go.w1 - go.w0
    tps = result.tokens / secs
    noisy = sample.noisy
    out.put(f"{n}.tps", tps, noisy=noisy)
    out.put(
        f"{n}.kept",
        100 * tps / (result.clients * cfg.rate) if result.clients else None,
        noisy=noisy,
    )
    out.put(f"{n}.p50", stats.ms(stats.percentile(result.latencies, 50)), noisy=noisy)
    out.put(f"{n}.p99", stats.ms(stats.percentile(result.latencies, 99)), noisy=noisy)
    out.put(f"{n}.ttft99", stats.ms(stats.percentile(result.ttft, 99)), noisy=noisy)
    out.put(f"{n}.fps", result.frames / secs, noisy=noisy)
    out.put(f"{n}.cpu", sample.server_cpu_pct, noisy=noisy)
    where = f"{sess.target.name} at {n} clients"
    out.notes += [f"{where}: {problem}" for problem in stats.problems(result, n)]
    out.notes += sample.warnings(where)
