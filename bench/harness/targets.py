"""The servers under test: dari and the baselines, and how to start each one."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
BASELINES = BENCH_DIR / "baselines"

BENCH_PROJECT = "bench"
BENCH_AGENT = "echo"
STEPS_AGENT = "steps"  # harness/dari_agents.py: one `step` frame per count (replay scenario)

# Limits raised so that the gateway's abuse protection (all bench clients are the same
# anonymous user on loopback) does not shape the measurement, and the benchmark project with its
# echo agent: shared by the one-node config here and the cluster scenario's node config.
DARI_LIMITS = """\
[limits]
max_connections_per_user = 100000
rate_per_s = 100000.0
rate_burst = 100000.0
"""
DARI_LIMITS_AND_PROJECT = (
    DARI_LIMITS
    + """
[[projects]]
id = "{project}"
name = "Benchmark"

[[projects.agents]]
name = "{agent}"
backend = "echo"
stream_gather_ms = {gather_ms}
options = {{ delay_ms = {delay_ms} }}
"""
)

# Everything else is dari's default.
DARI_CONFIG = (
    """\
default_project = "{project}"
default_agent = "{agent}"

[store]
url = "sqlite+aiosqlite:///{workdir}/bench.db"

"""
    + DARI_LIMITS_AND_PROJECT
    + """
[[projects.agents]]
name = "{steps}"
backend = "python"
options = {{ entrypoint = "harness.dari_agents:steps" }}
"""
)


@dataclass(frozen=True)
class Target:
    """One server implementation. ``argv`` builds the command for a port, delay and work dir."""

    name: str
    argv: Callable[[int, float, Path], list[str]]
    dialect: str = "plain"  # "dari": welcome, ack, seq checks; "plain": start/response/end only
    project_id: str = BENCH_PROJECT
    agent_name: str = BENCH_AGENT
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_dari(self) -> bool:
        return self.dialect == "dari"


def _baseline(script: str) -> Callable[[int, float, Path], list[str]]:
    def argv(port: int, delay_ms: float, workdir: Path) -> list[str]:
        return [
            sys.executable,
            str(BASELINES / script),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--delay-ms",
            str(delay_ms),
        ]

    return argv


def dari_argv(
    port: int, delay_ms: float, workdir: Path, gather_ms: float = 0.0
) -> list[str]:
    """dari with the bench config; ``gather_ms``: the echo agent's ``stream_gather_ms``."""
    config = workdir / "dari-bench.toml"
    config.write_text(
        DARI_CONFIG.format(
            project=BENCH_PROJECT,
            agent=BENCH_AGENT,
            steps=STEPS_AGENT,
            workdir=workdir,
            delay_ms=delay_ms,
            gather_ms=gather_ms,
        )
    )
    return [
        sys.executable,
        "-m",
        "dari.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(config),
    ]


def _pythonpath(first: Path) -> str:
    """dari's sources first, then bench/ (for ``harness.dari_agents``), then the caller's."""
    rest = os.environ.get("PYTHONPATH")
    paths = [str(first), str(BENCH_DIR), *([rest] if rest else [])]
    return os.pathsep.join(paths)


TARGETS: dict[str, Target] = {
    # dari runs from the checkout (src layout) whether or not it is installed in the venv.
    "dari": Target(
        "dari", dari_argv, dialect="dari", env={"PYTHONPATH": _pythonpath(REPO_DIR / "src")}
    ),
    "websockets": Target("websockets", _baseline("ws_websockets.py")),
    "fastapi": Target("fastapi", _baseline("ws_fastapi.py")),
    "picows": Target("picows", _baseline("ws_picows.py")),
}
BASELINE_NAMES = ("websockets", "fastapi", "picows")


def dari_available() -> bool:
    """True when the sources dari runs from have a CLI to start the server with."""
    src = TARGETS["dari"].env["PYTHONPATH"].split(os.pathsep)[0]
    return (Path(src) / "dari" / "cli.py").is_file()


def use_dari_revision(rev: str, into: Path) -> str:
    """Run dari from ``rev`` exported into ``into`` rather than from the working tree.

    Benchmarks then measure committed code, not files half-way through an edit. Returns the
    full commit id.
    """
    commit = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO_DIR), "archive", "--format=tar", commit, "src"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    TARGETS["dari"] = replace(TARGETS["dari"], env={"PYTHONPATH": _pythonpath(into / "src")})
    return commit
