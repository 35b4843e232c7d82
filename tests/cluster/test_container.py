"""The container: ``Dockerfile``, ``.dockerignore``, ``compose.yaml`` and ``deploy/nginx.conf``.

No Docker engine is needed. The image's entrypoint is run as the image runs it: the
Dockerfile's ``ENTRYPOINT`` and ``CMD`` with its ``ENV`` plus each compose node's environment,
exactly, except for the addresses of the compose services (Redis and PostgreSQL become a
redis-server and a fresh database of the test's own) and the port (three nodes share this
machine). The three nodes must become ready, report their compose node ids, pass the image's
own HEALTHCHECK command and serve a chat. Where a Docker engine answers, the image is also
built.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
import yaml

from dari.settings import Settings, unknown_env_settings
from tests.cluster.nodes import ROOT, free_port, node_env
from tests.cluster.services import fresh_pg_database, pg_url
from tests.support.client import WsClient
from tests.support.redis_server import redis_server
from tests.support.waiting import eventually

NODES = ("dari-1", "dari-2", "dari-3")
SECRET = "a-test-secret-for-the-compose-nodes-0123456789"
# What `docker compose` would take from the shell for ${…} in compose.yaml.
SHELL = {"JWT_SECRET": SECRET}
TIMEOUT_S = 30.0


# --- reading the files -------------------------------------------------------------------------


@dataclass
class Stage:
    """The Dockerfile's final stage: what the image is."""

    base: str
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str = "root"
    runs: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage(text: str) -> Stage:
    stage: Stage | None = None
    for instruction, arguments in instructions(text):
        if instruction == "FROM":
            stage = Stage(base=arguments.split()[0])
            continue
        assert stage is not None, f"{instruction} before FROM"
        if instruction == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                stage.env[name] = value
        elif instruction in ("ENTRYPOINT", "CMD"):
            setattr(stage, instruction.lower(), json.loads(arguments))  # exec form only
        elif instruction == "HEALTHCHECK":
            command = arguments.partition(" CMD ")[2]  # after the options
            stage.healthcheck = json.loads(command)
        elif instruction == "USER":
            stage.user = arguments.split(":")[0]
        elif instruction == "RUN":
            stage.runs.append(arguments)
    assert stage is not None
    return stage


def interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, from ``shell``."""

    def one(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2) or "", match.group(3) or ""
        if shell.get(name):
            return shell[name]
        if operator == ":-":
            return word
        raise AssertionError(f"compose.yaml needs ${name}: {word or 'unset'}")

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def node_environment(name: str) -> dict[str, str]:
    environment = compose()["services"][name]["environment"]
    return {key: interpolate(str(value), SHELL) for key, value in environment.items()}


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, duration
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


# --- the files, as they are ----------------------------------------------------------------------


def test_the_dockerfile_makes_a_slim_non_root_image_that_serves_and_checks_itself() -> None:
    stage = final_stage((ROOT / "Dockerfile").read_text())
    assert stage.base == "python:3.11-slim"
    assert stage.user not in ("root", "0")
    installs = [run for run in stage.runs if "pip install" in run]
    assert installs and not any("[dev]" in run or " -e " in run for run in installs)
    assert stage.entrypoint == ["dari", "serve"] and stage.cmd == []
    # A health check in python (the slim image has no curl) on a readiness endpoint.
    assert stage.healthcheck[0] == "python"
    assert "/readyz" in stage.healthcheck[-1] or "/healthz" in stage.healthcheck[-1]
    assert not {"curl", "wget"} & set(" ".join(stage.healthcheck).split())
    assert unknown_env_settings(stage.env) == []  # strict settings: every DARI_* is one


def test_the_build_context_is_the_package_alone() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # everything is out unless let back in
    assert {p for p in patterns if p.startswith("!")} == {"!pyproject.toml", "!README.md", "!src/"}
    copied = [
        args for name, args in instructions((ROOT / "Dockerfile").read_text()) if name == "COPY"
    ]
    sources = {source for args in copied if "--from" not in args for source in args.split()[:-1]}
    assert sources <= {"pyproject.toml", "README.md", "src/"}


def test_compose_runs_three_nodes_on_redis_and_postgres_behind_nginx() -> None:
    services = compose()["services"]
    assert set(services) == {*NODES, "redis", "postgres", "nginx"}
    environments = [node_environment(name) for name in NODES]
    # The same settings on every node except its id; every DARI_* names a setting.
    assert [env.pop("DARI_NODE_ID") for env in environments] == list(NODES)
    assert environments[0] == environments[1] == environments[2]
    env = environments[0]
    assert unknown_env_settings(env) == []
    assert urlsplit(env["DARI_BUS__URL"]).hostname == "redis"
    assert env["DARI_BUS__URL"] == env["DARI_REPLAY__URL"]
    assert urlsplit(env["DARI_STORE__URL"]).hostname == "postgres"
    assert env["DARI_AUTH__MODE"] == "jwt" and env["DARI_AUTH__SECRET"] == SECRET
    with pytest.raises(AssertionError, match="JWT_SECRET"):
        interpolate(compose()["services"]["dari-1"]["environment"]["DARI_AUTH__SECRET"], {})
    for name in NODES:
        service = services[name]
        # docker stop must leave the drain its time (Docker's default is 10 s).
        drain_s = float(node_environment(name)["DARI_SERVER__DRAIN_S"])
        assert seconds(service["stop_grace_period"]) >= drain_s + 15
        assert {dep: spec["condition"] for dep, spec in service["depends_on"].items()} == {
            "redis": "service_healthy",
            "postgres": "service_healthy",
        }
        assert service["build"] == "."
    assert "noeviction" in services["redis"]["command"]
    nginx = services["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert set(nginx["depends_on"]) == set(NODES)


def test_nginx_balances_the_nodes_without_sticky_sessions_and_passes_upgrades() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    upstream = re.search(r"upstream dari \{(.*?)\}", code, re.S)
    assert upstream is not None
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream.group(1), re.M)
    assert servers == [(name, "8000") for name in NODES]
    assert "least_conn;" in upstream.group(1)
    for sticky in ("ip_hash", "sticky", "hash "):
        assert sticky not in upstream.group(1)
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{[^}]*default\s+upgrade;", code)
    for header in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header Host $http_host;",  # the browser's Origin has the port: so must Host
        "proxy_buffering off;",
    ):
        assert header in code
    timeout = re.search(r"proxy_read_timeout (\d+)s;", code)
    assert timeout and int(timeout.group(1)) > 2 * Settings.load(None).heartbeat_s


# --- the image's entrypoint, run without Docker --------------------------------------------------


def docker_engine() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False)
    return docker if probe.returncode == 0 else None


def entrypoint_command(stage: Stage) -> list[str]:
    """ENTRYPOINT + CMD, the program found where this interpreter's scripts are (the image
    finds it on its PATH after `pip install`)."""
    program, *arguments = stage.entrypoint + stage.cmd
    found = Path(sys.executable).parent / program
    assert found.is_file(), f"{program} is not installed next to {sys.executable}"
    return [str(found), *arguments]


def local_address(value: str, redis_url: str, store_url: str) -> str:
    """A compose service's address in a URL setting, made this machine's."""
    parts = urlsplit(value)
    if parts.hostname == "redis":
        return redis_url.rsplit("/", 1)[0] + parts.path
    if parts.hostname == "postgres":
        return store_url
    return value


@dataclass
class ImageNode:
    name: str
    port: int
    env: dict[str, str]
    process: asyncio.subprocess.Process
    log: Path

    async def readyz(self) -> httpx.Response | None:
        if self.process.returncode is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-4000:]}")
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return await http.get(f"http://127.0.0.1:{self.port}/readyz")
        except httpx.HTTPError:
            return None

    async def ready(self) -> bool:
        response = await self.readyz()
        return response is not None and response.status_code == 200


async def test_the_image_entrypoint_with_the_compose_settings_serves_a_cluster(
    tmp_path: Path,
) -> None:
    docker = docker_engine()
    if docker is not None:  # CI with an engine: the image itself must build
        build = await asyncio.create_subprocess_exec(
            docker, "build", "--quiet", "-t", "dari:test", str(ROOT), cwd=ROOT
        )
        assert await asyncio.wait_for(build.wait(), 900) == 0
    # Without one (this machine), the same entrypoint and settings, run directly.
    stage = final_stage((ROOT / "Dockerfile").read_text())
    command = entrypoint_command(stage)
    # The image's python is this interpreter here (`python` may not be on this PATH).
    healthcheck = [sys.executable, *stage.healthcheck[1:]]
    async with (
        redis_server(tmp_path / "redis") as redis,
        fresh_pg_database("dari_image") as database,
    ):
        nodes: list[ImageNode] = []
        try:
            for name in NODES:
                port = free_port()
                env = {k: v for k, v in node_env().items() if k != "PYTHONPATH"}
                env.update(stage.env)
                for key, value in node_environment(name).items():
                    env[key] = local_address(value, redis.url, pg_url(database))
                env["DARI_SERVER__PORT"] = str(port)  # three nodes on one machine
                workdir = tmp_path / name  # the image's WORKDIR
                workdir.mkdir()
                log = tmp_path / f"{name}.log"
                process = await asyncio.create_subprocess_exec(
                    *command,
                    cwd=workdir,
                    env=env,
                    stdout=log.open("wb"),
                    stderr=asyncio.subprocess.STDOUT,
                )
                nodes.append(ImageNode(name, port, env, process, log))
            for node in nodes:
                await eventually(node.ready, timeout=TIMEOUT_S)
                response = await node.readyz()
                assert response is not None
                assert response.json()["node_id"] == node.name  # DARI_NODE_ID from compose
                # The image's own HEALTHCHECK command, in the node's environment.
                check = await asyncio.create_subprocess_exec(
                    *healthcheck, env=node.env, cwd=tmp_path
                )
                assert await asyncio.wait_for(check.wait(), 10) == 0

            # A chat through one node, with a token signed by the compose secret.
            claims = {"sub": "u1", "exp": int(time.time()) + 600, "projects": ["*"]}
            token = jwt.encode(claims, SECRET, algorithm="HS256")
            client = await WsClient.open(
                f"ws://127.0.0.1:{nodes[1].port}/ws/chat/image-client",
                additional_headers={"Authorization": f"Bearer {token}"},
            )
            assert (await client.recv())["type"] == "welcome"
            await client.chat("hello from the image", agent="echo", id="c1")
            text, end = await client.answer("c1", timeout=TIMEOUT_S)
            assert (text, end["finish_reason"]) == ("hello from the image", "stop")
            await client.close()

            # The image's health check fails once the node is gone (SIGTERM: it drains, stops).
            nodes[2].process.terminate()
            await asyncio.wait_for(nodes[2].process.wait(), TIMEOUT_S)
            check = await asyncio.create_subprocess_exec(
                *healthcheck,
                env=nodes[2].env,
                cwd=tmp_path,
                stderr=asyncio.subprocess.DEVNULL,
            )
            assert await asyncio.wait_for(check.wait(), 10) != 0
        finally:
            for node in nodes:
                if node.process.returncode is None:
                    node.process.terminate()
            for node in nodes:
                try:
                    await asyncio.wait_for(node.process.wait(), TIMEOUT_S)
                except TimeoutError:
                    node.process.kill()
                    await node.process.wait()
