"""The resume chaos run at scale: many answers, each cut several times, checked byte for byte.

    .venv/bin/python bench/chaos.py --answers 1000 --clients 50
    .venv/bin/python bench/run.py --scenarios chaos     # the same, as a table in the report

The same workload as tests/integration/test_chaos.py (a real server on loopback, real Python
clients behind a proxy that cuts their connections at random moments, FIN or RST, either side),
larger. It prints the figures and exits non-zero if any answer's text differs from the
database, or any client saw a gap or a duplicate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.proxy import CUT_KINDS, ChaosProxy  # noqa: E402
from tests.support.server import make_settings, start_server  # noqa: E402

from dari.client import DariClient  # noqa: E402
from dari.protocol.frames import ConversationKey  # noqa: E402


async def _cut_until(
    proxy: ChaosProxy, client_id: str, done: asyncio.Event, rng: random.Random
) -> int:
    cuts = 0
    while not done.is_set():
        await asyncio.sleep(rng.uniform(0.03, 0.12))  # the random moment is the input
        if proxy.cut(client_id, rng.choice(CUT_KINDS)):
            cuts += 1
    return cuts


def _sequence_ok(frames: list[dict[str, Any]]) -> bool:
    position, seen = None, set()
    for frame in frames:
        if frame["type"] == "welcome":
            if position is not None and not frame["resumed"]:
                return False
            position = frame["seq"]
        elif position is None or frame["seq"] != position + 1 or frame["seq"] in seen:
            return False
        else:
            seen.add(frame["seq"])
            position = frame["seq"]
    return True


async def run(answers: int, clients: int, words: int, seed: int) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="dari-chaos-"))
    settings = make_settings(
        data,
        projects=[
            {
                "id": "chaos",
                "agents": [{"name": "slow", "backend": "echo", "options": {"delay_ms": 6}}],
            }
        ],
        limits={"rate_per_s": 1000, "rate_burst": 1000, "max_connections_per_user": 10_000},
    )
    server = await start_server(settings)
    proxy = ChaosProxy(server.port)
    await proxy.start()
    rng = random.Random(seed)
    per_client = -(-answers // clients)
    results: list[tuple[str, str, str, int]] = []
    bad_sequences = 0

    async def one(index: int) -> None:
        nonlocal bad_sequences
        client_id = f"chaos-{index}"
        client = DariClient(
            f"ws://127.0.0.1:{proxy.port}", client_id, backoff_initial=0.02, backoff_max=0.2
        )
        frames: list[dict[str, Any]] = []

        async def consume() -> None:
            async for frame in client.frames():
                frames.append(frame)

        async with client:
            consumer = asyncio.create_task(consume())
            for n in range(per_client):
                text = " ".join(f"c{index}a{n}w{i}" for i in range(words))
                request_id = await client.chat(
                    text, agent_name="slow", project_id="chaos", thread_id=client_id
                )
                done = asyncio.Event()
                cutting = asyncio.create_task(_cut_until(proxy, client_id, done, rng))
                answer = await client.answer(request_id, timeout=300)
                done.set()
                results.append((client_id, request_id, answer.text, await cutting))
            consumer.cancel()
        bad_sequences += not _sequence_ok(frames)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    await proxy.stop()
    mismatches = 0
    for client_id, request_id, text, _ in results:
        history = await server.gateway.store.history(
            ConversationKey("chaos", "slow", client_id), 10_000
        )
        saved = [m.content for m in history if m.request_id == request_id and m.role == "assistant"]
        mismatches += saved != [text]
    await server.stop()
    cuts = [c for *_, c in results]
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"answers: {len(results)} over {clients} clients, {words} words each, in {elapsed:.1f} s")
    print(
        f"cuts: {sum(cuts)} in all, per answer min {min(cuts)} / mean {sum(cuts) / len(cuts):.1f}"
    )
    print(f"text differing from the database: {mismatches}")
    print(f"clients with a seq gap or duplicate: {bad_sequences}")
    return {
        "answers": len(results),
        "clients": clients,
        "words": words,
        "seconds": elapsed,
        "cuts": sum(cuts),
        "cuts_min": min(cuts),
        "cuts_mean": sum(cuts) / len(cuts),
        "mismatches": mismatches,
        "bad_sequences": bad_sequences,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--words", type=int, default=140)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    figures = asyncio.run(run(args.answers, args.clients, args.words, args.seed))
    if args.json is not None:
        args.json.write_text(json.dumps(figures))
    return 1 if figures["mismatches"] or figures["bad_sequences"] else 0


if __name__ == "__main__":
    sys.exit(main())
