"""The chaos run on three nodes: hopping clients, kill -9, a Redis restart, a stalled database.

    .venv/bin/python bench/chaos_cluster.py --clients 160 --answers 3

Three ``dari serve`` processes share a redis-server of the run's own (append-only file on, as a
deployment that wants queued chats to survive a Redis restart runs it) and a fresh PostgreSQL
database. Clients (the Python client, which resumes by itself) connect through a balancer
without sticky sessions, so every reconnection lands on another node, and the balancer cuts
their connections at random moments. While they chat:

- PostgreSQL stalls (the messages table locked for longer than a lease);
- one node is killed with SIGKILL (its answers are ended by another node's reaper);
- Redis is restarted (same data, from its append-only file).

It prints the figures and exits non-zero unless every answer ended at its client with no
client action beyond the client library's own reconnects, every answer's text at the client
equals the text saved in the database, every client's seq stream has no gap or duplicate,
and each conversation's history order equals the order its answers ran in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos import _sequence_ok  # noqa: E402
from tests.cluster.nodes import START_TIMEOUT_S, Node, config_text, free_port  # noqa: E402
from tests.cluster.services import fresh_pg_database, pg_url  # noqa: E402
from tests.support.proxy import CUT_KINDS, ChaosProxy  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.waiting import eventually  # noqa: E402

from dari.client import DariClient  # noqa: E402

STALL_S = 4.0


async def _start_node(name: str, tmp: Path, database: str, redis_url: str, delay_ms: int) -> Node:
    port = free_port()
    config = tmp / f"{name}.toml"
    text = config_text(name, port, pg_url(database), redis_url, delay_ms)
    # Hundreds of clients share one anonymous user here: lift the per-user limits.
    text += "[limits]\nrate_per_s = 10000\nrate_burst = 10000\nmax_connections_per_user = 100000\n"
    config.write_text(text)
    log = tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARI_")}
    env["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dari.cli", "serve", "--config", str(config),
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    node = Node(name, port, process, log, database, redis_url)
    await eventually(node.ready, timeout=START_TIMEOUT_S)
    return node


async def _stall(database: str, seconds: float) -> None:
    conn = await asyncpg.connect(pg_url(database, "postgresql"), timeout=5)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
            await asyncio.sleep(seconds)  # the fault itself: a database that does not answer
    finally:
        await conn.close()


async def run(clients: int, answers: int, words: int, seed: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="dari-chaos-cluster-"))
    rng = random.Random(seed)
    redis = RedisServer(tmp / "redis", append_only=True)
    await redis.start()
    try:
        async with fresh_pg_database("dari_chaos_cluster") as database:
            nodes = [await _start_node(f"node-{x}", tmp, database, redis.url, 6) for x in "abc"]
            try:
                return await _workload(nodes, redis, database, clients, answers, words, rng)
            finally:
                for node in nodes:
                    await node.stop()
    finally:
        await redis.stop()


async def _workload(
    nodes: list[Node],
    redis: RedisServer,
    database: str,
    clients: int,
    answers: int,
    words: int,
    rng: random.Random,
) -> dict[str, Any]:
    proxy = ChaosProxy(*(node.port for node in nodes))
    await proxy.start()
    results: list[tuple[str, str, str, str | None]] = []  # client, request, text, finish
    started_order: dict[str, list[str]] = {}
    bad_sequences = 0
    done_clients = 0
    faults: list[str] = []
    stuck: list[tuple[str, str]] = []
    refused: list[tuple[str, str, Any]] = []  # client, request, error code
    answer_timeout_s = 120.0
    total = clients * answers

    async def cut_forever(client_id: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.2, 0.8))  # the random moment is the input
            proxy.cut(client_id, rng.choice(CUT_KINDS))

    async def one(index: int) -> None:
        nonlocal bad_sequences, done_clients
        client_id = f"hop-{index}"
        client = DariClient(
            f"ws://127.0.0.1:{proxy.port}", client_id, backoff_initial=0.05, backoff_max=0.5
        )
        frames: list[dict[str, Any]] = []

        async def consume() -> None:
            async for frame in client.frames():
                frames.append(frame)

        stop = asyncio.Event()
        async with client:
            consumer = asyncio.create_task(consume())
            cutter = asyncio.create_task(cut_forever(client_id, stop))
            for n in range(answers):
                text = " ".join(f"h{index}a{n}w{i}" for i in range(words))
                request_id = await client.chat(
                    text, agent_name="slow", project_id="p1", thread_id=client_id
                )
                try:
                    answer = await client.answer(request_id, timeout=answer_timeout_s)
                except TimeoutError:
                    stuck.append((client_id, request_id))
                    results.append((client_id, request_id, "", None))
                    continue
                if answer.finish_reason == "error" and not any(
                    f.get("type") == "start" and f.get("request_id") == request_id for f in frames
                ):
                    # Refused before it started (shared state away): checked below that
                    # nothing of it was stored.
                    refused.append((client_id, request_id, (answer.error or {}).get("code")))
                results.append((client_id, request_id, answer.text, answer.finish_reason))
            stop.set()
            await cutter
            consumer.cancel()
        started_order[client_id] = [f["request_id"] for f in frames if f["type"] == "start"]
        bad_sequences += not _sequence_ok(frames)
        done_clients += 1

    async def faults_meanwhile() -> None:
        async def when(fraction: float) -> None:
            await eventually(lambda: len(results) >= fraction * total, timeout=600)

        await when(0.2)
        faults.append(f"stall PostgreSQL {STALL_S:.0f} s at {len(results)}/{total}")
        await _stall(database, STALL_S)
        await when(0.4)
        faults.append(f"kill -9 {nodes[2].name} at {len(results)}/{total}")
        await nodes[2].kill()
        proxy.target_ports.remove(nodes[2].port)  # the balancer's health check drops it
        await when(0.6)
        faults.append(f"restart Redis at {len(results)}/{total}")
        await redis.stop()
        await redis.start()

    started = time.perf_counter()
    chaos = asyncio.create_task(faults_meanwhile())
    await asyncio.gather(*(one(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    chaos.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await chaos
    await proxy.stop()

    conn = await asyncpg.connect(pg_url(database, "postgresql"), timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT c.thread_id, m.role, m.request_id, m.content, m.status FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id ORDER BY m.id"
        )
    finally:
        await conn.close()
    saved = {
        (r["thread_id"], r["request_id"]): r["content"] for r in rows if r["role"] == "assistant"
    }
    asked: dict[str, list[str]] = {}
    ran: dict[str, list[str]] = {}
    for r in rows:
        target = asked if r["role"] == "user" else ran
        target.setdefault(r["thread_id"], []).append(r["request_id"])
    stored = {(r["thread_id"], r["request_id"]) for r in rows}
    # A chat refused while shared state was away is not stored at all: no answer to compare.
    refused_clean = {(c, rid) for c, rid, _code in refused if (c, rid) not in stored}
    differing = [
        (c, rid, text, f)
        for c, rid, text, f in results
        if saved.get((c, rid)) != text and (c, rid) not in refused_clean
    ]
    mismatches = len(differing)
    for c, rid, text, finish in differing[:4]:
        db = saved.get((c, rid)) or ""
        pairs = enumerate(zip(text, db, strict=False))
        common = next((i for i, (x, y) in pairs if x != y), min(len(text), len(db)))
        print(
            f"  differs: {c} {rid} finish={finish} client={len(text)} db={len(db)} "
            f"common={common} client_tail={text[common : common + 40]!r} "
            f"db_tail={db[common : common + 40]!r}"
        )
    unfinished = sum(finish is None for *_, finish in results)
    # Run order as clients saw each answer start (first start of each request).
    # An answer that failed before its start could be logged (Redis away) is saved, failed,
    # but never seen starting: history order is compared over the answers that started.
    order_mismatches = 0
    for client_id, starts in started_order.items():
        first_starts = list(dict.fromkeys(starts))
        seen = set(first_starts)
        for listed in (asked.get(client_id, []), ran.get(client_id, [])):
            order_mismatches += [r for r in listed if r in seen] != first_starts
    finishes: dict[str, int] = {}
    for *_, finish in results:
        finishes[str(finish)] = finishes.get(str(finish), 0) + 1
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"answers: {len(results)} over {clients} hopping clients on 3 nodes, in {elapsed:.1f} s")
    print(f"connections through the balancer: {proxy.accepted}, cuts: {proxy.cuts}")
    print("faults: " + "; ".join(faults))
    print(f"finish reasons: {finishes}")
    codes = sorted({str(code) for *_, code in refused})
    print(f"chats refused before they started, nothing stored: {len(refused_clean)} {codes}")
    print(f"answers with no end at the client within {answer_timeout_s:.0f} s: {unfinished}")
    if stuck:
        print(f"  first: {stuck[:3]}")
        await _explain(redis, database, stuck[:3])
        for node in nodes:  # each live node logs what its tasks wait on (see dari/supervise)
            if node.process.returncode is None:
                node.process.send_signal(signal.SIGUSR1)
        print(f"  the nodes' logs, with their tasks: {nodes[0].log.parent}")
    print(f"text differing from the database: {mismatches}")
    print(f"clients with a seq gap or duplicate: {bad_sequences}")
    print(f"conversations whose history order differs from run order: {order_mismatches}")
    return {
        "answers": len(results),
        "clients": clients,
        "seconds": elapsed,
        "connections": proxy.accepted,
        "cuts": proxy.cuts,
        "faults": faults,
        "finishes": finishes,
        "unfinished": unfinished,
        "refused": len(refused_clean),
        "mismatches": mismatches,
        "bad_sequences": bad_sequences,
        "order_mismatches": order_mismatches,
    }


async def _explain(redis: RedisServer, database: str, stuck: list[tuple[str, str]]) -> None:
    """What Redis and the database hold for answers that never ended at their client."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis.url)
    conn = await asyncpg.connect(pg_url(database, "postgresql"), timeout=5)
    try:
        for client_id, request_id in stuck:
            pattern = f"*{client_id}*"
            keys = sorted(k.decode() for k in await client.keys(pattern))
            print(f"  {client_id} {request_id}: redis keys {keys[:12]}")
            for key in keys:
                kind = (await client.type(key)).decode()
                if kind == "string":
                    print(f"    {key} = {await client.get(key)!r}")
                elif kind == "list":
                    print(f"    {key} = {await client.lrange(key, 0, -1)!r}")
            rows = await conn.fetch(
                "SELECT m.role, m.request_id, m.status, length(m.content) AS n FROM messages m "
                "JOIN conversations c ON c.id = m.conversation_id WHERE c.thread_id = $1 "
                "ORDER BY m.id",
                client_id,
            )
            print(f"    rows: {[tuple(r) for r in rows]}")
    finally:
        await client.aclose()
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=160)
    parser.add_argument("--answers", type=int, default=3, help="answers per client")
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20261130)
    args = parser.parse_args()
    figures = asyncio.run(run(args.clients, args.answers, args.words, args.seed))
    bad = ("unfinished", "mismatches", "bad_sequences", "order_mismatches")
    return 1 if any(figures[key] for key in bad) or figures["answers"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
