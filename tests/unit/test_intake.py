"""Intake priority: answers that keep the loop busy wait while new chats are taken in."""

from __future__ import annotations

import asyncio

from dari.runner.intake import IntakePriority

TIMEOUT = 5.0


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_busy_answer_waits_until_the_chat_is_taken_in() -> None:
    priority = IntakePriority(hold_ms=60_000)
    intake = priority.begin()
    held = asyncio.create_task(priority.pause(busy=True))
    await _turns(20)
    assert not held.done()
    intake.done()
    await asyncio.wait_for(held, TIMEOUT)
    assert priority.pending == 0


async def test_answers_that_pause_by_themselves_never_wait() -> None:
    priority = IntakePriority(hold_ms=60_000)
    priority.begin()
    await asyncio.wait_for(priority.pause(busy=False), TIMEOUT)


async def test_nobody_waits_without_a_chat_being_taken_in_or_with_priority_off() -> None:
    await asyncio.wait_for(IntakePriority(hold_ms=60_000).pause(busy=True), TIMEOUT)
    off = IntakePriority(hold_ms=0)
    off.begin()
    await asyncio.wait_for(off.pause(busy=True), TIMEOUT)


async def test_the_hold_bounds_the_wait_when_a_chat_takes_long() -> None:
    priority = IntakePriority(hold_ms=20)
    priority.begin()  # never done
    for _ in range(3):  # slowed, never stopped
        await asyncio.wait_for(priority.pause(busy=True), TIMEOUT)
    assert priority.pending == 1


async def test_the_gate_opens_a_turn_later_so_the_first_frame_goes_first() -> None:
    priority = IntakePriority(hold_ms=60_000)
    intake = priority.begin()
    order: list[str] = []

    async def busy_answer() -> None:
        await priority.pause(busy=True)
        order.append("held answer")

    held = asyncio.create_task(busy_answer())
    await _turns(3)
    intake.done()
    # What the answer that just started schedules now (its writer) runs before the held ones.
    asyncio.get_running_loop().call_soon(order.append, "first frame")
    await asyncio.wait_for(held, TIMEOUT)
    assert order == ["first frame", "held answer"]


async def test_done_counts_once_and_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    priority = IntakePriority(hold_ms=60_000)
    intake = priority.begin()
    first = asyncio.create_task(priority.pause(busy=True))
    second = asyncio.create_task(priority.pause(busy=True))
    await _turns(3)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await _turns(3)
    assert not second.done()
    intake.done()
    intake.done()
    assert priority.pending == 0
    await asyncio.wait_for(second, TIMEOUT)
    assert first.cancelled()


async def test_a_chat_that_takes_long_to_be_taken_in_stops_counting() -> None:
    priority = IntakePriority(hold_ms=60_000, longest_s=0.05)
    priority.begin()  # e.g. waiting for its user's running place
    await asyncio.wait_for(priority.pause(busy=True), TIMEOUT)
    assert priority.pending == 0
