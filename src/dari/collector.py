"""When the cyclic garbage collector walks the whole heap.

CPython collects its oldest generation whenever it has grown by a quarter since the last full
collection. A gateway's heap is mostly its connections (about 220 tracked objects each), so
when a thousand clients arrive at once it grows threefold within a second and CPython walks
all of it five or six times on the way: pauses of 50-160 ms on this project's 2-core bench
machine, every socket stopped, measured as first-token p99 (docs/DESIGN.md).

Here the young generations keep CPython's schedule (their pauses stay around a millisecond),
and the old one is collected by a rule of the Go runtime's kind instead: once it holds twice
as many objects as the last full collection left, and at least ``growth`` more. Garbage
waiting in it is thus bounded by what is live (or ``growth`` objects), while a heap that
triples in a burst is walked once afterwards, not six times during it. What startup made is
frozen first (``gc.freeze``): it lives as long as the process and is never walked again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from dari import metrics
from dari.supervise import supervise

log = logging.getLogger("dari.collector")

# CPython compares this with the young collections since the last full one: never reached.
_NEVER = 2**31 - 1
# The collectors scheduling now, and CPython's thresholds from before the first one started.
_scheduling: set[Collector] = set()
_saved: list[tuple[int, int, int]] = []


def full_collection_due(old_objects: int, after_last: int, growth: int) -> bool:
    """True when the old generation has doubled since the last full collection left
    ``after_last`` objects in it, and grown by at least ``growth``."""
    return old_objects >= max(2 * after_last, after_last + growth)


class Collector:
    """Freezes what startup made and schedules full collections by growth (see the module).
    ``growth=0`` keeps CPython's own schedule (the freeze still applies)."""

    def __init__(self, growth: int, check_s: float = 1.0) -> None:
        self.growth = growth
        self.check_s = check_s
        self.after_last = 0  # objects the last full collection left in the old generation
        self._promotions = 0  # gc.get_count()[2] at the last look
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        if self.growth <= 0:
            return
        if not _scheduling:  # the first of the servers in this process (tests run several)
            _saved.append(gc.get_threshold())
            young, middle, _old = gc.get_threshold()
            gc.set_threshold(young, middle, _NEVER)
        _scheduling.add(self)
        self.after_last = len(gc.get_objects(generation=2))
        self._task = supervise(self._watch(), "garbage collection schedule")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        _scheduling.discard(self)
        if not _scheduling and _saved:
            gc.set_threshold(*_saved.pop())
        # An app embedded in a longer-lived process (tests, a host application) hands the
        # frozen objects back, so garbage among them can be collected again.
        gc.unfreeze()

    def check(self) -> bool:
        """Run a full collection if one is due; True if it ran."""
        promotions = gc.get_count()[2]  # middle-generation collections since the last full one
        if promotions == self._promotions:
            return False  # nothing reached the old generation since the last look
        self._promotions = promotions
        # Counting costs about 3.5 ms per 250,000 objects, once a second at most.
        old = len(gc.get_objects(generation=2))
        if not full_collection_due(old, self.after_last, self.growth):
            return False
        began = time.perf_counter()
        collected = gc.collect()
        pause = time.perf_counter() - began
        self.after_last = len(gc.get_objects(generation=2))
        self._promotions = 0
        metrics.FULL_COLLECTION_PAUSE.observe(pause)
        log.debug(
            "full collection: %d objects in the old generation, %d freed, %d kept, %.1f ms",
            old, collected, self.after_last, pause * 1000,
        )  # fmt: skip
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            self.check()
