"""Scenario A: paced streaming at 1, 100 and 1,000 concurrent clients.

Every client chats in a loop; the agent yields one word every 1/rate seconds on an absolute
schedule, pausing before each word. A word's latency is its arrival minus its expected emit time,
taken as the arrival of the answer's ``start`` frame plus k x interval for the k-th word (k from
1). Tokens are counted by text.
"""

from __future__ import annotations

from harness import stats
from harness.config import BenchConfig
from harness.report import Metric, Table
from harness.session import go_marks, session
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


def measure(target_name: str, cfg: BenchConfig) -> tuple[dict[str, float | None], list[str]]:
    target = TARGETS[target_name]
    values: dict[str, float | None] = {}
    notes: list[str] = []
    answer_s = cfg.tokens * cfg.interval
    stagger = min(1.0, answer_s)
    for n in cfg.levels:
        with session(target, cfg, delay_ms=cfg.interval * 1000, run_id=f"s{n}") as sess:
            connect_budget = 10 + n / 100
            budget = connect_budget + cfg.warmup_s + cfg.measure_s + 2 * answer_s + 15
            group = sess.load(
                n,
                cfg.load_procs,
                budget_s=budget,
                tokens=cfg.tokens,
                interval=cfg.interval,
                stagger=stagger,
            )
            try:
                group.wait_ready()
                go = go_marks(
                    0.2, max(cfg.warmup_s, stagger + 0.3), cfg.measure_s, answer_s * 2 + 5
                )
                group.send("go", go)
                sample = sess.measure(group, go.w0, go.w1)
                result = stats.merge(group.results())
            finally:
                group.close()
        secs = go.w1 - go.w0
        tps = result.tokens / secs
        values[f"{n}.tps"] = tps
        values[f"{n}.kept"] = 100 * tps / (result.clients * cfg.rate) if result.clients else None
        values[f"{n}.p50"] = stats.ms(stats.percentile(result.latencies, 50))
        values[f"{n}.p99"] = stats.ms(stats.percentile(result.latencies, 99))
        values[f"{n}.ttft99"] = stats.ms(stats.percentile(result.ttft, 99))
        values[f"{n}.fps"] = result.frames / secs
        values[f"{n}.cpu"] = sample.server_cpu_pct
        for problem in stats.problems(result, n):
            notes.append(f"{target_name} at {n} clients: {problem}")
        notes += sample.warnings(f"{target_name} at {n} clients")
    return values, notes
