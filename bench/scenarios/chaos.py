"""Scenario G: the resume chaos run (``bench/chaos.py``) as part of the report.

dari only. One process runs a dari server, a proxy that cuts client connections at random
moments (every 30-120 ms, FIN or RST, either side) and Python clients (``dari.client``) that
reconnect and resume; each client chats in turn, so every answer is cut several times. At the
end every answer's text is compared with the database and every client's frames with the seq
rules (no gap, no duplicate). The process runs unpinned (server and clients share it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.config import BenchConfig
from harness.procs import cpu_seconds
from harness.report import Measured, Metric, Table
from harness.targets import BENCH_DIR, REPO_DIR, TARGETS

NAME = "chaos"
ONLY = ("dari",)


def table(cfg: BenchConfig) -> Table:
    return Table(
        title=(
            f"G. Chaos: {cfg.chaos_answers:,} answers of {cfg.chaos_words} words, "
            f"{cfg.chaos_clients} clients, connections cut at random"
        ),
        method=__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() if __doc__ else "",
        metrics=[
            Metric("answers", "answers completed", ""),
            Metric("seconds", "wall time, s", "", 1),
            Metric("cuts", "connections cut", ""),
            Metric("cuts_min", "cuts per answer, fewest", "", 0),
            Metric("cuts_mean", "cuts per answer, mean", "", 1),
            Metric("mismatches", "answers differing from the database", ""),
            Metric("bad_sequences", "clients with a seq gap or duplicate", ""),
            Metric("cpu", "CPU seconds (server, proxy and clients)", "", 1),
        ],
    )


def measure(target_name: str, cfg: BenchConfig) -> Measured:
    out = Measured()
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        figures = Path(tmp) / "chaos.json"
        argv = [
            sys.executable,
            str(BENCH_DIR / "chaos.py"),
            f"--answers={cfg.chaos_answers}",
            f"--clients={cfg.chaos_clients}",
            f"--words={cfg.chaos_words}",
            f"--json={figures}",
        ]
        env = {**os.environ, **TARGETS[target_name].env}
        timeout = 120 + cfg.chaos_answers * 0.5
        with (Path(tmp) / "chaos.log").open("w+") as log:
            proc = subprocess.Popen(argv, cwd=REPO_DIR, env=env, stdout=log, stderr=log)
            cpu, deadline = 0.0, time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                cpu = max(cpu, cpu_seconds(proc.pid))
                time.sleep(0.2)
            if proc.poll() is None:
                proc.kill()  # our own child, by its pid
                proc.wait()
                out.notes.append(f"dari chaos: stopped after {timeout:g} s")
            log.seek(0)
            text = log.read()
        if figures.exists():
            for key, value in json.loads(figures.read_text()).items():
                out.put(key, value)
        else:
            tail = "\n".join(text.splitlines()[-5:])
            out.notes.append(f"dari chaos: no figures (exit {proc.returncode}): {tail}")
    out.put("cpu", cpu or None)
    if proc.returncode:
        out.notes.append(f"dari chaos: exit code {proc.returncode} (a check failed)")
    for key, what in (("mismatches", "answers differ"), ("bad_sequences", "clients saw a gap")):
        if out.values.get(key):
            out.notes.append(f"dari chaos: {out.values[key]:.0f} {what}")
    return out
