"""Parent side of a measurement: one server under test plus load worker processes.

``Session`` starts the target pinned to its CPU, probes it, and hands out ``LoadGroup``s whose
workers run in separate processes. Everything is bounded in time; leftovers are killed by pid.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from harness import probe, stats
from harness.config import BenchConfig
from harness.loadgen import Go, LoadResult, LoadSpec, worker
from harness.procs import SERVER_CPU, ServerProcess, cpu_busy_seconds, cpu_seconds, free_port
from harness.targets import Target

_CTX = mp.get_context("spawn")  # a clean interpreter per worker: no inherited loop or sockets


NOISY_PCT = 10.0  # other processes' share of the server's core above which a figure is flagged


@dataclass
class Mark:
    at: float
    server_cpu: float
    load_cpu: float
    core_busy: float


@dataclass
class Sample:
    """Server and load-generator resource use between two instants."""

    seconds: float
    server_cpu_s: float
    load_cpu_s: float
    server_core_busy_s: float  # all work on SERVER_CPU, ours or not

    @property
    def foreign_pct(self) -> float:
        """Share of the server's core used by other processes (noise from outside the run)."""
        other = max(0.0, self.server_core_busy_s - self.server_cpu_s)
        return 100 * other / self.seconds if self.seconds else 0.0

    @property
    def noisy(self) -> bool:
        return self.foreign_pct > NOISY_PCT

    def warnings(self, where: str) -> list[str]:
        """Reasons to distrust a figure measured during this sample."""
        found = []
        if self.load_cpu_pct > 80:
            found.append(f"{where}: load generator at {self.load_cpu_pct:.0f}% CPU (may cap it)")
        if self.noisy:
            found.append(
                f"{where}: other processes took {self.foreign_pct:.0f}% of the server's core"
            )
        return found

    @property
    def server_cpu_pct(self) -> float:
        return 100 * self.server_cpu_s / self.seconds if self.seconds else 0.0

    @property
    def load_cpu_pct(self) -> float:
        return 100 * self.load_cpu_s / self.seconds if self.seconds else 0.0


class LoadGroup:
    """Worker processes sharing one load; each gets a slice of the client ids."""

    def __init__(self, specs: list[LoadSpec]) -> None:
        self.specs = specs
        self.procs: list[BaseProcess] = []
        self.conns: list[Connection] = []
        for spec in specs:
            parent, child = _CTX.Pipe()
            proc = _CTX.Process(target=worker, args=(spec, child), daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        self.deadline = max(spec.deadline for spec in specs)

    def _recv(self, conn: Connection, kind: str) -> LoadResult:
        timeout = max(0.1, self.deadline + 5 - time.monotonic())
        if not conn.poll(timeout):
            raise TimeoutError(f"load worker sent no {kind!r} in time")
        got, payload = conn.recv()
        if got != kind:
            raise RuntimeError(f"load worker sent {got!r} instead of {kind!r}: {payload}")
        assert isinstance(payload, LoadResult)
        return payload

    def wait_ready(self) -> list[LoadResult]:
        return [self._recv(conn, "ready") for conn in self.conns]

    def collect(self, kind: str) -> list[LoadResult]:
        """Each worker's next report, which must be of ``kind`` (e.g. ``"stormed"``)."""
        return [self._recv(conn, kind) for conn in self.conns]

    def send(self, *msg: Any) -> None:
        for conn in self.conns:
            conn.send(msg)

    def results(self) -> list[LoadResult]:
        return [self._recv(conn, "result") for conn in self.conns]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(proc.pid) for proc in self.procs if proc.pid)

    def close(self) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()  # only our own worker, by its pid
                proc.join(timeout=5)
        for conn in self.conns:
            conn.close()


