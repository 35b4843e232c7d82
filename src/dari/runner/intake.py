"""New chats ahead of answers that keep the event loop busy.

A saturated loop runs every ready task once per turn, and a new chat crosses several turns
before its first frame (the frame is read, the message is stored on the store's thread, the
answer starts, the writer sends). When hundreds of answers stream without pausing (a fast
local model, a cache, the echo agent) each of those turns carries a slice of every one of them,
so the new chat waits for all of them several times over.

So while a chat is being taken in (from its frame until its answer hands over to the agent),
an answer that streamed its last ``limits.yield_every_pieces`` pieces without the loop turning
waits at its yield point instead of taking another slice; it goes on as soon as no chat is
being taken in, or after ``limits.intake_priority_ms`` at most, so it is slowed, never stopped.
Answers that pause by themselves (a model over the network, a paced agent) never wait here.
A chat that takes longer than :data:`LONGEST_INTAKE_S` to be taken in (it waits for its user's
running place, or for a slow store) stops counting then, so it cannot slow the others for long.
"""

from __future__ import annotations

import asyncio

# An answer counts as keeping the loop busy when its last slice of pieces came within this
# long of its previous turn: it never waited for anything in between.
BUSY_SLICE_S = 0.001
LONGEST_INTAKE_S = 1.0


class Intake:
    """A chat being taken in; :meth:`done` once its answer hands over to the agent, or when it
    will not start now (refused, a duplicate, queued behind another answer). Idempotent."""

    __slots__ = ("_expiry", "_priority")

    def __init__(self, priority: IntakePriority, longest_s: float) -> None:
        self._priority: IntakePriority | None = priority
        self._expiry = asyncio.get_running_loop().call_later(longest_s, self.done)

    def done(self) -> None:
        priority, self._priority = self._priority, None
        if priority is not None:
            self._expiry.cancel()
            priority.finished()


class IntakePriority:
    def __init__(self, hold_ms: float, longest_s: float = LONGEST_INTAKE_S) -> None:
        self.hold_s = hold_ms / 1000
        self.longest_s = longest_s
        self.pending = 0  # chats being taken in
        self._open: asyncio.Event | None = None  # cleared while busy answers are held
        self._reopen: asyncio.TimerHandle | None = None

    def begin(self) -> Intake:
        self.pending += 1
        return Intake(self, self.longest_s)

    def finished(self) -> None:
        self.pending -= 1
        if not self.pending and self._open is not None and not self._open.is_set():
            # On the next turn, not now: the answer that just handed over may write its first
            # frame in this turn's callbacks, ahead of the answers held here.
            asyncio.get_running_loop().call_soon(self._open_if_idle)

    async def pause(self, busy: bool) -> None:
        """An answer's yield point: one turn, or (``busy``, while chats are taken in) until
        they are in or the hold has passed."""
        if not (busy and self.pending and self.hold_s):
            await asyncio.sleep(0)
            return
        gate = self._open
        if gate is None:
            gate = self._open = asyncio.Event()
        if gate.is_set() or self._reopen is None:
            gate.clear()
            self._reopen = asyncio.get_running_loop().call_later(self.hold_s, self._open_now)
        await gate.wait()

    def _open_if_idle(self) -> None:
        if not self.pending:
            self._open_now()

    def _open_now(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._open is not None:
            self._open.set()
