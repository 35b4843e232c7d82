"""Small statistics helpers: percentiles and merging worker results."""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Sequence

from harness.loadgen import LoadResult


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def merge(results: Iterable[LoadResult]) -> LoadResult:
    """One result for all worker processes of a load (connect time: the slowest worker)."""
    total = LoadResult()
    connect_errors: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latencies = array("d")
    for r in results:
        total.clients += r.clients
        total.connect_s = max(total.connect_s, r.connect_s)
        total.connect_lat.extend(r.connect_lat)
        connect_errors.update(r.connect_errors)
        errors.update(r.errors)
        total.tokens += r.tokens
        total.frames += r.frames
        total.answers += r.answers
        latencies.extend(r.latencies)
        total.ttft.extend(r.ttft)
        total.mismatches += r.mismatches
        total.seq_gaps += r.seq_gaps
        total.dropped += r.dropped
        total.unfinished += r.unfinished
        total.alive += r.alive
        total.marks.extend(r.marks)
        total.resumed += r.resumed
    total.latencies = latencies
    total.connect_errors = dict(connect_errors)
    total.errors = dict(errors)
    return total


def problems(r: LoadResult, expected_clients: int) -> list[str]:
    """Anything that makes a figure suspect, in words."""
    found = []
    if r.clients < expected_clients:
        found.append(f"{expected_clients - r.clients} clients failed to connect {r.connect_errors}")
    if r.errors:
        found.append(f"error frames {r.errors}")
    if r.mismatches:
        found.append(f"{r.mismatches} answers differ from the message")
    if r.seq_gaps:
        found.append(f"{r.seq_gaps} seq gaps")
    if r.dropped:
        found.append(f"{r.dropped} sockets closed by the server")
    if r.unfinished:
        found.append(f"{r.unfinished} answers unfinished at the hard stop")
    return found
