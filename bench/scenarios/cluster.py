"""Scenario H: cluster: one dari node vs three, sharing Redis (bus and replay) and PostgreSQL.

dari only. For each size: a fresh PostgreSQL database, a private ``redis-server`` started for
the run (or, with ``--redis-url``, that Redis database, flushed), and N ``dari serve``
processes with the same projects and their own ``node_id``, all pinned to the server CPU (so
three nodes share the core one node had: this measures the cost of the cluster machinery, not
scaling). Redis and PostgreSQL are not pinned. Clients are spread round-robin over the nodes
(one load worker per node) and stream unpaced answers in a loop, as in A'. Redis and
PostgreSQL CPU are read from /proc (PostgreSQL: every ``postgres`` process on the machine, so
other users of it count too). Then subscribers on another node than the producer: two nodes,
the same clients chatting on node A, and as many listeners on node B, each subscribed to one of
their conversations (every token goes to one socket on A and one on B); CPU per token received
on B, for A, B and Redis, against the one-node cost (dari plus Redis) per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import redis
from sqlalchemy.engine import make_url

from harness import probe, stats
from harness.config import BenchConfig
from harness.loadgen import LoadSpec
from harness.procs import SERVER_CPU, ServerProcess, cpu_busy_seconds, cpu_seconds, free_port
from harness.report import Measured, Metric, Table
from harness.session import LoadGroup, go_marks
from harness.targets import BENCH_AGENT, BENCH_PROJECT, DARI_LIMITS_AND_PROJECT, TARGETS

NAME = "cluster"
ONLY = ("dari",)

NODE_CONFIG = (
    """\
node_id = "{node_id}"
default_project = "{project}"
default_agent = "{agent}"

[store]
url = "{store}"

[bus]
url = "{redis}"

[replay]
url = "{redis}"

