"""Scenario R: relaying a real model's stream (an OpenAI-compatible upstream).

An OpenAI-compatible server (``baselines/openai_upstream.py``) runs in its own process on the
load core, as the model would run on another machine: it answers each request with the user's
words, one ``chat.completion.chunk`` per word, paced at the agent rate on an absolute schedule.
dari relays it with its ``openai`` backend; the baseline is a hand-rolled FastAPI endpoint that
uses the official ``openai`` client and sends one frame per chunk (``baselines/relay_fastapi.py``).
Both face the same upstream, load and checks (every answer's text must equal the message). In
dari's column the LangGraph path is measured the same way: a graph of one node calling
LangChain's ``ChatOpenAI`` on the same upstream (``harness/relay_graph.py``), relayed by dari's
``langgraph`` backend.

Measured for each: at a fixed number of clients, the server's CPU per relayed token (the
figure the relay's own parsing decides), tokens/s and token latency; then the capacity ramp of
scenario C with the relay's answers.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from harness import stats
from harness.config import BenchConfig
from harness.procs import LOAD_CPU, ServerProcess, free_port
from harness.report import Measured, Metric, Table
from harness.session import Session, session
from harness.targets import BASELINES, BENCH_PROJECT, DARI_LIMITS, TARGETS, Target
from scenarios import capacity

NAME = "relay"
# fastapi: the hand-rolled FastAPI + openai relay in this scenario; picows: the bare relay
# (picows + aiohttp, no application), the floor under any relay on this stack.
ONLY = ("dari", "fastapi", "picows")
RELAY_AGENT = "relay"

# dari's defaults, with the abuse limits raised as in the other scenarios; history off, because
# the baseline sends only the new message (the same request to the same upstream).
_DARI_RELAY_CONFIG = (
    """\
default_project = "{project}"
default_agent = "{agent}"

[store]
url = "sqlite+aiosqlite:///{workdir}/bench.db"

"""
    + DARI_LIMITS
    + """
[[projects]]
id = "{project}"
name = "Relay benchmark"

[[projects.agents]]
name = "{agent}"
backend = "openai"
history_limit = 0
can_delegate = false
options = {{ base_url = "{upstream}", model = "bench", timeout_s = 60 }}

[[projects.agents]]
name = "{graph_agent}"
backend = "langgraph"
history_limit = 0
can_delegate = false
options = {{ entrypoint = "harness.relay_graph:build" }}
"""
)
GRAPH_AGENT = "relay-graph"


def table(cfg: BenchConfig) -> Table:
    n = cfg.relay_clients
    steps = ", ".join(f"{level:,}" for level in cfg.relay_levels)
    return Table(
        title=(
            f"R. Relaying an OpenAI-compatible model at {cfg.rate:g} chunks/s, "
            f"{cfg.relay_tokens}-word answers (fastapi: FastAPI + the official openai client; "
            "picows: a bare relay, the floor)"
        ),
        method=(
            "The upstream runs in its own process on the load core and streams one "
            "`chat.completion.chunk` per word, paced on an absolute schedule; dari relays it with "
            "its `openai` backend, the baseline is a FastAPI endpoint that iterates the official "
            "client's stream and sends one frame per chunk. The floor (`baselines/relay_bare.py`) "
            "is a bare picows server that reads the upstream with aiohttp, parses each `data:` "
            "line with orjson and sends one frame per chunk, with nothing else (measured at the "
            "fixed level only). All ask for usage, send only the new message (dari's history is "
            f"off for this agent) and are checked word for word. At {n} "
            f"clients: measured over {cfg.measure_s:g} s after warm-up; CPU per token = server "
            "CPU time ÷ tokens relayed in the window. Capacity: the ramp of C over "
            f"{steps} clients with these answers (p99 ≤ {cfg.capacity_p99_ms:g} ms, ≥ "
            f"{cfg.capacity_kept_pct:g} % of offered tokens)."
        ),
        metrics=[
            Metric("us_per_token", f"{n} clients: server CPU µs per relayed token", "lower", 1),
            Metric("tps", f"{n} clients: tokens/s", "higher"),
            Metric("p50", f"{n} clients: token latency p50 ms", "lower", 1),
            Metric("p99", f"{n} clients: token latency p99 ms", "lower", 1),
            Metric("ttft99", f"{n} clients: first token p99 ms", "lower", 1),
            Metric("cpu", f"{n} clients: server CPU %", "lower", 0),
            Metric("cap.held", "capacity: concurrent answers held", "higher"),
            Metric("cap.held.p99", "capacity: token latency p99 ms at that step", "lower", 1),
            Metric("cap.held.cpu", "capacity: server CPU % at that step", "", 0),
            Metric("cap.failed", "capacity: first step that failed", ""),
            Metric(
                "lg.us_per_token", f"LangGraph, {n} clients: server CPU µs per token", "lower", 1
            ),
            Metric("lg.tps", f"LangGraph, {n} clients: tokens/s", "higher"),
            Metric("lg.p50", f"LangGraph, {n} clients: token latency p50 ms", "lower", 1),
            Metric("lg.p99", f"LangGraph, {n} clients: token latency p99 ms", "lower", 1),
            Metric("lg.ttft99", f"LangGraph, {n} clients: first token p99 ms", "lower", 1),
            Metric("lg.cpu", f"LangGraph, {n} clients: server CPU %", "lower", 0),
            Metric("lg.cap.held", "LangGraph capacity: concurrent answers held", "higher"),
            Metric("lg.cap.held.p99", "LangGraph capacity: token latency p99 ms there", "lower", 1),
            Metric("lg.cap.failed", "LangGraph capacity: first step that failed", ""),
        ],
    )


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    out = Measured()
    with upstream(cfg) as (base_url, model_server):
        target = _target(target_name, base_url)
        delay_ms = cfg.interval * 1000
        with session(target, cfg, delay_ms=delay_ms, run_id="r") as sess:
            _fixed(sess, cfg, out, model_server)
            if target_name != "picows":  # the floor: its CPU per token is what it is for
                capacity.ramp(sess, cfg, out, cfg.relay_levels, cfg.relay_tokens, prefix="cap.")
        if target_name == "dari":
            graph = _graph_target(base_url)
            with session(graph, cfg, delay_ms=delay_ms, run_id="g") as sess:
                _fixed(sess, cfg, out, model_server, prefix="lg.")
                capacity.ramp(sess, cfg, out, cfg.relay_levels, cfg.relay_tokens, prefix="lg.cap.")
    return out


@contextmanager
def upstream(cfg: BenchConfig) -> Iterator[tuple[str, ServerProcess]]:
    """The model server, in its own process on the load core; yields its /v1 URL and process."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-upstream-") as tmp:
        workdir = Path(tmp)
        proc = ServerProcess(
            name="upstream",
            argv=[
                sys.executable,
                str(BASELINES / "openai_upstream.py"),
                "--port",
                str(port),
                "--interval-ms",
                str(cfg.interval * 1000),
            ],
            port=port,
            cwd=workdir,
            log_path=workdir / "upstream.log",
            env=dict(os.environ),
            cpu=LOAD_CPU,
        )
        proc.start()
        try:
            yield f"http://127.0.0.1:{port}/v1", proc
        finally:
            proc.stop()


