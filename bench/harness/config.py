"""Run-wide settings: sizes and durations for the default, --quick and --full runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class BenchConfig:
    targets: list[str]
    rate: float = 50.0  # tokens per second per answer (the agent's pace)
    tokens: int = 100  # words per answer
    levels: tuple[int, ...] = (1, 100, 1000)  # concurrent streaming clients
    warmup_s: float = 1.5
    measure_s: float = 4.0
    drain_s: float = 5.0  # after the window, time for running answers to end (then give up)
    fresh_servers: bool = True  # a new server per streaming level (False: one per target)
    quiet_wait_s: float = 15.0  # wait up to this long for other processes to leave CPU 0
    burst_levels: tuple[int, ...] = (100, 1000)  # unpaced throughput runs: concurrent clients
    burst_tokens: int = 500
    burst_warmup_s: float = 1.0
    burst_measure_s: float = 3.0
    idle_counts: tuple[int, ...] = (1000,)
    idle_settle_s: float = 1.5  # after the last connect, before reading the RSS
    load_procs: int = 1  # load worker processes per run (all on the load CPU)
    # capacity: paced answers, more clients per step until token latency p99 passes the limit
    capacity_levels: tuple[int, ...] = (100, 200, 400, 700, 1000, 1500, 2000, 3000, 4000)
    capacity_tokens: int = 50  # words per answer (1 s at 50 tokens/s)
    capacity_warmup_s: float = 1.0
    capacity_measure_s: float = 2.0
    capacity_p99_ms: float = 100.0
    capacity_kept_pct: float = 95.0  # a level also fails below this share of offered tokens
    fanout_clients: int = 1000
    fanout_rounds: int = 10
    replay_frames: int = 10_000
    storm_clients: int = 1000
    chaos_answers: int = 1000
    chaos_clients: int = 50
    chaos_words: int = 140
    cluster_nodes: tuple[int, ...] = (1, 3)
    cluster_clients: int = 100
    cluster_tokens: int = 500
    cluster_measure_s: float = 3.0
    cluster_remote: bool = True  # also: askers on node A, their subscribers on node B
    # relay: an OpenAI-compatible upstream relayed by dari and by FastAPI + the openai client
    relay_tokens: int = 200  # words (chunks) per answer
    relay_clients: int = 50  # the fixed level where CPU per relayed token is measured
    relay_levels: tuple[int, ...] = (25, 50, 100, 200, 400, 700, 1000, 1500, 2000)
    redis_url: str | None = None  # cluster: None = a private redis-server for the run
    pg_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    keep_logs: Path | None = None
    profile_dir: Path | None = None  # run servers under cProfile, one file per run

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    @classmethod
    def preset(cls, name: str, targets: list[str]) -> BenchConfig:
        if name == "quick":
            return cls(
                targets,
                tokens=25,
                levels=(1, 100),
                warmup_s=0.8,
                measure_s=1.2,
                drain_s=1.0,
                fresh_servers=False,
                quiet_wait_s=3.0,
                burst_tokens=200,
                burst_warmup_s=0.5,
                burst_measure_s=1.2,
                idle_counts=(500,),
                idle_settle_s=1.0,
                capacity_levels=(100, 300, 1000, 2000, 3000),
                capacity_tokens=25,
                capacity_warmup_s=0.8,
                capacity_measure_s=1.2,
                fanout_rounds=5,
                chaos_answers=200,
                cluster_tokens=200,
                cluster_measure_s=1.5,
                relay_levels=(50, 200, 700, 1500),
            )
        if name == "full":
            return cls(
                targets,
                measure_s=8.0,
                burst_measure_s=5.0,
                idle_counts=(1000, 10_000),
                capacity_measure_s=4.0,
                cluster_measure_s=5.0,
            )
        return cls(targets)