"""
    + DARI_LIMITS_AND_PROJECT
)


def table(cfg: BenchConfig) -> Table:
    metrics = []
    for k in cfg.cluster_nodes:
        label = f"{k} node{'s' if k > 1 else ''}"
        metrics += [
            Metric(f"{k}.tps", f"{label}: tokens/s", "higher"),
            Metric(f"{k}.ttft50", f"{label}: first token p50 ms", "lower", 1),
            Metric(f"{k}.ttft99", f"{label}: first token p99 ms", "lower", 1),
            Metric(f"{k}.cpu", f"{label}: dari CPU % (all nodes)", "", 0),
            Metric(f"{k}.spread", f"{label}: tokens on the busiest node, %", "", 0),
            Metric(f"{k}.redis", f"{label}: Redis CPU %", "", 0),
            Metric(f"{k}.pg", f"{label}: PostgreSQL CPU %", "", 0),
            Metric(f"{k}.us", f"{label}: dari CPU µs per token", "lower", 1),
            Metric(f"{k}.usr", f"{label}: dari + Redis CPU µs per token", "lower", 1),
        ]
    if cfg.cluster_remote:
        label = "subscribers on node B"
        metrics += [
            Metric("r.tps", f"{label}: tokens/s received on B", "higher"),
            Metric("r.a", f"{label}: node A (producer) CPU µs per token", "lower", 1),
            Metric("r.b", f"{label}: node B (subscribers) CPU µs per token", "lower", 1),
            Metric("r.redis", f"{label}: Redis CPU µs per token", "lower", 1),
            Metric("r.us", f"{label}: A + B + Redis CPU µs per token", "lower", 1),
            Metric("r.x", f"{label}: ÷ one node's dari + Redis per token", "lower", 2),
        ]
    sizes = [str(k) for k in cfg.cluster_nodes] + (["2 (remote)"] if cfg.cluster_remote else [])
    return Table(
        title=(
            f"H. Cluster: {cfg.cluster_clients} clients, unpaced {cfg.cluster_tokens}-word answers,"
            f" {' vs '.join(sizes)} nodes on one core"
        ),
        method=__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() if __doc__ else "",
        metrics=metrics,
    )


def _pg_dsn(admin_dsn: str, database: str) -> str:
    url = make_url(admin_dsn).set(drivername="postgresql+asyncpg", database=database)
    return url.render_as_string(hide_password=False)


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def _own_redis(workdir: Path) -> Iterator[str]:
    """A private ``redis-server`` on a free port (no persistence), stopped afterwards by pid."""
    port = free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=1).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _fresh_services(cfg: BenchConfig, workdir: Path) -> Iterator[tuple[str, str]]:
    """A new PostgreSQL database (dropped afterwards) and an empty Redis: (store, redis) URLs."""
    name = f"bench_cluster_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(cfg.pg_admin_dsn, f'CREATE DATABASE "{name}"'))
    try:
        if cfg.redis_url:
            client = redis.Redis.from_url(cfg.redis_url, socket_connect_timeout=2)
            try:
                client.flushdb()
                yield _pg_dsn(cfg.pg_admin_dsn, name), cfg.redis_url
            finally:
                with contextlib.suppress(Exception):
                    client.flushdb()
                client.close()
        else:
            with _own_redis(workdir) as url:
                yield _pg_dsn(cfg.pg_admin_dsn, name), url
    finally:
        asyncio.run(_admin(cfg.pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _redis_pid(url: str) -> int | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return int(client.info("server")["process_id"])
    except Exception:
        return None
    finally:
        client.close()


def _postgres_cpu() -> float:
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError, ValueError):
            if stat.read_text().strip() == "postgres":
                total += cpu_seconds(int(stat.parent.name))
    return total


def _wait_ready(port: int, timeout: float) -> None:
    """Until ``GET /readyz`` answers 200 (store and bus reachable)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"node on port {port} not ready in {timeout:g} s")
        time.sleep(0.2)


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    out = Measured()
    for k in cfg.cluster_nodes:
        try:
            _size(k, cfg, out)
        except Exception as exc:  # one size failing must not hide the other's figures
            out.notes.append(f"dari, {k} nodes: run failed: {type(exc).__name__}: {exc}")
    if cfg.cluster_remote:
        try:
            _size(2, cfg, out, remote=True)
        except Exception as exc:
            failed = f"{type(exc).__name__}: {exc}"
            out.notes.append(f"dari, subscribers on node B: run failed: {failed}")
    return out


def _size(k: int, cfg: BenchConfig, out: Measured, *, remote: bool = False) -> None:
    env = {**os.environ, **TARGETS["dari"].env}
    env = {key: value for key, value in env.items() if not key.startswith("DARI_")}
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    nodes: list[ServerProcess] = []
    n = cfg.cluster_clients
    try:
        with _fresh_services(cfg, workdir) as (store, redis_url):
            for i in range(k):
                port = free_port()
                config = workdir / f"node-{i}.toml"
                config.write_text(
                    NODE_CONFIG.format(
                        node_id=f"bench-{i}",
                        project=BENCH_PROJECT,
                        agent=BENCH_AGENT,
                        store=store,
                        redis=redis_url,
                        delay_ms=0,
                        gather_ms=0,
                    )
                )
                argv = [*TARGETS["dari"].argv(port, 0, workdir)[:-1], str(config)]
                node = ServerProcess(
                    f"dari-{i}", argv, port, workdir, workdir / f"node-{i}.log", env=env
                )
                node.start(ready_timeout=60)
                nodes.append(node)
            for node in nodes:
                _wait_ready(node.port, 60.0)
            for i, node in enumerate(nodes):
                url = f"ws://127.0.0.1:{node.port}/ws/chat/probe-{i}"
                probe.check(url, TARGETS["dari"], timeout=30.0)
            try:
                if remote:
                    _load_remote(n, nodes, redis_url, cfg, out)
                else:
                    _load(k, n, nodes, redis_url, cfg, out)
            finally:
                for node in nodes:  # before Redis and the database go away
                    node.stop(10.0, signal.SIGTERM)
    except Exception:
        for node in nodes:
            tail = node.log_tail(10)
            if tail:
                print(f"--- {node.name} log ---\n{tail}")
        raise
    finally:
        for node in nodes:
            node.stop(10.0, signal.SIGTERM)
        if cfg.keep_logs is not None:
            cfg.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                name = f"cluster{'-remote' if remote else k}-{log.name}"
                shutil.copy(log, cfg.keep_logs / name)
        shutil.rmtree(workdir, ignore_errors=True)


