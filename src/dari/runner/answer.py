"""One answer from start to end: stream the agent, relay pieces, checkpoint, save, report.

Frames go to every client subscribed to the conversation as soon as the agent yields them. The
answer is saved on a timer while it streams (never once per piece) and for good when it ends,
with status complete, cancelled or failed and exactly the text that was relayed. The model's
reasoning goes out as ``reasoning`` frames and is saved apart from the text; its usage (summed
over the answer's model calls) and how it ended (``length``, ``content_filter``) reach the
``end`` frame, the saved answer and the metrics. Tool calls go out as ``tool`` frames, each
carrying the call's whole state so far, and are saved with the answer (``tools``).

An agent's question (``ctx.interrupt``) pauses the answer: an ``interrupt`` frame, the answer
saved ``interrupted`` with the question, and the task waits (keeping its conversation, the
answer timeout stopped) until a ``resume`` answers it on any node, a ``cancel`` ends it, or the
agent's ``interrupt_timeout_s`` passes (``interrupt_expired``). Each change of the question's
state is an ``interrupt`` frame with the whole question, saved with the answer (``interrupts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from dari.agents.base import (
    AgentEvent,
    AgentRequest,
    Finish,
    HistoryMessage,
    Reasoning,
    Step,
    ToolUpdate,
    Usage,
)
from dari.metrics import ANSWER_DURATION, FIRST_TOKEN, MODEL_TOKENS, TOKENS
from dari.protocol import frames
from dari.protocol.errors import DariError, ErrorCode, QuestionExpired, StoreUnavailable
from dari.runner.context import RunContext
from dari.runner.intake import BUSY_SLICE_S
from dari.runner.jobs import FinishReason, Job, Outcome, Progress

if TYPE_CHECKING:
    from dari.runner.runner import Runner
    from dari.stores.base import Status

log = logging.getLogger("dari.runner")

_STATUS: dict[FinishReason, Status] = {
    "stop": "complete",
    "length": "complete",  # complete as the model left it; finish_reason says it was cut
    "content_filter": "complete",
    "cancelled": "cancelled",
    "error": "failed",
}


_UNFINISHED = frozenset({"streaming", "interrupted"})  # answers still running: not history


class AnswerRun:
    def __init__(self, runner: Runner, job: Job) -> None:
        self.runner = runner
        self.job = job
        self.progress = Progress(job.request_id, job.key)
        self._row: asyncio.Future[int] | None = None
        self._deadline: asyncio.Timeout | None = None  # the answer's timeout, paused by questions
        self._finishing = False  # the checkpoints stop (a cancel alone can be lost in a driver)
        self._failure_told = False  # an `error` frame for this answer went out
        # How long the answer's pieces may wait for more before sockets send them (merged
        # in the unsent tail): the agent's stream_gather_ms.
        self._gather_s = 0.0

    async def emit_step(self, step: Step) -> None:
        wire = step.to_wire()
        self.progress.steps.append(wire)
        await self.runner.hub.publish(
            self.job.key, frames.answer_frame("step", self.job.key, self.job.request_id, **wire)
        )

    async def run(self) -> Outcome:
        """Wait for the user's turn (``limits.max_running_per_user``), then answer. However it
        ends, the user's place is given back."""
        try:
            if not await self._turn():
                return Outcome("cancelled", "")
            return await self._answer()
        finally:
            await self.runner.release(self.job.user_id, self.job.ticket)

    def _taken_in(self) -> None:
        if self.job.intake is not None:
            self.job.intake.done()
            self.job.intake = None

    async def _turn(self) -> bool:
        """Wait until the user has a running place free; False when the chat was cancelled
        meanwhile (then it ends as a queued chat does: ``end`` cancelled, no ``start``)."""
        runner, job = self.runner, self.job
        if job.ticket is None:
            return True
        try:
            await runner.quotas.wait_start(job.user_id, job.ticket)
        except asyncio.CancelledError:
            if not job.cancelled:
                raise  # the node stops
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if await runner.queue.claim_end(job):
                await runner.end_unstarted(job, job.stop_reason)
            return False
        except DariError as exc:
            # The shared counts are unreachable: answer anyway rather than never.
            log.warning("cannot count %s's running answers (%s)", job.user_id, exc.message)
        return True

    async def _answer(self) -> Outcome:
        runner, job, key = self.runner, self.job, self.job.key
        hub, store = runner.hub, runner.store
        rid = job.request_id
        began = time.monotonic()
        await hub.delivery.answer_began(self.progress)
        row: asyncio.Future[int] | None = None
        checkpoint: asyncio.Task[None] | None = None
        finish: FinishReason = "stop"
        error: DariError | None = None
        try:
            # The row's place in history is fixed first (even if `start` cannot be logged, the
            # answer is saved, failed, so a resent chat is known as answered and not run again);
            # the agent starts without waiting for the write (the first checkpoint and the
            # final save wait for it).
            row = self._row = store.begin_answer(key, rid, runner.node_id)
            await hub.publish(key, frames.answer_frame("start", key, rid))
            if runner.queue.begins_with_row:
                # Another node's reaper must be able to fail this row if this node dies.
                await runner.queue.begun(job, await asyncio.shield(row))
            checkpoint = asyncio.create_task(self._checkpoint(row))
            agent = runner.directory.get(key.project_id, key.agent_name)
            history_limit = agent.config.history_limit if agent.backend.uses_history else 0
            self._gather_s = agent.config.stream_gather_ms / 1000
            request = await self._request(history_limit)
            self._taken_in()  # the gateway's part of starting is done; the agent's begins
            await self._stream(agent.backend.stream(request, RunContext(self)))
            finish = self.progress.finish
        except asyncio.CancelledError:
            if not job.cancelled:
                # The gateway is shutting down: save what we have as failed, then stop.
                finish = "error"
                await self._finish(row, checkpoint, finish)
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            finish = "cancelled"
            if job.stop_reason is not None:  # cut by a drain: say why before `end`
                error = DariError(job.stop_reason, code=ErrorCode.SHUTTING_DOWN)
        except DariError as exc:
            finish, error = "error", exc
        except TimeoutError:
            finish = "error"
            error = DariError("the agent took too long", code=ErrorCode.AGENT_FAILED)
        except Exception as exc:
            log.exception("agent %s failed on %s", key, rid)
            finish = "error"
            error = DariError(
                f"the agent failed: {type(exc).__name__}", code=ErrorCode.AGENT_FAILED
            )
        if error is not None:
            code = error.code if error.code != ErrorCode.INTERNAL else ErrorCode.AGENT_FAILED
            try:
                await hub.publish(key, {**frames.error(code, error.message, rid), **key.fields()})
                self._failure_told = True
            except DariError as exc:
                # The shared log is unreachable (Redis away): still save what was said.
                log.warning("cannot tell %s's subscribers it failed: %s", rid, exc.message)
        outcome = Outcome(
            finish, self.progress.text(), error.message if error else None, self.progress.usage
        )
        ANSWER_DURATION.labels(key.agent_name, finish).observe(time.monotonic() - began)
        await self._finish(row, checkpoint, finish)
        return outcome

    async def _request(self, history_limit: int | None) -> AgentRequest:
        job, key = self.job, self.job.key
        limit = (
            self.runner.settings.limits.history_limit if history_limit is None else history_limit
        )
        # The current exchange is already stored; leave it out of the history.
        records = await self.runner.store.history(key, limit + 2) if limit else []
        history = (
            [
                HistoryMessage(r.role, r.content, r.images)
                for r in records
                if r.request_id != job.request_id and r.status not in _UNFINISHED
            ][-limit:]
            if limit
            else []
        )
        return AgentRequest(
            message=job.message,
            images=job.images,
            history=history,
            project_id=key.project_id,
            agent_name=key.agent_name,
            thread_id=key.thread_id,
            request_id=job.request_id,
            user_id=job.user_id,
            scope=key.scope,
        )

    async def _stream(self, events: AsyncIterator[AgentEvent]) -> None:
        hub, key, rid = self.runner.hub, self.job.key, self.job.request_id
        pieces = self.progress.pieces
        tokens = TOKENS.labels(key.agent_name)
        started = time.monotonic()
        yield_every = self.runner.settings.limits.yield_every_pieces
        intake = self.runner.intake
        gather_s = self._gather_s
        loop = asyncio.get_running_loop()
        resumed = loop.time()
        try:
            async with asyncio.timeout(self.runner.settings.limits.answer_timeout_s) as deadline:
                self._deadline = deadline
                async for event in events:
                    if isinstance(event, str):
                        if not event:
                            continue
                        if "\x00" in event:  # unstorable in PostgreSQL: same text everywhere
                            event = event.replace("\x00", "\ufffd")
                        if not pieces:
                            FIRST_TOKEN.labels(key.agent_name).observe(time.monotonic() - started)
                            self.progress.first_said.set()
                        # Counted as said before it is published: a cancel arriving while it
                        # is published (a drain, a stop) does not stop it from reaching the
                        # log, so it must be saved too. A piece the shared log refused (Redis
                        # away) is neither sent nor saved.
                        pieces.append(event)
                        try:
                            await hub.publish(
                                key,
                                frames.answer_frame("response", key, rid, content=event),
                                rid,
                                gather_s,
                            )
                        except DariError:
                            pieces.pop()
                            raise
                        tokens.inc()
                        if yield_every and len(pieces) % yield_every == 0:
                            # A backend that never really awaits would otherwise hog the loop;
                            # while new chats are taken in, such an answer waits for them.
                            await intake.pause(loop.time() - resumed < BUSY_SLICE_S)
                            resumed = loop.time()
                    elif isinstance(event, Step):
                        await self.emit_step(event)
                    else:
                        await self._note(event)
        finally:
            # Close the backend's generator now, so upstream requests end with the answer.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def ask(self, payload: dict[str, Any]) -> Any:
        """Put the agent's question to the conversation and wait for its answer (see the
        module's doc); the value a ``resume`` gave."""
        _check_question(payload)
        runner, job = self.runner, self.job
        agent = runner.directory.get(job.key.project_id, job.key.agent_name).config
        timeout_s = agent.interrupt_timeout_s
        interrupt_id = f"i-{uuid.uuid4().hex}"
        expires = datetime.fromtimestamp(time.time() + timeout_s, UTC)
        question: dict[str, Any] = {
            "interrupt_id": interrupt_id,
            "payload": payload,
            "expires_at": expires.isoformat(),
            "state": "pending",
        }
        answered = await runner.queue.ask(job, interrupt_id, timeout_s)
        loop = asyncio.get_running_loop()
        paused_at, deadline = loop.time(), self._deadline
        resume_by = deadline.when() if deadline is not None else None
        if deadline is not None:
            deadline.reschedule(None)  # waiting for people is not the agent taking too long
        try:
            # Inside the try: a cancel may come as soon as the question is out.
            await self._question(question, "interrupted")
            done, _ = await asyncio.wait({answered}, timeout=timeout_s)
            if done:
                value = answered.result()
            else:
                was_answered, value = await runner.queue.settle(interrupt_id, "expired")
                if not was_answered:
                    await self._question({**question, "state": "expired"}, None)
                    raise QuestionExpired(
                        f"nobody answered the agent's question within {timeout_s:g} s"
                    )
        except asyncio.CancelledError:
            # Cancelled (or the node drains): the question is closed unless answered just now.
            with contextlib.suppress(DariError):
                await runner.queue.settle(interrupt_id, "cancelled")
            with contextlib.suppress(DariError):
                await self._question({**question, "state": "cancelled"}, None)
            raise
        finally:
            if not answered.done():
                answered.cancel()
            if deadline is not None and resume_by is not None:
                deadline.reschedule(resume_by + loop.time() - paused_at)
        await self._question({**question, "state": "answered", "value": value}, "streaming")
        return value

    async def _question(self, question: dict[str, Any], status: Status | None) -> None:
        """Tell the conversation where a question stands; with ``status``, save the answer
        now (``interrupted`` while it waits, ``streaming`` again once answered)."""
        progress, key, rid = self.progress, self.job.key, self.job.request_id
        progress.interrupts[question["interrupt_id"]] = question
        progress.revision += 1
        await self.runner.hub.publish(key, frames.answer_frame("interrupt", key, rid, **question))
        if status is None or self._row is None:
            return
        message_id = await asyncio.shield(self._row)
        await self.runner.store.save_answer(
            message_id,
            progress.text(),
            status,
            list(progress.steps),
            reasoning=progress.reasoning_text(),
            tools=progress.tool_list(),
            interrupts=progress.interrupt_list(),
        )

    async def emit_tool(self, update: ToolUpdate) -> None:
        """A ``tool`` frame now; the call's latest state is kept for snapshots and the save."""
        wire = update.to_wire()
        state = {k: v for k, v in wire.items() if k != "arguments_delta"}
        progress = self.progress
        progress.tools[update.call_id] = state
        progress.revision += 1
        key, rid = self.job.key, self.job.request_id
        await self.runner.hub.publish(key, frames.answer_frame("tool", key, rid, **wire))

    async def _note(self, event: Reasoning | Usage | Finish | ToolUpdate) -> None:
        """Reasoning and tool calls go out at once, in their own frames; usage and finish
        wait for the end."""
        progress = self.progress
        if isinstance(event, ToolUpdate):
            await self.emit_tool(event)
        elif isinstance(event, Reasoning):
            text = event.text
            if "\x00" in text:
                text = text.replace("\x00", "\ufffd")
            if text:
                progress.reasoning.append(text)
                progress.first_said.set()
                key, rid = self.job.key, self.job.request_id
                # Its own merge key: a reasoning piece never merges into an answer piece.
                await self.runner.hub.publish(
                    key,
                    frames.answer_frame("reasoning", key, rid, content=text),
                    rid + "\x00reasoning",
                    self._gather_s,
                )
        elif isinstance(event, Usage):
            progress.usage = event if progress.usage is None else progress.usage + event
        else:
            progress.finish = event.reason

    async def _checkpoint(self, row: asyncio.Future[int]) -> None:
        interval = self.runner.settings.store.checkpoint_s
        progress = self.progress
        message_id = await asyncio.shield(row)  # cancelling this task must not cancel the row
        # The first checkpoint comes with the first piece (or after one interval, for answers
        # that only take steps); then one every interval.
        # (asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancel that
        # ends the answer when it lands as the event is set, and this task would never stop.)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await progress.first_said.wait()
        while not self._finishing:
            said = len(progress.pieces) + len(progress.reasoning)
            if said != progress.saved_pieces or progress.revision != progress.saved_revision:
                progress.saved_pieces = said
                progress.saved_revision = progress.revision
                await self.runner.store.save_answer(
                    message_id,
                    progress.text(),
                    "streaming",
                    list(progress.steps),
                    reasoning=progress.reasoning_text(),
                    tools=progress.tool_list(),
                    interrupts=progress.interrupt_list(),
                )
            await asyncio.sleep(interval)

    async def _finish(
        self,
        row: asyncio.Future[int] | None,
        checkpoint: asyncio.Task[None] | None,
        finish: FinishReason,
    ) -> None:
        runner, key, rid = self.runner, self.job.key, self.job.request_id
        self._finishing = True
        if checkpoint is not None:
            checkpoint.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await checkpoint
        usage = self.progress.usage
        if usage is not None:
            _count(key.project_id, key.agent_name, usage)
        wire_usage = usage.to_wire() if usage is not None else None
        # Several nodes: a reaper may have ended this answer already (its node seemed dead).
        owned = True
        try:
            owned = await runner.queue.claim_end(self.job)
        except DariError as exc:
            log.warning("cannot claim the end of %s (%s); ending it here", rid, exc.message)
        try:
            if row is not None and owned:
                try:
                    message_id = await asyncio.shield(row)
                except Exception as exc:
                    # On one node the agent started before its row was written (see _answer):
                    # the text went out but cannot be kept, and the client is told so.
                    log.exception("the row of answer %s could not be written", rid)
                    finish = "error"
                    message = f"the answer could not be saved: {_reason(exc)}"
                    if not self._failure_told:
                        error = frames.error(ErrorCode.INTERNAL, message, rid)
                        with contextlib.suppress(DariError):
                            await runner.hub.publish(key, {**error, **key.fields()})
                else:
                    await runner.store.save_answer(
                        message_id,
                        self.progress.text(),
                        _STATUS[finish],
                        self.progress.steps,
                        reasoning=self.progress.reasoning_text(),
                        usage=wire_usage,
                        finish_reason=finish,
                        tools=self.progress.tool_list(),
                        interrupts=self.progress.interrupt_list(),
                    )
        finally:
            if owned:
                # The end must reach the log: while shared state is away it is retried; if it
                # never gets there the error stops this node's queue and leaves the lease to
                # expire, so another node's reaper ends the answer for its subscribers.
                end = frames.end(key, rid, finish, wire_usage)
                await retrying(lambda: runner.queue.publish_end(self.job, dict(end)))
            with contextlib.suppress(DariError):
                await runner.hub.delivery.answer_ended(self.progress)


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, DariError) else type(exc).__name__