def _target(name: str, base_url: str) -> Target:
    if name == "dari":

        def dari_argv(port: int, delay_ms: float, workdir: Path) -> list[str]:
            config = workdir / "dari-relay.toml"
            config.write_text(
                _DARI_RELAY_CONFIG.format(
                    project=BENCH_PROJECT,
                    agent=RELAY_AGENT,
                    graph_agent=GRAPH_AGENT,
                    workdir=workdir,
                    upstream=base_url,
                )
            )
            return [
                sys.executable,
                *("-m", "dari.cli", "serve", "--host", "127.0.0.1", "--port", str(port)),
                *("--config", str(config)),
            ]

        # The graph agent (harness/relay_graph.py) finds the upstream in the environment.
        env = {**TARGETS["dari"].env, "BENCH_UPSTREAM_URL": base_url}
        return Target("dari", dari_argv, dialect="dari", agent_name=RELAY_AGENT, env=env)

    script = "relay_bare.py" if name == "picows" else "relay_fastapi.py"

    def relay_argv(port: int, delay_ms: float, workdir: Path) -> list[str]:
        return [
            sys.executable,
            str(BASELINES / script),
            *("--host", "127.0.0.1", "--port", str(port), "--upstream", base_url),
        ]

    return Target(name, relay_argv)


def _graph_target(base_url: str) -> Target:
    """dari serving the LangGraph relay (the same server config, its other agent)."""
    return replace(_target("dari", base_url), name="dari-langgraph", agent_name=GRAPH_AGENT)


def _fixed(
    sess: Session, cfg: BenchConfig, out: Measured, model_server: ServerProcess, prefix: str = ""
) -> None:
    n = cfg.relay_clients
    stagger = min(1.0, cfg.relay_tokens * cfg.interval)
    group = sess.load(
        n,
        cfg.load_procs,
        prefix=f"r{n}",
        budget_s=40 + n / 50 + cfg.quiet_wait_s + cfg.warmup_s + cfg.measure_s + cfg.drain_s,
        tokens=cfg.relay_tokens,
        interval=cfg.interval,
        stagger=stagger,
    )
    model_cpu, began = model_server.cpu_seconds(), time.monotonic()
    # Answers running when the window closes may finish (one answer's time, and some), so the
    # text of every answer of the run is checked.
    drain = max(cfg.drain_s, cfg.relay_tokens * cfg.interval + 2)
    go, sample, result = sess.run_window(
        group, cfg.quiet_wait_s, max(cfg.warmup_s, stagger + 0.3), cfg.measure_s, drain
    )
    model_pct = 100 * (model_server.cpu_seconds() - model_cpu) / (time.monotonic() - began)
    secs = go.w1 - go.w0
    noisy = sample.noisy
    out.put(
        f"{prefix}us_per_token",
        1e6 * sample.server_cpu_s / result.tokens if result.tokens else None,
        noisy=noisy,
    )
    out.put(f"{prefix}tps", result.tokens / secs, noisy=noisy)
    out.put(f"{prefix}p50", stats.ms(stats.percentile(result.latencies, 50)), noisy=noisy)
    out.put(f"{prefix}p99", stats.ms(stats.percentile(result.latencies, 99)), noisy=noisy)
    out.put(f"{prefix}ttft99", stats.ms(stats.percentile(result.ttft, 99)), noisy=noisy)
    out.put(f"{prefix}cpu", sample.server_cpu_pct, noisy=noisy)
    where = f"{sess.target.name} at {n} clients"
    out.notes.append(
        f"{where}: {result.answers} answers ended in the window; every answer of the run was "
        f"checked, {result.mismatches} differed from the message; upstream CPU {model_pct:.0f} % "
        f"(load core), load generator {sample.load_cpu_pct:.0f} %"
    )
    out.notes += [f"{where}: {problem}" for problem in stats.problems(result, n)]
    out.notes += sample.warnings(where)
