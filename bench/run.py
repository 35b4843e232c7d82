"""Benchmark dari against bare websockets, FastAPI and picows servers, in one run.

    python bench/run.py                 # default run, about 5 minutes on 2 cores
    python bench/run.py --quick         # smaller and shorter, about 1 minute
    python bench/run.py --full          # longer windows and 10,000 idle sockets
    python bench/run.py --targets websockets,picows --scenarios streaming --levels 100
    python bench/run.py --out bench/RESULTS.md --json /tmp/bench.json

Each server runs alone, pinned to CPU 0; the load generator (picows clients, separate
processes) and this script are pinned to CPU 1. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import machine
from harness.config import BenchConfig
from harness.procs import LOAD_CPU, can_pin, cpu_busy_seconds, pin, raise_nofile, set_nice
from harness.report import Measured, Table, render
from harness.targets import (
    BASELINE_NAMES,
    REPO_DIR,
    TARGETS,
    dari_available,
    use_dari_revision,
)
from scenarios import SCENARIOS


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x)


def _names(text: str, known: list[str] | dict[str, object]) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def background_load(seconds: float = 1.0) -> str:
    """How busy each CPU is before we start: a busy machine makes every figure noisier."""
    before = cpu_busy_seconds()
    time.sleep(seconds)
    after = cpu_busy_seconds()
    return ", ".join(
        f"CPU {c} {100 * (after[c] - before[c]) / seconds:.0f}%" for c in sorted(after)
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short windows, ~1 minute")
    size.add_argument("--full", action="store_true", help="longer windows, 10k idle sockets")
    p.add_argument("--targets", default="dari," + ",".join(BASELINE_NAMES), help="comma list")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list")
    p.add_argument("--only", dest="scenarios", help="same as --scenarios, e.g. --only relay")
    p.add_argument("--levels", type=_ints, help="streaming client counts, e.g. 1,100,1000")
    p.add_argument("--rate", type=float, help="tokens/s per answer (default 50)")
    p.add_argument("--tokens", type=int, help="words per paced answer (default 100)")
    p.add_argument("--measure", type=float, help="seconds per streaming measurement window")
    p.add_argument(
        "--burst-clients", type=_ints, help="clients in the unpaced runs (default 100,1000)"
    )
    p.add_argument("--burst-tokens", type=int, help="words per unpaced answer (default 500)")
    p.add_argument("--idle", type=_ints, help="idle socket counts, e.g. 1000,10000")
    p.add_argument("--load-procs", type=int, help="load worker processes per run (default 1)")
    p.add_argument("--capacity-levels", type=_ints, help="capacity ramp steps (client counts)")
    p.add_argument(
        "--capacity-tokens", type=int, help="words per answer in the capacity ramp (default 50)"
    )
    p.add_argument("--relay-levels", type=_ints, help="relay scenario's capacity ramp steps")
    p.add_argument("--fanout-clients", type=int, help="fan-out subscribers (default 1000)")
    p.add_argument("--replay-frames", type=int, help="frames missed, then replayed (10000)")
    p.add_argument("--storm-clients", type=int, help="clients in the reconnect storm (1000)")
    p.add_argument("--chaos-answers", type=int, help="answers in the chaos run (default 1000)")
    p.add_argument("--cluster-nodes", type=_ints, help="cluster sizes to compare (default 1,3)")
    p.add_argument(
        "--cluster-remote",
        action=argparse.BooleanOptionalAction,
        help="also measure subscribers on another node than the producer (default: yes)",
    )
    p.add_argument(
        "--redis-url", help="Redis for the cluster scenario, flushed (default: a private one)"
    )
    p.add_argument("--pg-admin-dsn", help="PostgreSQL where the cluster scenario makes its DB")
    p.add_argument(
        "--dari-rev",
        metavar="REV",
        help="benchmark dari as committed at REV (e.g. HEAD) instead of the working tree",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="nice value for all benchmark processes, e.g. -10 on a busy shared machine (root)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait for other processes to leave CPU 0 before each window "
        "(default 15, --quick 3, 0 with --nice)",
    )
    p.add_argument("--out", type=Path, help="also write the report as Markdown here")
    p.add_argument("--json", type=Path, help="also write raw figures as JSON here")
    p.add_argument("--keep-logs", type=Path, help="copy server logs into this directory")
    p.add_argument(
        "--profile", type=Path, help="run servers under cProfile, .prof files here (slower)"
    )
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> BenchConfig:
    targets = _names(args.targets, TARGETS)
    preset = "quick" if args.quick else "full" if args.full else "default"
    cfg = BenchConfig.preset(preset, targets)
    if args.nice < 0:
        cfg.quiet_wait_s = 0.0  # other work now only fills idle time: nothing to wait for
    for attr, value in (
        ("levels", args.levels),
        ("rate", args.rate),
        ("tokens", args.tokens),
        ("measure_s", args.measure),
        ("burst_levels", args.burst_clients),
        ("burst_tokens", args.burst_tokens),
        ("idle_counts", args.idle),
        ("load_procs", args.load_procs),
        ("capacity_levels", args.capacity_levels),
        ("capacity_tokens", args.capacity_tokens),
        ("relay_levels", args.relay_levels),
        ("fanout_clients", args.fanout_clients),
        ("replay_frames", args.replay_frames),
        ("storm_clients", args.storm_clients),
        ("chaos_answers", args.chaos_answers),
        ("cluster_nodes", args.cluster_nodes),
        ("cluster_remote", args.cluster_remote),
        ("redis_url", args.redis_url),
        ("pg_admin_dsn", args.pg_admin_dsn),
        ("quiet_wait_s", args.quiet_wait),
        ("keep_logs", args.keep_logs),
        ("profile_dir", args.profile),
    ):
        if value is not None:
            setattr(cfg, attr, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    scenario_names = _names(args.scenarios, SCENARIOS)
    header = machine.describe()
    if args.dari_rev:
        export = Path(tempfile.mkdtemp(prefix="bench-dari-src-"))
        atexit.register(shutil.rmtree, export, ignore_errors=True)
        commit = use_dari_revision(args.dari_rev, export)
        header.append(f"dari: commit {commit[:12]} ({args.dari_rev}), exported from git")
    else:
        header.append(f"dari: working tree at {machine.git_revision(REPO_DIR)}")
    if "dari" in cfg.targets and not dari_available():
        header.append("note: dari skipped (src/dari/cli.py not found)")
        cfg.targets.remove("dari")
    if can_pin():
        pin(LOAD_CPU)  # this script and the load workers share the load CPU
        header.append("pinning: server on CPU 0, load generator and harness on CPU 1")
    else:
        header.append("pinning: not available (fewer than 2 CPUs); figures are less stable")
    header.append(f"open files limit: {raise_nofile()}")
    if args.nice:
        header.append(f"priority: {set_nice(args.nice)}")
    header.append(f"background load before the run: {background_load()}")
    header.append(
        f"command: python bench/run.py {shlex.join(sys.argv[1:] if argv is None else argv)}"
    )
    print("\n".join(header), flush=True)

    started = time.monotonic()
    tables: list[Table] = []
    for name in scenario_names:
        scenario = SCENARIOS[name]
        table: Table = scenario.table(cfg)
        only = getattr(scenario, "ONLY", None)  # scenarios that make sense for dari alone
        targets = [t for t in cfg.targets if only is None or t in only]
        table.targets = targets
        if not targets:
            print(f"... {name}: skipped (only for {', '.join(only or ())})", flush=True)
            continue
        for target in targets:
            t0 = time.monotonic()
            print(f"... {name}: {target}", end="", flush=True)
            try:
                measured: Measured = scenario.measure(target, cfg)
            except Exception as exc:  # one broken target must not hide the others' figures
                measured = Measured(notes=[f"{target}: run failed: {type(exc).__name__}: {exc}"])
            table.results[target] = measured
            print(f" {time.monotonic() - t0:.1f} s", flush=True)
        tables.append(table)
        print("\n" + render(table, targets) + "\n", flush=True)
    elapsed = time.monotonic() - started
    print(f"total time: {elapsed:.0f} s")

    if args.out:
        body = [
            "# Benchmark results",
            "",
            "Produced by `bench/run.py`; see `bench/README.md` for the method.",
            "",
            *[f"- {line}" for line in header],
            f"- total time: {elapsed:.0f} s",
            "",
            *[render(t, t.targets) + "\n" for t in tables],
        ]
        args.out.write_text("\n".join(body))
    if args.json:
        raw = {
            "header": header,
            "tables": {
                t.title: {
                    target: {"values": m.values, "noisy": sorted(m.noisy), "notes": m.notes}
                    for target, m in t.results.items()
                }
                for t in tables
            },
        }
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
