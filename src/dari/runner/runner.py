"""The runner: double-texting policies, cancellation, delegation and reports.

Where chats wait and which node runs them is the ``ConversationQueue``'s (``runner/queue.py``),
chosen once from the settings; everything here is the same on one node and on many. The
double-texting policy of each agent decides what a chat does while its conversation is busy:
``enqueue`` (wait in line), ``interrupt`` (cancel what runs and what waits, then run), or
``reject`` (``queue_full``). Answers run as tasks of their own, so a socket closing never stops
one; only ``cancel`` does.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

from dari.agents.directory import AgentDirectory
from dari.hub.hub import Audience, Hub
from dari.metrics import QUEUE_DEPTH
from dari.protocol import frames
from dari.protocol.errors import (
    AccessError,
    AlreadyAnswered,
    DariError,
    ErrorCode,
    LookupFailed,
    QueueFull,
    ShuttingDown,
    Unavailable,
)
from dari.protocol.frames import ConversationKey
from dari.runner.intake import IntakePriority
from dari.runner.jobs import DRAIN_REFUSED, DRAIN_UNANSWERED, DelegatedTask, Job, Outcome
from dari.runner.queue import ConversationQueue
from dari.runner.quota import UserQuotas
from dari.settings import Settings
from dari.stores.base import Store
from dari.supervise import supervise

log = logging.getLogger("dari.runner")
# How long a drain waits for cut answers to be saved, and for leases to be let go.
_SAVE_TIMEOUT_S = 10.0


class Runner:
    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        store: Store,
        directory: AgentDirectory,
        make_queue: Callable[[Runner], ConversationQueue],
        quotas: UserQuotas,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.store = store
        self.directory = directory
        self.node_id = settings.effective_node_id
        self.queue = make_queue(self)  # memory or Redis: see app/gateway.py
        # Per-user caps on waiting and running chats (memory or Redis, like the queue); with
        # auth.mode = "none" everyone is one local user, so they do not apply.
        self.quotas = quotas
        self.fair_use = settings.auth.mode != "none"
        # New chats ahead of answers that keep the loop busy (runner/intake.py).
        self.intake = IntakePriority(settings.limits.intake_priority_ms)
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._draining = False
        # Which clients get a conversation's reports (set by the gateway: a private
        # conversation's owner's); None: every client of the project who may see it.
        self.audience: Callable[[ConversationKey], Awaitable[Audience | None]] | None = None
        QUEUE_DEPTH.set_function(self.queue.size)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def draining(self) -> bool:
        """SIGTERM came: no new answer starts on this node (see ``drain``)."""
        return self._draining

    def _refuse_while_draining(self) -> None:
        # Several nodes take this node's chats from the shared queue; one node cannot.
        if self._draining and not self.queue.hands_over:
            raise ShuttingDown(DRAIN_REFUSED)

    async def start(self) -> None:
        await self.queue.start()

    # --- submitting ------------------------------------------------------------------------

    def ordered(self, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        """Hold ``key``'s ordering point while accepting and queuing a chat."""
        return self.queue.ordered(key)

    async def admission(self, key: ConversationKey, user_id: str | None = None) -> str | None:
        """Raise if a new chat for ``key`` cannot be taken now (checked before it is stored),
        counting the chats queued and running on every node; with ``user_id``, also the
        user's chats waiting anywhere. Returns the user's ticket for the chat (``Job.ticket``),
        which the caller gives back (``release``) if the chat is not queued after all."""
        await self._conversation_admission(key)
        return await self.admit_user(user_id)

    async def admit_user(self, user_id: str | None) -> str | None:
        """A ticket counting one more waiting chat of the user; ``queue_full`` past
        ``limits.max_queued_per_user``."""
        if user_id is None or not self.fair_use:
            return None
        ticket = uuid.uuid4().hex
        if not await self.quotas.admit(user_id, ticket):
            bound = self.settings.limits.max_queued_per_user
            raise QueueFull(
                f"too many of your chats are waiting (max {bound}); "
                "wait for one of your answers to end"
            )
        return ticket

    async def release(self, user_id: str, ticket: str | None) -> None:
        """Give back a chat's ticket (it ended, or was never queued). Never raises: a count
        that cannot be given back now expires by itself."""
        if ticket is None:
            return
        try:
            await self.quotas.release(user_id, ticket)
        except DariError as exc:
            log.warning("cannot give back a place of %s now (%s)", user_id, exc.message)

    async def _conversation_admission(self, key: ConversationKey) -> None:
        self._refuse_while_draining()
        agent = self.directory.get_running(key.project_id, key.agent_name)
        policy = agent.config.policy
        if policy == "interrupt":
            return  # whatever runs or waits will be cancelled
        depth = await self.queue.depth(key)
        if policy == "reject" and depth:
            raise Unavailable(
                "the agent is answering in this conversation; wait or cancel",
                code=ErrorCode.QUEUE_FULL,
            )
        # The first in line runs; up to queue_size more may wait behind it.
        bound = self.settings.limits.queue_size
        if depth > bound:
            raise Unavailable(
                f"too many chats waiting in this conversation (max {bound})",
                code=ErrorCode.QUEUE_FULL,
            )

    async def enqueue(self, job: Job) -> int:
        """Queue ``job``; return how many answers are ahead of it (0: it starts now)."""
        if self._closing:
            raise ShuttingDown(DRAIN_REFUSED)
        if self._draining and not self.queue.hands_over:
            # Admitted just before the drain began; its message is saved, so it ends here.
            await self.end_unstarted(job, DRAIN_UNANSWERED)
            return 0
        agent = self.directory.get(job.key.project_id, job.key.agent_name)
        if agent.config.policy == "interrupt":
            await self.queue.cancel_conversation(job.key)
        return await self.queue.enqueue(job)

    # --- cancelling ------------------------------------------------------------------------

    def cancel_job(self, job: Job, reason: str | None = None) -> None:
        """Cancel a job whose answer runs on this node; ``reason``: the gateway's, not a user's."""
        job.cancelled = True
        job.stop_reason = reason
        if job.task is not None and not job.task.done():
            job.task.cancel()

    async def end_unstarted(self, job: Job, reason: str | None = None) -> None:
        """A queued chat dropped before it started: it still ends, as cancelled, and is saved;
        with ``reason`` (a drain), a ``shutting_down`` error says why first."""
        job.cancelled = True
        await self.release(job.user_id, job.ticket)
        message_id = await self.store.begin_answer(job.key, job.request_id, self.node_id)
        await self.store.save_answer(message_id, "", "cancelled", [])
        if reason is not None:
            error = frames.error(ErrorCode.SHUTTING_DOWN, reason, job.request_id)
            await self.hub.publish(job.key, {**error, **job.key.fields()})
        await self.queue.publish_end(
            job, frames.answer_frame("end", job.key, job.request_id, finish_reason="cancelled")
        )

    async def locate(self, request_id: str, user_id: str) -> ConversationKey | None:
        """The conversation of a user's chat queued or running on any node."""
        return await self.queue.locate(request_id, user_id)

    async def cancel(self, request_id: str, user_id: str) -> bool:
        return await self.queue.cancel_request(request_id, user_id)

    async def cancel_in(self, key: ConversationKey) -> int:
        return await self.queue.cancel_conversation(key)

    # --- questions (interrupts) -------------------------------------------------------------

    async def question(self, interrupt_id: str) -> ConversationKey | None:
        """The conversation an agent's question was asked in, on any node (None: unknown)."""
        return await self.queue.question(interrupt_id)

    async def answer(self, interrupt_id: str, value: Any) -> None:
        """Answer a question once; the paused answer goes on wherever it runs. Raises
        ``already_answered``, or ``not_found`` for one that was cancelled, expired or is
        unknown."""
        state = await self.queue.answer(interrupt_id, value)
        if state == "accepted":
            return
        if state == "answered":
            raise AlreadyAnswered("this question was already answered (in another tab?)")
        if state == "unknown":
            raise LookupFailed("no such question is waiting for an answer")
        raise LookupFailed(f"this question was {state}: the answer that asked it has ended")

    # --- delegation ------------------------------------------------------------------------

    async def delegate(self, origin: Job, agent_name: str, task: str) -> str:
        """Run ``task`` on another agent of the origin's project, in the background."""
        project_id = origin.key.project_id
        # The user's own right to the target: a user allowed only one agent must not get
        # another's work through it (this covers /delegate and the models' delegation tool).
        if origin.principal is None or not origin.principal.can_use(project_id, agent_name):
            raise AccessError(f"no access to {project_id}/{agent_name}", code=ErrorCode.FORBIDDEN)
        if agent_name == origin.key.agent_name:
            raise DariError("an agent cannot delegate to itself", code=ErrorCode.BAD_REQUEST)
        source = self.directory.get(project_id, origin.key.agent_name)
        if not source.config.can_delegate:
            raise DariError("this agent may not delegate", code=ErrorCode.FORBIDDEN)
        self.directory.get_running(project_id, agent_name)
        self._refuse_while_draining()
        # A task is one more chat of the user's: it waits for a running place like theirs.
        ticket = await self.admit_user(origin.user_id)
        task_id = f"t-{uuid.uuid4().hex[:12]}"
        key = ConversationKey(project_id, agent_name, f"task-{task_id}")
        try:
            await self.store.create_task(task_id, project_id, agent_name, task, origin.key)
            await self.store.accept_chat(
                user_id=origin.user_id,
                client_message_id=None,
                request_id=task_id,
                key=key,
                message=task,
                images=[],
            )
        except BaseException:
            await self.release(origin.user_id, ticket)
            raise
        # Queued like any chat (its conversation is new, so it starts at once): under a lease
        # on several nodes, so if this node dies another one fails it and reports that.
        job = Job(
            task_id, key, task, [], origin.user_id, delegated=DelegatedTask(agent_name, origin.key)
        )
        job.principal = origin.principal  # a task delegates further with the same rights
        job.ticket = ticket
        await self.queue.enqueue(job)
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
        """Save a report in ``origin``'s history, then tell the clients of the project who may
        see that conversation (its owner's, unless it is shared)."""
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
        audience = await self.audience(origin) if self.audience is not None else None
        await self.hub.publish_project(origin.project_id, frame, audience)

    # --- lifecycle -------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background; stopping waits for it, failures are logged."""
        task = supervise(coro, "runner background work")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, wait_s: float, hurry: asyncio.Event) -> None:
        """SIGTERM: start nothing new here; give the answers running here up to ``wait_s``
        (less once ``hurry`` is set: a second signal) to finish, then cancel them with a
        ``shutting_down`` error and wait until they are saved; then let go of what this node
        holds, so that other nodes run its conversations at once."""
        self._draining = True
        await self.queue.stop_starting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        hurried = asyncio.ensure_future(hurry.wait())
        try:
            while not hurry.is_set() and (left := deadline - loop.time()) > 0:
                running = self._running_tasks()
                if not running:
                    break
                await asyncio.wait(
                    {*running, hurried}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            hurried.cancel()
        reason = (
            f"the gateway is shutting down: node {self.node_id} stopped this answer "
            f"after waiting {wait_s:g} s for it"
        )
        for job in self.queue.running_here():
            log.warning("draining: cutting answer %s in %s", job.request_id, job.key)
            self.cancel_job(job, reason)
        running = self._running_tasks()
        if running:
            await asyncio.wait(running, timeout=_SAVE_TIMEOUT_S)
        await self.queue.hand_over(_SAVE_TIMEOUT_S)
        if self._background:  # reports of tasks that ended meanwhile
            await asyncio.wait(set(self._background), timeout=_SAVE_TIMEOUT_S)

    def _running_tasks(self) -> set[asyncio.Task[Any]]:
        jobs = self.queue.running_here()
        return {job.task for job in jobs if job.task is not None and not job.task.done()}

    async def close(self) -> None:
        """Stop every answer running here; each is saved as failed (interrupted)."""
        self._closing = True
        tasks: list[asyncio.Task[Any]] = []
        for job in self.queue.running_here():
            if job.task is not None:
                job.task.cancel()
                tasks.append(job.task)
        await self.queue.close()
        tasks.extend(self._background)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
