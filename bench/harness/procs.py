"""Process plumbing: CPU pinning, file limits, starting and stopping servers, /proc sampling."""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SERVER_CPU = 0
LOAD_CPU = 1
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
# Read once at import, before the harness pins itself; forked children inherit this value.
_USABLE = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
_NICE = 0  # set by set_nice(); servers apply it to their own session's autogroup


def can_pin() -> bool:
    """Two usable CPUs: one for the server, one for the load (checked before any pinning)."""
    return hasattr(os, "sched_setaffinity") and {SERVER_CPU, LOAD_CPU} <= _USABLE


def pin(cpu: int) -> None:
    """Pin the calling process (and the threads it creates later) to one CPU, if possible.

    Children inherit the parent's mask, so this must also widen it: a server started from the
    harness (pinned to LOAD_CPU) moves itself to SERVER_CPU.
    """
    if can_pin():
        os.sched_setaffinity(0, {cpu})


def set_nice(value: int) -> str:
    """Give this process and everything it starts later the nice ``value``.

    On a shared machine a negative value keeps other work from taking the server's core in the
    middle of a window. With autogroup scheduling (Linux default) nice only ranks processes of
    one session, so the session's autogroup gets the value too; servers, which run in sessions
    of their own, apply it again when they start. Returns a description for the report header.
    """
    global _NICE
    try:
        os.setpriority(os.PRIO_PROCESS, 0, value)
    except OSError as exc:
        return f"nice {value} refused ({exc.strerror})"
    _NICE = value
    grouped = _autogroup_nice(value)
    return f"nice {value}{' (and its autogroup)' if grouped else ''} for all benchmark processes"


def _autogroup_nice(value: int) -> bool:
    try:
        Path("/proc/self/autogroup").write_text(str(value))
    except OSError:
        return False
    return True


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_preexec(cpu: int = SERVER_CPU) -> None:
    # Runs in the child before exec: everything the server starts (threads included) stays on
    # its CPU, and it gets its own process group so that stopping it stops its children.
    pin(cpu)
    raise_nofile()
    if _NICE:
        _autogroup_nice(_NICE)  # start_new_session made a new autogroup at nice 0


@dataclass
class ServerProcess:
    """A server under test, started in its own process group and pinned to SERVER_CPU."""

    name: str
    argv: Sequence[str]
    port: int
    cwd: Path
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    cpu: int = SERVER_CPU  # LOAD_CPU for a process that plays the outside world (a model)

    def start(self, ready_timeout: float = 30.0) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(self.argv),
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # safe: the harness starts no threads of its own
            preexec_fn=functools.partial(_server_preexec, self.cpu),
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on port {self.port}:\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def pids(self) -> list[int]:
        """The server process and its descendants (e.g. a CLI that execs uvicorn workers)."""
        if self.proc is None:
            return []
        return process_tree(self.proc.pid)

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def process_tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(child) for child in task.read_text().split())
    return pids


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_busy_seconds() -> dict[int, float]:
    """Busy (non-idle) time of each CPU since boot, from /proc/stat."""
    busy: dict[int, float] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return busy
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
        busy[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / _TICK
    return busy
