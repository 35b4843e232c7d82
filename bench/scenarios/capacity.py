"""Scenario C: capacity: how many concurrent paced answers a server holds within 100 ms.

Every client chats in a loop at the agent's pace (50 tokens/s by default); the ramp steps
through growing client counts on one server, a fresh load per step, and stops at the first step
that fails: token latency p99 above the limit, fewer tokens delivered than 95 % of offered,
or any client that failed to connect or saw an error. The figure is the last step that held.
"""

from __future__ import annotations

from harness import stats
from harness.config import BenchConfig
from harness.report import Measured, Metric, Table
from harness.session import Session, session
from harness.targets import TARGETS, Target, dari_argv

NAME = "capacity"
# dari again with its agent's stream_gather_ms: each socket holds an answer's pieces this long
# so that those arriving meanwhile go out as one frame (2 tokens a frame at 50 tokens/s).
GATHER_MS = 40.0


def table(cfg: BenchConfig) -> Table:
    steps = ", ".join(f"{n:,}" for n in cfg.capacity_levels)
    return Table(
        title=(
            f"C. Capacity: concurrent answers at {cfg.rate:g} tokens/s with token latency p99 ≤ "
            f"{cfg.capacity_p99_ms:g} ms"
        ),
        method=(
            f"Ramp over {steps} clients (one server, a fresh load per step), "
            f"{cfg.capacity_tokens}-word answers in a loop, each step measured over "
            f"{cfg.capacity_measure_s:g} s after {cfg.capacity_warmup_s:g} s of warm-up. A step "
            f"holds when token latency p99 ≤ {cfg.capacity_p99_ms:g} ms, at least "
            f"{cfg.capacity_kept_pct:g} % of the offered tokens arrive and no client failed or "
            "saw an error; the ramp stops at the first step that does not hold. Token latency as "
            "in A. `≥` in a note: the largest step held, the ceiling is higher."
        ),
        metrics=[
            Metric("held", "concurrent answers held (last step that held)", "higher"),
            Metric("held.tps", "at that step: tokens/s", "higher"),
            Metric("held.p99", "at that step: token latency p99 ms", "lower", 1),
            Metric("held.cpu", "at that step: server CPU %", "", 0),
            Metric("failed", "first step that failed", ""),
            Metric("failed.p99", "at that step: token latency p99 ms", "", 1),
            Metric("failed.kept", "at that step: % of offered tokens", "", 1),
            Metric(
                "g.held",
                f"dari, stream_gather_ms = {GATHER_MS:g}: answers held",
                "higher",
                versus="held",
            ),
            Metric("g.held.p99", "at that step: token latency p99 ms", "", 1),
            Metric("g.held.cpu", "at that step: server CPU %", "", 0),
            Metric("g.failed", "first step that failed", ""),
        ],
    )


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    target = TARGETS[target_name]
    out = Measured()
    with session(target, cfg, delay_ms=cfg.interval * 1000, run_id="c") as sess:
        ramp(sess, cfg, out, cfg.capacity_levels, cfg.capacity_tokens)
    if target_name == "dari":
        gathering = Target(
            "dari-gather",
            lambda port, delay_ms, workdir: dari_argv(port, delay_ms, workdir, GATHER_MS),
            dialect="dari",
            env=target.env,
        )
        with session(gathering, cfg, delay_ms=cfg.interval * 1000, run_id="g") as sess:
            ramp(sess, cfg, out, cfg.capacity_levels, cfg.capacity_tokens, prefix="g.")
    return out


def ramp(
    sess: Session,
    cfg: BenchConfig,
    out: Measured,
    levels: tuple[int, ...],
    tokens: int,
    prefix: str = "",
) -> None:
    """Step through ``levels`` clients on ``sess`` until one does not hold; put the figures in
    ``out`` under ``<prefix>held``, ``<prefix>failed``, ... (the relay scenario reuses it)."""
    target_name = sess.target.name
    held: dict[str, float | None] | None = None
    for n in levels:
        step, noisy, problems = _step(sess, n, cfg, tokens)
        p99 = step["p99"]
        ok = (
            not problems
            and p99 is not None
            and p99 <= cfg.capacity_p99_ms
            and (step["kept"] or 0) >= cfg.capacity_kept_pct
        )
        flag = "*" if noisy else ""
        if not ok and (step["load"] or 0) > 80:
            problems.append(f"load generator at {step['load']:.0f}% CPU: may be its limit")
        out.notes.append(
            f"{target_name} at {n:,}: p99 {_f(p99)} ms, {_f(step['kept'])} % of offered, "
            f"server CPU {_f(step['cpu'], 0)} %{flag}, load generator {_f(step['load'], 0)} %: "
            + ("held" if ok else "failed")
            + (f" ({'; '.join(problems)})" if problems else "")
        )
        if not ok:
            out.put(f"{prefix}failed", n)
            out.put(f"{prefix}failed.p99", p99, noisy=noisy)
            out.put(f"{prefix}failed.kept", step["kept"], noisy=noisy)
            break
        held = step
        out.put(f"{prefix}held", n, noisy=noisy)
        out.put(f"{prefix}held.tps", step["tps"], noisy=noisy)
        out.put(f"{prefix}held.p99", p99, noisy=noisy)
        out.put(f"{prefix}held.cpu", step["cpu"], noisy=noisy)
    else:
        out.notes.append(f"{target_name}: ≥ {levels[-1]:,} (every step held)")
    if held is None:
        out.put(f"{prefix}held", 0)


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _step(
    sess: Session, n: int, cfg: BenchConfig, tokens: int
) -> tuple[dict[str, float | None], bool, list[str]]:
    answer_s = tokens * cfg.interval
    stagger = min(1.0, answer_s)
    warmup = max(cfg.capacity_warmup_s, stagger + 0.3)
    group = sess.load(
        n,
        max(cfg.load_procs, 2 if n > 1500 else 1),
        prefix=f"c{n}",
        budget_s=20 + n / 50 + cfg.quiet_wait_s + warmup + cfg.capacity_measure_s + cfg.drain_s,
        tokens=tokens,
        interval=cfg.interval,
        stagger=stagger,
    )
    go, sample, result = sess.run_window(
        group, cfg.quiet_wait_s, warmup, cfg.capacity_measure_s, cfg.drain_s
    )
    secs = go.w1 - go.w0
    tps = result.tokens / secs
    problems = [
        p for p in stats.problems(result, n) if "unfinished" not in p
    ]  # answers cut by the hard stop after the window do not make the window fail
    values = {
        "tps": tps,
        "kept": 100 * tps / (n * cfg.rate),
        "p99": stats.ms(stats.percentile(result.latencies, 99)),
        "cpu": sample.server_cpu_pct,
        "load": sample.load_cpu_pct,
    }
    return values, sample.noisy, problems