def _load(
    k: int, n: int, nodes: list[ServerProcess], redis_url: str, cfg: BenchConfig, out: Measured
) -> None:
    budget = 40 + n / 50 + cfg.quiet_wait_s + cfg.burst_warmup_s + cfg.cluster_measure_s
    ids = [f"cl{k}-{i}" for i in range(n)]
    specs = [
        LoadSpec(
            url=f"ws://127.0.0.1:{node.port}/ws/chat/",
            client_ids=ids[i::k],
            dari=True,
            project_id=BENCH_PROJECT,
            agent_name=BENCH_AGENT,
            tokens=cfg.cluster_tokens,
            interval=0.0,
            stagger=0.2,
            deadline=time.monotonic() + budget + cfg.drain_s + 10,
        )
        for i, node in enumerate(nodes)
    ]
    group = LoadGroup(specs)
    redis_pid = _redis_pid(redis_url)
    try:
        group.wait_ready()
        go = go_marks(0.2, cfg.burst_warmup_s, cfg.cluster_measure_s, cfg.drain_s + 5)
        group.send("go", go)
        time.sleep(max(0.0, go.w0 - time.monotonic()))
        cpu0 = [node.cpu_seconds() for node in nodes]
        redis0 = cpu_seconds(redis_pid) if redis_pid else 0.0
        pg0 = _postgres_cpu()
        core0 = cpu_busy_seconds().get(SERVER_CPU, 0.0)
        time.sleep(max(0.0, go.w1 - time.monotonic()))
        cpu1 = [node.cpu_seconds() for node in nodes]
        redis1 = cpu_seconds(redis_pid) if redis_pid else 0.0
        pg1 = _postgres_cpu()
        core1 = cpu_busy_seconds().get(SERVER_CPU, 0.0)
        results = group.results()
    finally:
        group.close()
    secs = go.w1 - go.w0
    result = stats.merge(results)
    dari_cpu = sum(cpu1) - sum(cpu0)
    per_node = [r.tokens for r in results]
    # Redis and PostgreSQL are not pinned: what they ran on the server core is theirs, not noise.
    noisy = (core1 - core0 - dari_cpu) / secs > 0.1 + (redis1 - redis0 + pg1 - pg0) / secs
    out.put(f"{k}.tps", result.tokens / secs, noisy=noisy)
    out.put(f"{k}.ttft50", stats.ms(stats.percentile(result.ttft, 50)), noisy=noisy)
    out.put(f"{k}.ttft99", stats.ms(stats.percentile(result.ttft, 99)), noisy=noisy)
    out.put(f"{k}.cpu", 100 * dari_cpu / secs, noisy=noisy)
    out.put(f"{k}.spread", 100 * max(per_node) / result.tokens if result.tokens else None)
    out.put(f"{k}.redis", 100 * (redis1 - redis0) / secs if redis_pid else None)
    out.put(f"{k}.pg", 100 * (pg1 - pg0) / secs)
    out.put(f"{k}.us", 1e6 * dari_cpu / result.tokens if result.tokens else None, noisy=noisy)
    with_redis = dari_cpu + (redis1 - redis0 if redis_pid else 0.0)
    out.put(f"{k}.usr", 1e6 * with_redis / result.tokens if result.tokens else None, noisy=noisy)
    where = f"dari, {k} node{'s' if k > 1 else ''}"
    out.notes += [f"{where}: {p}" for p in stats.problems(result, n) if "unfinished" not in p]
    if k > 1:
        shares = ", ".join(
            f"node {i}: {t:,} tokens, {100 * (c1 - c0) / secs:.0f}% CPU"
            for i, (t, c0, c1) in enumerate(zip(per_node, cpu0, cpu1, strict=True))
        )
        out.notes.append(f"{where}: {shares}")