class Session:
    """One started server of one target, with a fresh work dir."""

    def __init__(self, target: Target, delay_ms: float, workdir: Path, run_id: str) -> None:
        self.target = target
        self.run_id = run_id
        self.port = free_port()
        self.server = ServerProcess(
            name=target.name,
            argv=target.argv(self.port, delay_ms, workdir),
            port=self.port,
            cwd=workdir,
            log_path=workdir / f"{target.name}.log",
            env={**os.environ, **target.env},
        )
        self.url = f"ws://127.0.0.1:{self.port}/ws/chat/"

    def client_ids(self, count: int, prefix: str | None = None) -> list[str]:
        return [f"{prefix or self.run_id}-{i}" for i in range(count)]

    def spec(self, client_ids: list[str], *, budget_s: float, **kwargs: Any) -> LoadSpec:
        return LoadSpec(
            url=self.url,
            client_ids=client_ids,
            dari=self.target.is_dari,
            project_id=self.target.project_id,
            agent_name=self.target.agent_name,
            deadline=time.monotonic() + budget_s,
            **kwargs,
        )

    def load(
        self, clients: int, procs: int, *, budget_s: float, prefix: str | None = None, **kwargs: Any
    ) -> LoadGroup:
        """Start worker processes for ``clients`` clients, ids ``<prefix>-<i>``."""
        ids = self.client_ids(clients, prefix)
        procs = max(1, min(procs, clients))
        slices = [ids[i::procs] for i in range(procs)]
        return LoadGroup([self.spec(part, budget_s=budget_s, **kwargs) for part in slices])

    def mark(self, group: LoadGroup | None = None) -> Mark:
        """Current CPU counters; ``since(mark)`` turns two of them into a Sample."""
        return Mark(
            time.monotonic(),
            self.server.cpu_seconds(),
            group.cpu_seconds() if group else 0.0,
            cpu_busy_seconds().get(SERVER_CPU, 0.0),
        )

    def since(self, start: Mark, group: LoadGroup | None = None) -> Sample:
        end = self.mark(group)
        return Sample(
            end.at - start.at,
            end.server_cpu - start.server_cpu,
            end.load_cpu - start.load_cpu,
            end.core_busy - start.core_busy,
        )

    def measure(self, group: LoadGroup, t0: float, t1: float) -> Sample:
        """Sleep until t0, then until t1, sampling server and load CPU time at both."""
        time.sleep(max(0.0, t0 - time.monotonic()))
        start = self.mark(group)
        time.sleep(max(0.0, t1 - time.monotonic()))
        return self.since(start, group)

    def run_window(
        self, group: LoadGroup, quiet_s: float, warmup: float, measure: float, drain: float
    ) -> tuple[Go, Sample, LoadResult]:
        """Once ``group`` is ready (and the core quiet): start its chats, warm up, measure one
        window, let running answers finish; the group is closed afterwards."""
        try:
            group.wait_ready()
            self.wait_quiet(quiet_s)
            go = go_marks(0.2, warmup, measure, drain)
            group.send("go", go)
            sample = self.measure(group, go.w0, go.w1)
            result = stats.merge(group.results())
        finally:
            group.close()
        return go, sample, result

    def wait_quiet(self, max_s: float, threshold_pct: float = NOISY_PCT) -> float:
        """Wait (at most ``max_s``) until other processes leave the server's core alone.

        The harness cannot stop other work on a shared machine, but it can avoid starting a
        measurement in the middle of it. Returns the seconds waited.
        """
        began = time.monotonic()
        while time.monotonic() - began < max_s:
            start = self.mark()
            time.sleep(0.5)
            if self.since(start).foreign_pct < threshold_pct:
                break
        return time.monotonic() - began


@contextmanager
def session(target: Target, cfg: BenchConfig, *, delay_ms: float, run_id: str) -> Iterator[Session]:
    """Start ``target`` on a free port, check that it streams correctly, stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{target.name}-") as tmp:
        workdir = Path(tmp)
        sess = Session(target, delay_ms, workdir, run_id)
        stop_timeout, stop_signal = 5.0, signal.SIGTERM
        if cfg.profile_dir is not None:
            # uvicorn re-raises the stop signal after shutting down; only SIGINT (as
            # KeyboardInterrupt) lets cProfile write its file on the way out.
            cfg.profile_dir.mkdir(parents=True, exist_ok=True)
            out = cfg.profile_dir / f"{run_id}-{target.name}.prof"
            argv = list(sess.server.argv)
            sess.server.argv = [argv[0], "-m", "cProfile", "-o", str(out), *argv[1:]]
            stop_timeout, stop_signal = 20.0, signal.SIGINT
        try:
            sess.server.start()
            probe.check(sess.url + f"{run_id}-probe", target)
            yield sess
        except Exception:
            tail = sess.server.log_tail()
            if tail:
                print(f"--- {target.name} log (last lines) ---\n{tail}")
            raise
        finally:
            sess.server.stop(stop_timeout, stop_signal)
            if cfg.keep_logs is not None:
                cfg.keep_logs.mkdir(parents=True, exist_ok=True)
                log = sess.server.log_path
                if log.exists():
                    (cfg.keep_logs / f"{run_id}-{log.name}").write_bytes(log.read_bytes())


def go_marks(start_in: float, warmup: float, measure: float, drain: float) -> Go:
    """Window marks from now: chats start, warm up, measure, then finish running answers."""
    start = time.monotonic() + start_in
    w0 = start + warmup
    w1 = w0 + measure
    return Go(start=start, w0=w0, w1=w1, stop_chats=w1, hard=w1 + drain)
