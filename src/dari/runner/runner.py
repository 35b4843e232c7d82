"""Per-conversation queues: one answer at a time, in arrival order, bounded.

The double-texting policy of each agent decides what a chat does while its conversation is
busy: ``enqueue`` (wait in line), ``interrupt`` (cancel what runs and what waits, then run), or
``reject`` (``queue_full``). Answers run as tasks of their own, so a socket closing never stops
one; only ``cancel`` does.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dari.agents.directory import AgentDirectory
from dari.hub.hub import Hub
from dari.metrics import QUEUE_DEPTH
from dari.protocol import frames
from dari.protocol.errors import DariError, ErrorCode, Unavailable
from dari.protocol.frames import ConversationKey
from dari.runner.answer import AnswerRun
from dari.runner.jobs import Job, Outcome, Progress
from dari.settings import Settings
from dari.stores.base import Store

if TYPE_CHECKING:
    from dari.runner.shared import SharedRunner

log = logging.getLogger("dari.runner")


@dataclass(eq=False, slots=True)
class _Conversation:
    key: ConversationKey
    waiting: deque[Job] = field(default_factory=deque)
    running: Job | None = None
    worker: asyncio.Task[None] | None = None

    def depth(self) -> int:
        return len(self.waiting) + (1 if self.running else 0)


class Runner:
    def __init__(
        self, settings: Settings, hub: Hub, store: Store, directory: AgentDirectory
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.store = store
        self.directory = directory
        self.node_id = settings.effective_node_id
        self.in_progress: dict[tuple[str, str], Progress] = {}  # by (user_id, request_id)
        self._conversations: dict[ConversationKey, _Conversation] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        QUEUE_DEPTH.set_function(self.depth)
        # Several nodes: conversations queue in Redis and run where their lease is held.
        self.shared: SharedRunner | None = None
        if hub.shared is not None:
            from dari.runner.shared import SharedRunner

            self.shared = SharedRunner(self, hub.shared, hub.shared.bus, self.node_id)

    @property
    def closing(self) -> bool:
        return self._closing

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.start()
        else:
            await self._fail_orphaned_tasks()

    async def _fail_orphaned_tasks(self) -> None:
        """One node: a task still ``running`` at start was cut off by the last stop or crash.

        It is failed and reported, so its origin learns it will not complete. (Several nodes:
        the shared runner's reaper does this for a dead node's tasks.)"""
        for task in await self.store.running_tasks():
            if task.origin is None:
                await self.store.finish_task(task.id, "failed", "interrupted by a restart")
                continue
            log.warning("task %s was cut off by the last stop; reporting it failed", task.id)
            outcome = Outcome("error", "", "the gateway restarted while it ran")
            await self.report_task(task.id, task.agent_name, task.origin, outcome)

    def depth(self) -> int:
        """Chats waiting or running, over all conversations."""
        return sum(conversation.depth() for conversation in self._conversations.values())

    # --- submitting ------------------------------------------------------------------------

    def admit(self, key: ConversationKey) -> None:
        """Raise if a new chat for ``key`` cannot be taken now (checked before it is stored)."""
        conversation = self._conversations.get(key)
        self._admit_at_depth(key, conversation.depth() if conversation else 0)

    def _admit_at_depth(self, key: ConversationKey, depth: int) -> None:
        """The agent's policy against ``depth`` chats queued or running before this one."""
        agent = self.directory.get_running(key.project_id, key.agent_name)
        if agent.config.policy == "reject" and depth:
            raise Unavailable(
                "the agent is answering in this conversation; wait or cancel",
                code=ErrorCode.QUEUE_FULL,
            )
        # The first in line runs; up to queue_size more may wait behind it.
        bound = self.settings.limits.queue_size
        if agent.config.policy == "enqueue" and depth > bound:
            raise Unavailable(
                f"too many chats waiting in this conversation (max {bound})",
                code=ErrorCode.QUEUE_FULL,
            )

    async def admission(self, key: ConversationKey) -> None:
        """``admit``, counting the chats queued and running on every node."""
        if self.shared is None:
            self.admit(key)
            return
        self.directory.get_running(key.project_id, key.agent_name)  # before asking Redis
        self._admit_at_depth(key, await self.shared.depth(key))

    async def enqueue(self, job: Job) -> int:
        """``submit``, through the shared queue when there are several nodes."""
        # Delegated tasks (with a callback) have a conversation of their own: they run here.
        if self.shared is None or job.on_done is not None:
            return self.submit(job)
        if self._closing:
            raise DariError("the gateway is shutting down", code=ErrorCode.INTERNAL)
        agent = self.directory.get(job.key.project_id, job.key.agent_name)
        if agent.config.policy == "interrupt":
            await self.shared.cancel_conversation(job.key)
        return await self.shared.enqueue(job)

    def submit(self, job: Job) -> int:
        """Queue ``job``; return how many answers are ahead of it (0: it starts now)."""
        if self._closing:
            raise DariError("the gateway is shutting down", code=ErrorCode.INTERNAL)
        conversation = self._conversations.get(job.key)
        if conversation is None:
            conversation = self._conversations[job.key] = _Conversation(job.key)
        agent = self.directory.get(job.key.project_id, job.key.agent_name)
        if agent.config.policy == "interrupt":
            self._cancel_all(conversation)
        ahead = conversation.depth()
        conversation.waiting.append(job)
        if conversation.worker is None:
            conversation.worker = asyncio.create_task(self._work(conversation))
        return ahead

    async def _work(self, conversation: _Conversation) -> None:
        try:
            while conversation.waiting:
                job = conversation.waiting.popleft()
                conversation.running = job
                run = AnswerRun(self, job)
                job.task = asyncio.create_task(run.run())
                try:
                    outcome = await job.task
                except asyncio.CancelledError:
                    if self._closing:
                        raise
                    continue
                except Exception:
                    log.exception("answer %s crashed", job.request_id)
                    continue
                finally:
                    conversation.running = None
                if job.on_done is not None:
                    self._spawn(job.on_done(outcome))
        finally:
            conversation.worker = None
            if not conversation.waiting and conversation.running is None:
                self._conversations.pop(conversation.key, None)

    # --- cancelling ------------------------------------------------------------------------

    def cancel_job(self, job: Job) -> None:
        self._cancel_job(job)

    async def end_unstarted(self, job: Job) -> None:
        await self._end_unstarted(job)

    async def locate(self, request_id: str, user_id: str) -> ConversationKey | None:
        """The conversation of a user's chat queued or running here or, with several nodes,
        anywhere."""
        job = self.find(request_id, user_id)
        if job is not None:
            return job.key
        return await self.shared.locate(request_id, user_id) if self.shared is not None else None

    async def cancel(self, request_id: str, user_id: str) -> bool:
        if self.cancel_request(request_id, user_id):
            return True
        if self.shared is None:
            return False
        return await self.shared.cancel_request(request_id, user_id)

    async def cancel_in(self, key: ConversationKey) -> int:
        count = self.cancel_conversation(key)
        if self.shared is not None:
            count += await self.shared.cancel_conversation(key)
        return count

    def _cancel_job(self, job: Job) -> None:
        job.cancelled = True
        if job.task is not None and not job.task.done():
            job.task.cancel()

    def _cancel_all(self, conversation: _Conversation) -> int:
        count = 0
        while conversation.waiting:
            job = conversation.waiting.popleft()
            job.cancelled = True
            self._spawn(self._end_unstarted(job))
            count += 1
        if conversation.running is not None:
            self._cancel_job(conversation.running)
            count += 1
        return count

    async def _end_unstarted(self, job: Job) -> None:
        """A queued chat dropped before it started: it still ends, as cancelled, and is saved."""
        message_id = await self.store.begin_answer(job.key, job.request_id, self.node_id)
        await self.store.save_answer(message_id, "", "cancelled", [])
        await self.hub.publish(
            job.key, frames.answer_frame("end", job.key, job.request_id, finish_reason="cancelled")
        )

    def find(self, request_id: str, user_id: str) -> Job | None:
        """``user_id``'s chat ``request_id``, queued or running (ids are chosen per user)."""
        for conversation in self._conversations.values():
            running = conversation.running
            if running and running.request_id == request_id and running.user_id == user_id:
                return running
            for job in conversation.waiting:
                if job.request_id == request_id and job.user_id == user_id:
                    return job
        return None

    def cancel_request(self, request_id: str, user_id: str) -> bool:
        for conversation in self._conversations.values():
            running = conversation.running
            if running and running.request_id == request_id and running.user_id == user_id:
                self._cancel_job(running)
                return True
            for job in conversation.waiting:
                if job.request_id == request_id and job.user_id == user_id:
                    conversation.waiting.remove(job)
                    job.cancelled = True
                    self._spawn(self._end_unstarted(job))
                    return True
        return False

    def cancel_conversation(self, key: ConversationKey) -> int:
        conversation = self._conversations.get(key)
        return self._cancel_all(conversation) if conversation else 0

    # --- delegation ------------------------------------------------------------------------

    async def delegate(self, origin: Job, agent_name: str, task: str) -> str:
        """Run ``task`` on another agent of the origin's project, in the background."""
        project_id = origin.key.project_id
        if agent_name == origin.key.agent_name:
            raise DariError("an agent cannot delegate to itself", code=ErrorCode.BAD_REQUEST)
        source = self.directory.get(project_id, origin.key.agent_name)
        if not source.config.can_delegate:
            raise DariError("this agent may not delegate", code=ErrorCode.FORBIDDEN)
        self.directory.get_running(project_id, agent_name)
        task_id = f"t-{uuid.uuid4().hex[:12]}"
        await self.store.create_task(task_id, project_id, agent_name, task, origin.key)
        key = ConversationKey(project_id, agent_name, f"task-{task_id}")
        await self.store.accept_chat(
            user_id=origin.user_id,
            client_message_id=None,
            request_id=task_id,
            key=key,
            message=task,
            images=[],
        )

        async def report(outcome: Outcome) -> None:
            await self.report_task(task_id, agent_name, origin.key, outcome)

        job = Job(task_id, key, task, [], origin.user_id, on_done=report)
        if self.shared is None:
            self.submit(job)
        else:
            # Under a lease like any answer: if this node dies, another one fails and reports it.
            from dari.runner.shared import DelegatedTask

            await self.shared.enqueue(job, DelegatedTask(agent_name, origin.key))
        return task_id

    async def report_task(
        self, task_id: str, agent_name: str, origin: ConversationKey, outcome: Outcome
    ) -> None:
        ok = outcome.finish_reason == "stop"
        content = (
            outcome.text
            if ok
            else f"[{agent_name}] task failed: {outcome.error or outcome.finish_reason}"
        )
        await self.store.finish_task(task_id, "complete" if ok else "failed", content)
        await self.post_report(origin, content, task_id, agent_name)

    async def post_report(
        self, origin: ConversationKey, content: str, task_id: str, agent_name: str
    ) -> None:
        """Save a report in ``origin``'s history, then tell every client of the project."""
        record = await self.store.add_report(origin, content, task_id, agent_name)
        frame = {
            "type": "auto_report",
            "content": content,
            "task_id": task_id,
            "project_id": origin.project_id,
            "agent_name": agent_name,
            "thread_id": origin.thread_id,
            "origin_agent": origin.agent_name,
            "message_id": record.id,
        }
        await self.hub.publish_project(origin.project_id, frame)

    # --- lifecycle -------------------------------------------------------------------------

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    async def close(self) -> None:
        """Stop every answer; each is saved as failed (interrupted)."""
        self._closing = True
        tasks: list[asyncio.Task[Any]] = []
        for conversation in list(self._conversations.values()):
            conversation.waiting.clear()
            if conversation.running and conversation.running.task:
                conversation.running.task.cancel()
                tasks.append(conversation.running.task)
            if conversation.worker:
                conversation.worker.cancel()
                tasks.append(conversation.worker)
        if self.shared is not None:
            for job in self.shared.current.values():
                if job.task is not None:
                    job.task.cancel()  # saved as failed: the gateway is stopping
                    tasks.append(job.task)
        tasks.extend(self._background)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self.shared is not None:
            await self.shared.close()

    def snapshots(self, keys: set[ConversationKey]) -> list[Progress]:
        return [p for p in self.in_progress.values() if p.key in keys]
