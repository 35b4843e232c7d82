"""Reconnect delays: exponential growth with full jitter, capped."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(
    initial: float = 0.2,
    factor: float = 2.0,
    maximum: float = 10.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Delays before successive reconnect attempts: uniform in [0, min(maximum, initial·factorⁿ)].

    Full jitter spreads a crowd of clients that lost the same server over the whole window.
    """
    rng = rng or random.Random()
    ceiling = initial
    while True:
        yield rng.uniform(0, ceiling)
        ceiling = min(maximum, ceiling * factor)
