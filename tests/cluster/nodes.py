"""Several real ``dari serve`` processes on loopback ports, sharing Redis and PostgreSQL: a
redis-server and a database of their own, so the machine's services are never disturbed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from tests.cluster.services import fresh_pg_database, pg_url
from tests.support.redis_server import redis_server
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
# Short leases, so that the loss of a node is noticed within seconds (defaults: 10, 2, 1).
LEASE_S, RENEW_S, REAP_S = 3.0, 0.5, 0.25
# A short drain on SIGTERM (default 10 s), so that stopping a node mid-answer stays quick.
DRAIN_S = 1.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def config_text(
    node_id: str,
    port: int,
    store_url: str,
    redis_url: str,
    delay_ms: int,
    jwt_secret: str | None = None,
    drain_s: float | None = None,
) -> str:
    drain = [f"drain_s = {drain_s}"] if drain_s is not None else []
    auth = ["[auth]", 'mode = "jwt"', f"secret = {_toml(jwt_secret)}"] if jwt_secret else []
    return "\n".join(
        [
            f"node_id = {_toml(node_id)}",
            *auth,
            "[cluster]",
            f"lease_s = {LEASE_S}",
            f"renew_s = {RENEW_S}",
            f"reap_s = {REAP_S}",
            "[server]",
            'host = "127.0.0.1"',
            f"port = {port}",
            *drain,
            "[store]",
            f"url = {_toml(store_url)}",
            "[bus]",
            f"url = {_toml(redis_url)}",
            "[replay]",
            f"url = {_toml(redis_url)}",
            "[[projects]]",
            'id = "p1"',
            "[[projects.agents]]",
            'name = "slow"',
            'backend = "echo"',
            f"options = {_toml({'delay_ms': delay_ms})}",
            # Delegation: the offline agent hands `/delegate worker <task>` to the echo worker.
            "[[projects.agents]]",
            'name = "desk"',
            'backend = "offline"',
            f"options = {_toml({'delay_ms': 0})}",
            "[[projects.agents]]",
            'name = "worker"',
            'backend = "echo"',
            f"options = {_toml({'delay_ms': delay_ms})}",
            # Asks a question (an interrupt) and waits for its answer.
            "[[projects.agents]]",
            'name = "asker"',
            'backend = "python"',
            f"options = {_toml({'entrypoint': 'tests.support.agents:asking'})}",
            "",
        ]
    )


def token(secret: str, user: str) -> str:
    """A token for ``user`` with access to every project, as the nodes verify it."""
    claims = {"sub": user, "exp": int(time.time()) + 3600, "projects": ["*"]}
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class Node:
    name: str
    port: int
    process: asyncio.subprocess.Process
    log: Path
    database: str  # the PostgreSQL database every node of the cluster shares
    redis_url: str  # the cluster's own redis-server, for tests that look at its keys

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def ready(self) -> bool:
        if self.process.returncode is not None:
            raise RuntimeError(f"node {self.name} exited:\n{self.log.read_text()[-4000:]}")
        try:
            async with httpx.AsyncClient(base_url=self.http, timeout=2) as http:
                return (await http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def kill(self) -> None:
        """``kill -9``: no shutdown code runs."""
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                await self.kill()


def node_env() -> dict[str, str]:
    """The environment of a ``dari serve`` process: this one's, without any setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARI_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


async def spawn(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``dari serve --config config``, its output in ``log``."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dari.cli",
        "serve",
        "--config",
        str(config),
        cwd=ROOT,
        env=node_env() if env is None else env,
        stdout=log.open("wb"),
        stderr=asyncio.subprocess.STDOUT,
    )


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path,
    count: int = 3,
    delay_ms: int = 20,
    jwt_secret: str | None = None,
    drain_s: float = DRAIN_S,
) -> AsyncIterator[list[Node]]:
    """``count`` nodes (node-a, node-b, …) on a fresh PostgreSQL database and a redis-server of
    their own; with ``jwt_secret``, clients prove who they are with HS256 tokens (see
    ``token``); ``drain_s``: how long a node drains on SIGTERM."""
    async with (
        redis_server(tmp_path / "redis") as redis,
        fresh_pg_database("dari_cluster") as database,
    ):
        redis_url = redis.url
        nodes: list[Node] = []
        try:
            for index in range(count):
                name = f"node-{chr(ord('a') + index)}"
                port = free_port()
                config = tmp_path / f"{name}.toml"
                config.write_text(
                    config_text(
                        name, port, pg_url(database), redis_url, delay_ms, jwt_secret, drain_s
                    )
                )
                log = tmp_path / f"{name}.log"
                process = await spawn(config, log)
                nodes.append(Node(name, port, process, log, database, redis_url))
            for node in nodes:
                await eventually(node.ready, timeout=START_TIMEOUT_S)
            yield nodes
        finally:
            await asyncio.gather(*(node.stop() for node in nodes))