def _check_question(payload: object) -> None:
    """A question is a JSON object with a ``question`` text, optional ``choices`` (a list) and
    ``schema`` (a JSON schema object): anything else is the agent's bug."""
    if not isinstance(payload, dict) or not isinstance(payload.get("question"), str):
        raise TypeError('an interrupt needs a payload like {"question": "..."}')
    if "choices" in payload and not isinstance(payload["choices"], list):
        raise TypeError("an interrupt's choices must be a list")
    if "schema" in payload and not isinstance(payload["schema"], dict):
        raise TypeError("an interrupt's schema must be a JSON schema object")
    orjson.dumps(payload)  # raises TypeError if it is not JSON


T = TypeVar("T")
END_RETRY_S = 30.0  # how long an answer's end waits for shared state to come back


async def retrying(operation: Callable[[], Awaitable[T]]) -> T:
    """``operation``, tried again while shared state is unreachable (a Redis restart), for at
    most ``END_RETRY_S``; then its error."""
    deadline = time.monotonic() + END_RETRY_S
    delay = 0.1
    while True:
        try:
            return await operation()
        except StoreUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _count(project_id: str, agent_name: str, usage: Usage) -> None:
    """Add an answer's usage to /metrics (reasoning tokens are part of completion tokens)."""
    MODEL_TOKENS.labels(project_id, agent_name, "prompt").inc(usage.prompt_tokens)
    MODEL_TOKENS.labels(project_id, agent_name, "completion").inc(usage.completion_tokens)
    if usage.reasoning_tokens is not None:
        MODEL_TOKENS.labels(project_id, agent_name, "reasoning").inc(usage.reasoning_tokens)
