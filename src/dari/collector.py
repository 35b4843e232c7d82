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

    def __init__(self, growth: int, check_s: float = 1.0, count_s: float = 30.0) -> None:
        self.growth = growth
        self.check_s = check_s
        self.count_s = count_s
        self.after_last = 0  # objects the last full collection left in the old generation
        # The old generation's size when it was last counted, the middle collections done by
        # then (gc.get_count()[2]) and when: counting walks it (about 10 ms at 250,000
        # objects of a busy node), so it is counted only when it may have grown enough.
        self._counted = 0
        self._counted_at = 0
        self._counted_when = 0.0
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
        self._count(promotions=0)
        self.after_last = self._counted
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
        promotions = gc.get_count()[2]  # middle collections since the last full one
        if promotions == self._counted_at:
            return False  # nothing reached the old generation since it was counted
        # A middle collection moves at most about what the young generations hold into the
        # old one; while that bound stays short of the line, counting can wait (at most
        # count_s: objects freed from older generations let the young ones hold more).
        young, middle, _old = gc.get_threshold()
        bound = self._counted + (promotions - self._counted_at) * young * (middle + 1)
        due = full_collection_due(bound, self.after_last, self.growth)
        if not due and time.monotonic() - self._counted_when < self.count_s:
            return False
        self._count(promotions)
        if not full_collection_due(self._counted, self.after_last, self.growth):
            return False
        old = self._counted
        began = time.perf_counter()
        collected = gc.collect()
        pause = time.perf_counter() - began
        self._count(promotions=0)
        self.after_last = self._counted
        metrics.FULL_COLLECTION_PAUSE.observe(pause)
        log.debug(
            "full collection: %d objects in the old generation, %d freed, %d kept, %.1f ms",
            old, collected, self.after_last, pause * 1000,
        )  # fmt: skip
        return True

    def _count(self, promotions: int) -> None:
        self._counted = len(gc.get_objects(generation=2))
        self._counted_at = promotions
        self._counted_when = time.monotonic()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            self.check()