def _load_remote(
    n: int, nodes: list[ServerProcess], redis_url: str, cfg: BenchConfig, out: Measured
) -> None:
    """``n`` clients chat on node A; ``n`` listeners on node B follow their conversations."""
    a, b = nodes
    budget = 40 + n / 50 + cfg.quiet_wait_s + cfg.burst_warmup_s + cfg.cluster_measure_s
    deadline = time.monotonic() + budget + cfg.drain_s + 10
    askers = [f"cr-{i}" for i in range(n)]
    listeners = {f"crl-{i}": asker for i, asker in enumerate(askers)}
    a_url, b_url = (f"ws://127.0.0.1:{node.port}/ws/chat/" for node in nodes)
    common: dict[str, Any] = {
        "dari": True,
        "project_id": BENCH_PROJECT,
        "agent_name": BENCH_AGENT,
        "tokens": cfg.cluster_tokens,
        "interval": 0.0,
        "deadline": deadline,
    }
    group = LoadGroup(
        [
            LoadSpec(url=a_url, client_ids=askers, stagger=0.2, **common),
            LoadSpec(url=b_url, client_ids=list(listeners), listen=listeners, **common),
        ]
    )
    redis_pid = _redis_pid(redis_url)
    try:
        group.wait_ready()
        go = go_marks(0.2, cfg.burst_warmup_s, cfg.cluster_measure_s, cfg.drain_s + 5)
        group.send("go", go)
        time.sleep(max(0.0, go.w0 - time.monotonic()))
        a0, b0 = a.cpu_seconds(), b.cpu_seconds()
        redis0 = cpu_seconds(redis_pid) if redis_pid else 0.0
        core0 = cpu_busy_seconds().get(SERVER_CPU, 0.0)
        time.sleep(max(0.0, go.w1 - time.monotonic()))
        a1, b1 = a.cpu_seconds(), b.cpu_seconds()
        redis1 = cpu_seconds(redis_pid) if redis_pid else 0.0
        core1 = cpu_busy_seconds().get(SERVER_CPU, 0.0)
        asked, heard = group.results()
    finally:
        group.close()
    secs = go.w1 - go.w0
    dari_cpu = a1 - a0 + b1 - b0
    redis_cpu = redis1 - redis0 if redis_pid else 0.0
    noisy = (core1 - core0 - dari_cpu) / secs > 0.1 + redis_cpu / secs
    tokens = heard.tokens

    def per_token(seconds: float) -> float | None:
        return 1e6 * seconds / tokens if tokens else None

    total = per_token(dari_cpu + redis_cpu)
    single = out.values.get("1.usr")
    out.put("r.tps", tokens / secs, noisy=noisy)
    out.put("r.a", per_token(a1 - a0), noisy=noisy)
    out.put("r.b", per_token(b1 - b0), noisy=noisy)
    out.put("r.redis", per_token(redis_cpu) if redis_pid else None)
    out.put("r.us", total, noisy=noisy)
    out.put("r.x", total / single if total is not None and single else None, noisy=noisy)
    where = "dari, subscribers on node B"
    for side, result in (("askers on A", asked), ("listeners on B", heard)):
        problems = stats.problems(result, n)
        out.notes += [f"{where}, {side}: {p}" for p in problems if "unfinished" not in p]
    out.notes.append(
        f"{where}: A {100 * (a1 - a0) / secs:.0f}% CPU, {asked.tokens:,} tokens to its own "
        f"sockets; B {100 * (b1 - b0) / secs:.0f}% CPU, {tokens:,} tokens; Redis "
        f"{100 * redis_cpu / secs:.0f}% CPU"
    )
