"""The conversation queue interface: where chats wait, in which order, and who runs them.

One answer runs at a time per conversation, in the order its chats were accepted. Chosen once
from the settings (``runner/factory``: ``build_queue``):

- ``MemoryQueue`` (``queue_memory.py``): one node; a FIFO and a worker task per busy
  conversation, in process memory.
- ``RedisQueue`` (``queue_redis.py``): several nodes; one list per conversation in Redis, run
  by whichever node holds the conversation's lease, reaped when a node dies.

The runner (``runner.py``) holds the policies (double-texting, delegation, reports) and is the
same on both.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal

from dari.protocol.frames import ConversationKey, Frame
from dari.runner.jobs import Job

# Where a question an answer asked (an interrupt) stands. ``unknown``: never asked, or
# forgotten (a day after it was settled).
QuestionState = Literal["pending", "answered", "cancelled", "expired", "unknown"]
ClosedState = Literal["cancelled", "expired"]
# What a ``resume`` found: ``accepted`` (this call answered it), or the state it was in.
AnswerResult = Literal["accepted", "answered", "cancelled", "expired", "unknown"]


class ConversationQueue(ABC):
    # Whether chats this node does not run are run by other nodes (a drain then keeps
    # accepting them) or by nobody (a drain refuses them).
    hands_over: bool = False
    # Whether ``begun`` must have the answer's row before the agent starts (a reaper on
    # another node saves a dead node's answer into it); on one node the agent starts at once.
    begins_with_row: bool = False

    @abstractmethod
    async def start(self) -> None:
        """Take up what the last stop or a dead node left (orphaned tasks, expired leases)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop starting answers; the runner has cancelled the running ones."""

    @abstractmethod
    async def stop_starting(self) -> None:
        """A drain began (``runner.draining`` is set): start no new answer on this node; the
        running ones go on."""

    @abstractmethod
    async def hand_over(self, timeout: float) -> None:
        """A drain's answers have ended and are saved: let go of what this node holds, within
        ``timeout``, so that other nodes run its conversations now."""

    @abstractmethod
    def ordered(self, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        """The conversation's ordering point. Accepting a chat (saving the user's message)
        and queuing it happen under it, so history order is run order on every engine."""

    @abstractmethod
    async def depth(self, key: ConversationKey) -> int:
        """Chats queued or running in ``key``, on every node."""

    @abstractmethod
    async def enqueue(self, job: Job) -> int:
        """Queue ``job``; return how many answers are ahead of it (0: it starts now)."""

    @abstractmethod
    async def locate(self, request_id: str, user_id: str) -> ConversationKey | None:
        """The conversation of ``user_id``'s chat ``request_id``, queued or running anywhere."""

    @abstractmethod
    async def cancel_request(self, request_id: str, user_id: str) -> bool: ...

    @abstractmethod
    async def cancel_conversation(self, key: ConversationKey) -> int:
        """Cancel what runs and what waits in ``key``; returns how many chats."""

    @abstractmethod
    def running_here(self) -> list[Job]:
        """Jobs whose answers run on this node now."""

    @abstractmethod
    def size(self) -> int:
        """Chats waiting or running on this node (the queue depth gauge)."""

    @abstractmethod
    async def begun(self, job: Job, message_id: int) -> None:
        """The answer's row exists (a reaper on another node may now save what it streamed)."""

    @abstractmethod
    async def claim_end(self, job: Job) -> bool:
        """Whether the caller ends the answer (saves it and sends ``end``): exactly once, even
        if a reaper on another node took the answer for dead."""

    @abstractmethod
    async def publish_end(self, job: Job, frame: Frame) -> None:
        """Log the ``end`` of ``job``'s answer (after claim_end). On several nodes it is logged
        only while the caller still holds the end, and in the same step the answer stops being
        the conversation's running one; a node that died after claiming the end (before its
        ``end`` was logged) is thus taken over by a reaper, and ended once."""

    # --- questions (interrupts): a paused answer waits here for its answer ---------------------

    @abstractmethod
    async def ask(self, job: Job, interrupt_id: str, timeout_s: float) -> asyncio.Future[Any]:
        """Record a question of ``job``'s answer, which runs on this node and keeps holding its
        conversation, so that a ``resume`` arriving at any node finds it. The future resolves
        with the value when it is answered (:meth:`answer`, on any node)."""

    @abstractmethod
    async def question(self, interrupt_id: str) -> ConversationKey | None:
        """The conversation the question was asked in (pending or settled); None if unknown."""

    @abstractmethod
    async def answer(self, interrupt_id: str, value: Any) -> AnswerResult:
        """Answer a pending question, once: ``"accepted"`` when this call answered it (the
        value then reaches the waiting answer, wherever it runs); otherwise the state it was
        already in (``answered`` by someone else, ``cancelled``, ``expired``, ``unknown``)."""

    @abstractmethod
    async def settle(self, interrupt_id: str, state: ClosedState) -> tuple[bool, Any]:
        """The asking answer stops waiting (cancelled, or the question expired): close the
        question as ``state``, unless it was answered meanwhile: then ``(True, value)``."""


class OrderingLocks:
    """One asyncio lock per conversation, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[ConversationKey, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: ConversationKey) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
