"""Scenarios: each module measures one thing for one target and describes its table.

A scenario module exposes ``NAME``, ``table(cfg) -> Table`` (title, method, metrics) and
``measure(target, cfg) -> Measured`` (values, notes, and which values were noisy).
Register it in ``SCENARIOS`` below.
"""

from __future__ import annotations

from types import ModuleType

from scenarios import (
    burst,
    capacity,
    chaos,
    cluster,
    fanout,
    idle,
    relay,
    replay,
    storm,
    streaming,
)

ORDER = (streaming, burst, idle, capacity, relay, fanout, replay, storm, chaos, cluster)
SCENARIOS: dict[str, ModuleType] = {m.NAME: m for m in ORDER}
