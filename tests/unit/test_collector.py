"""The garbage collector's schedule: full collections by the old generation's growth."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from dari.collector import Collector, full_collection_due


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def gc_state_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


@pytest.mark.parametrize(
    ("old", "after_last", "growth", "due"),
    [
        (249_999, 0, 250_000, False),  # a small heap grows by `growth` first
        (250_000, 0, 250_000, True),
        (349_999, 100_000, 250_000, False),  # +250,000 is further than 2x of 100,000
        (350_000, 100_000, 250_000, True),
        (1_199_999, 600_000, 250_000, False),  # a big heap has to double
        (1_200_000, 600_000, 250_000, True),
    ],
)
def test_a_full_collection_is_due_once_the_old_generation_doubled_and_grew_by_growth(
    old: int, after_last: int, growth: int, due: bool
) -> None:
    assert full_collection_due(old, after_last, growth) is due


def _promote() -> None:
    """Move what the young generations hold into the old one, as their collections do."""
    gc.collect(1)


async def test_garbage_in_the_old_generation_waits_for_growth_then_goes() -> None:
    before = gc.get_threshold()
    collector = Collector(growth=20_000, check_s=3600)
    collector.start()
    try:
        assert gc.get_threshold()[:2] == before[:2]  # the young ones keep their schedule
        assert gc.get_threshold()[2] == 2**31 - 1  # CPython starts no full collection
        assert gc.get_freeze_count() > 0  # what startup made is frozen
        garbage = Node()
        dead = weakref.ref(garbage)
        _promote()  # still live: it moves to the old generation
        del garbage  # garbage now; in the old generation only a full collection frees a cycle
        _promote()
        assert dead() is not None
        assert collector.check() is False  # grown, but by less than `growth`
        kept = [[index] for index in range(25_000)]
        _promote()
        assert collector.check() is True
        assert dead() is None
        assert collector.after_last >= len(kept)  # what is live stays counted
        assert collector.check() is False  # nothing promoted since: not even counted
    finally:
        await collector.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_growth_zero_keeps_cpythons_schedule() -> None:
    before = gc.get_threshold()
    collector = Collector(growth=0)
    collector.start()
    try:
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() > 0
    finally:
        await collector.stop()
    assert gc.get_freeze_count() == 0


async def test_several_servers_in_one_process_hand_cpythons_schedule_back_once_all_stop() -> None:
    before = gc.get_threshold()
    first, second = Collector(growth=20_000, check_s=3600), Collector(growth=20_000, check_s=3600)
    first.start()
    second.start()
    await first.stop()
    assert gc.get_threshold()[2] == 2**31 - 1  # the second still schedules
    await second.stop()
    assert gc.get_threshold() == before


async def test_the_old_generation_is_counted_only_when_it_may_have_grown_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = 0
    walk = gc.get_objects

    def counting(generation: int | None = None) -> list[object]:
        nonlocal counts
        counts += 1
        return walk(generation)

    monkeypatch.setattr(gc, "get_objects", counting)
    patient = Collector(growth=10**9, check_s=3600, count_s=3600)
    patient.start()
    try:
        started = counts
        for _ in range(5):
            _promote()
            assert patient.check() is False
        assert counts == started  # five middle collections cannot add 10**9 objects
    finally:
        await patient.stop()
    eager = Collector(growth=10**9, check_s=3600, count_s=0)
    eager.start()
    try:
        started = counts
        assert eager.check() is False  # nothing promoted since it started: nothing to count
        _promote()
        assert eager.check() is False
        assert counts == started + 1  # counted anyway once count_s has passed
    finally:
        await eager.stop()
