"""One node: a FIFO and a worker task per busy conversation, in process memory."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from dari.protocol.frames import ConversationKey, Frame
from dari.runner.answer import AnswerRun
from dari.runner.jobs import DRAIN_UNANSWERED, Job, Outcome
from dari.runner.queue import (
    AnswerResult,
    ClosedState,
    ConversationQueue,
    OrderingLocks,
    QuestionState,
)

if TYPE_CHECKING:
    from dari.runner.runner import Runner

log = logging.getLogger("dari.runner")


@dataclass(eq=False, slots=True)
class _Conversation:
    key: ConversationKey
    waiting: deque[Job] = field(default_factory=deque)
    running: Job | None = None
    worker: asyncio.Task[None] | None = None

    def depth(self) -> int:
        return len(self.waiting) + (1 if self.running else 0)


@dataclass(eq=False, slots=True)
class _Question:
    key: ConversationKey
    future: asyncio.Future[Any]
    state: QuestionState = "pending"
    value: Any = None


# Settled questions remembered (to tell "already answered" from "unknown"), oldest forgotten.
_SETTLED_KEPT = 10_000


class MemoryQueue(ConversationQueue):
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._conversations: dict[ConversationKey, _Conversation] = {}
        self._ordering = OrderingLocks()
        self._questions: OrderedDict[str, _Question] = OrderedDict()
        self._settled = 0

    async def start(self) -> None:
        """A task still ``running`` at start was cut off by the last stop or crash: it is
        failed and reported, so its origin learns it will not complete."""
        runner = self.runner
        for task in await runner.store.running_tasks():
            if task.origin is None:
                await runner.store.finish_task(task.id, "failed", "interrupted by a restart")
                continue
            log.warning("task %s was cut off by the last stop; reporting it failed", task.id)
            outcome = Outcome("error", "", "the gateway restarted while it ran")
            await runner.report_task(task.id, task.agent_name, task.origin, outcome)

    async def close(self) -> None:
        workers = []
        for conversation in self._conversations.values():
            conversation.waiting.clear()
            if conversation.worker is not None:
                conversation.worker.cancel()
                workers.append(conversation.worker)
        if workers:
            await asyncio.wait(workers, timeout=5)

    async def stop_starting(self) -> None:
        """No other node can take them: chats waiting here end now, each with a
        ``shutting_down`` error, ``end`` cancelled and an empty cancelled answer."""
        unstarted: list[Job] = []
        for conversation in self._conversations.values():  # all at once: no worker pops one
            unstarted.extend(conversation.waiting)
            conversation.waiting.clear()
        for job in unstarted:
            await self.runner.end_unstarted(job, DRAIN_UNANSWERED)

    async def hand_over(self, timeout: float) -> None:
        # Nothing is shared; the workers end once their answer is saved.
        workers = [c.worker for c in self._conversations.values() if c.worker is not None]
        if workers:
            await asyncio.wait(workers, timeout=timeout)

    def ordered(self, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        return self._ordering.hold(key)

    async def depth(self, key: ConversationKey) -> int:
        conversation = self._conversations.get(key)
        return conversation.depth() if conversation else 0

    def size(self) -> int:
        return sum(conversation.depth() for conversation in self._conversations.values())

    async def enqueue(self, job: Job) -> int:
        conversation = self._conversations.get(job.key)
        if conversation is None:
            conversation = self._conversations[job.key] = _Conversation(job.key)
        ahead = conversation.depth()
        conversation.waiting.append(job)
        if conversation.worker is None:
            # The first answer's task is made now, not by the worker once it runs: it starts
            # on the loop's next turn instead of the one after (a busy loop's turn is long).
            first = self._start_next(conversation)
            conversation.worker = asyncio.create_task(
                self._work(conversation, first), name=f"dari: queue {job.key}"
            )
        return ahead

    def _start_next(self, conversation: _Conversation) -> Job:
        job = conversation.waiting.popleft()
        conversation.running = job
        job.task = asyncio.create_task(AnswerRun(self.runner, job).run())
        return job

    async def _work(self, conversation: _Conversation, job: Job) -> None:
        """Wait for ``job``'s answer (already started), then run the waiting ones in turn."""
        runner = self.runner
        try:
            while True:
                assert job.task is not None
                outcome: Outcome | None = None
                try:
                    outcome = await job.task
                except asyncio.CancelledError:
                    if runner.closing:
                        raise
                except Exception:
                    log.exception("answer %s crashed", job.request_id)
                finally:
                    conversation.running = None
                if outcome is not None and job.delegated is not None:
                    task = job.delegated
                    runner.spawn(
                        runner.report_task(job.request_id, task.agent_name, task.origin, outcome)
                    )
                if not conversation.waiting:
                    break
                job = self._start_next(conversation)
        finally:
            conversation.worker = None
            if not conversation.waiting and conversation.running is None:
                self._conversations.pop(conversation.key, None)

    def _jobs(self) -> list[tuple[_Conversation, Job]]:
        return [
            (c, job)
            for c in self._conversations.values()
            for job in ([c.running] if c.running else []) + list(c.waiting)
        ]

    async def locate(self, request_id: str, user_id: str) -> ConversationKey | None:
        for _conversation, job in self._jobs():
            if job.request_id == request_id and job.user_id == user_id:
                return job.key
        return None

    async def cancel_request(self, request_id: str, user_id: str) -> bool:
        for conversation, job in self._jobs():
            if job.request_id != request_id or job.user_id != user_id:
                continue
            if job is conversation.running:
                self.runner.cancel_job(job)
            else:
                conversation.waiting.remove(job)
                await self.runner.end_unstarted(job)
            return True
        return False

    async def cancel_conversation(self, key: ConversationKey) -> int:
        conversation = self._conversations.get(key)
        if conversation is None:
            return 0
        count = 0
        unstarted = list(conversation.waiting)
        conversation.waiting.clear()
        if conversation.running is not None:
            self.runner.cancel_job(conversation.running)
            count += 1
        for job in unstarted:
            await self.runner.end_unstarted(job)
        return count + len(unstarted)

    async def begun(self, job: Job, message_id: int) -> None:
        return None  # no other node can take the answer over

    async def claim_end(self, job: Job) -> bool:
        return True  # only this node ever ends its answers

    async def publish_end(self, job: Job, frame: Frame) -> None:
        await self.runner.hub.publish(job.key, frame)

    def running_here(self) -> list[Job]:
        return [c.running for c in self._conversations.values() if c.running is not None]

    # --- questions -----------------------------------------------------------------------------

    async def ask(self, job: Job, interrupt_id: str, timeout_s: float) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._questions[interrupt_id] = _Question(job.key, future)
        return future

    async def question(self, interrupt_id: str) -> ConversationKey | None:
        found = self._questions.get(interrupt_id)
        return found.key if found is not None else None

    async def answer(self, interrupt_id: str, value: Any) -> AnswerResult:
        found = self._questions.get(interrupt_id)
        if found is None:
            return "unknown"
        if found.state != "pending":
            return cast(AnswerResult, found.state)
        self._close(interrupt_id, found, "answered", value)
        if not found.future.done():
            found.future.set_result(value)
        return "accepted"

    async def settle(self, interrupt_id: str, state: ClosedState) -> tuple[bool, Any]:
        found = self._questions.get(interrupt_id)
        if found is None:
            return False, None
        if found.state == "answered":
            return True, found.value
        if found.state == "pending":
            self._close(interrupt_id, found, state)
        return False, None

    def _close(
        self, interrupt_id: str, found: _Question, state: QuestionState, value: Any = None
    ) -> None:
        found.state, found.value = state, value
        self._questions.move_to_end(interrupt_id)
        self._settled += 1
        # Forget the oldest settled ones past the bound; pending ones are never forgotten.
        while self._settled > _SETTLED_KEPT:
            for oldest, item in self._questions.items():
                if item.state != "pending":
                    del self._questions[oldest]
                    self._settled -= 1
                    break
            else:
                break
