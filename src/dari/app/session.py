"""What one socket's frames do: chat, ping, cancel, history, subscribe, resume.

Every frame is checked against the principal here, not only the handshake. An error caused by
a frame becomes an ``error`` frame for this client; the connection stays open.
"""

from __future__ import annotations

import logging
import uuid

from dari import metrics
from dari.app.gateway import Gateway
from dari.app.images import check_images
from dari.app.threads import thread_frame
from dari.auth.base import Principal
from dari.protocol import frames
from dari.protocol.codec import decode_client_frame
from dari.protocol.errors import (
    DariError,
    ErrorCode,
    LookupFailed,
    RateLimited,
    StoreUnavailable,
    Unavailable,
)
from dari.protocol.frames import (
    CancelIn,
    ChatIn,
    ClientFrame,
    ConversationKey,
    HistoryIn,
    PingIn,
    ResumeIn,
    SubscribeIn,
    ThreadIn,
    ThreadsIn,
)
from dari.runner.intake import Intake
from dari.runner.jobs import Job

log = logging.getLogger("dari.session")


class RateLimitExceeded(Exception):
    """The client kept flooding after ``rate_limited`` errors: close with 1008."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("rate limit exceeded")
        self.retry_after = retry_after


class ChatSession:
    def __init__(self, gateway: Gateway, principal: Principal, client_id: str) -> None:
        self.gateway = gateway
        self.principal = principal
        self.client_id = client_id
        # The rate limit's bucket is the user's, on every connection and node (quotas), so a
        # reconnect does not refill it; without auth everyone is one user: per client_id then.
        no_auth = gateway.settings.auth.mode == "none"
        self.rate_subject = f"c:{client_id}" if no_auth else f"u:{principal.user_id}"
        self.strikes = 0  # refusals in a row on this connection

    async def reply(self, frame: frames.Frame) -> int:
        """Send ``frame`` to this client; returns its seq."""
        if frame["type"] == "error":
            metrics.ERRORS.labels(frame["code"]).inc()
        return await self.gateway.hub.send(self.client_id, frame)

    async def handle_raw(self, data: str | bytes | None) -> None:
        """Handle one frame as received; errors become ``error`` frames."""
        metrics.FRAMES_IN.inc()
        if data is not None:
            metrics.BYTES_IN.inc(len(data))
        try:
            await self._rate_check()
            frame = decode_client_frame(
                data, max_bytes=self.gateway.settings.limits.max_message_bytes
            )
            await self.handle(frame)
        except StoreUnavailable:
            raise  # the socket closes with 1013; the client resends what was not acknowledged
        except RateLimited as exc:
            await self.reply(
                frames.error(exc.code, exc.message, exc.request_id, retry_after=exc.retry_after)
            )
        except DariError as exc:
            await self.reply(frames.error(exc.code, exc.message, exc.request_id))

    async def _rate_check(self) -> None:
        wait = await self.gateway.quotas.take_frame(self.rate_subject)
        if wait <= 0:
            self.strikes = 0
            return
        metrics.RATE_LIMITED.inc()
        self.strikes += 1
        if self.strikes >= self.gateway.settings.limits.rate_strikes_before_close:
            raise RateLimitExceeded(wait)
        raise RateLimited("too many frames; slow down", retry_after=wait)

    async def handle(self, frame: ClientFrame) -> None:
        try:
            if isinstance(frame, ChatIn):
                await self.chat(frame)
            elif isinstance(frame, PingIn):
                await self.reply(frames.pong(frame.ts))
            elif isinstance(frame, CancelIn):
                await self.cancel(frame)
            elif isinstance(frame, HistoryIn):
                await self.history(frame)
            elif isinstance(frame, SubscribeIn):
                await self.subscribe(frame)
            elif isinstance(frame, ThreadsIn | ThreadIn):
                await self.reply(await thread_frame(self.gateway, self.principal, frame))
            elif isinstance(frame, ResumeIn):
                await self.resume(frame)
        except StoreUnavailable:
            # Shared state is away (Redis restarting): not an answer to this frame. The socket
            # is closed with 1013 and the client resends its unacknowledged chats elsewhere.
            raise
        except DariError as exc:
            request_id = exc.request_id
            if request_id is None and isinstance(frame, ChatIn | CancelIn):
                request_id = frame.id if isinstance(frame, ChatIn) else frame.request_id
            await self.reply(frames.error(exc.code, exc.message, request_id))
        except Exception:
            log.exception("frame %s from %s failed", type(frame).__name__, self.client_id)
            await self.reply(frames.error(ErrorCode.INTERNAL, "internal error; nothing was lost"))

    async def chat(self, frame: ChatIn) -> None:
        # New chats go ahead of answers that keep the loop busy until their answer starts.
        intake = self.gateway.runner.intake.begin()
        started = False
        try:
            started = await self._chat(frame, intake)
        finally:
            if not started:  # an answer started here says when it is taken in
                intake.done()

    async def _chat(self, frame: ChatIn, intake: Intake) -> bool:
        """Take in a chat; True if its answer started on this node now."""
        gateway, runner = self.gateway, self.gateway.runner
        # The conversation these names mean for this user (a thread nobody has used becomes
        # theirs); another user's thread is refused here, before anything is stored.
        key = await gateway.conversations.open(
            self.principal, frame.project_id, frame.agent_name, frame.thread_id, claim=True
        )
        check_images(frame.images, gateway.settings.limits)
        user_id = self.principal.user_id
        # Saving the message and queuing it happen under the conversation's ordering point,
        # so history order is run order, on one node or many.
        async with runner.ordered(key):
            try:
                # The conversation's queue, and the user's chats waiting anywhere (a ticket).
                ticket = await runner.admission(key, user_id)
            except Unavailable:
                # A resend of a chat accepted before is acknowledged as a duplicate, whatever
                # the queue or the agent's state is now: its answer runs or ran already.
                known = await gateway.store.find_request(user_id, frame.id) if frame.id else None
                if known is None:
                    raise
                await gateway.hub.join(self.client_id, key)
                await self._ack(frame, key, known, queued=0, duplicate=True)
                return False
            try:
                accepted = await gateway.store.accept_chat(
                    user_id=user_id,
                    client_message_id=frame.id,
                    request_id=frame.id or f"r-{uuid.uuid4().hex}",
                    key=key,
                    message=frame.message,
                    images=frame.images,
                )
                # Subscribed before the answer is queued: its first frame reaches this client.
                await gateway.hub.join(self.client_id, key)
            except BaseException:
                await runner.release(user_id, ticket)
                raise
            if accepted.duplicate and not await self._never_queued(key, accepted.request_id):
                await runner.release(user_id, ticket)
                await self._ack(frame, key, accepted.request_id, queued=0, duplicate=True)
                return False
            # New, or saved before but never queued (shared state failed in between, and the
            # client resent it): queued now, in this conversation's order.
            job = Job(accepted.request_id, key, frame.message, frame.images, user_id)
            job.principal = self.principal  # its delegations are checked against the user
            job.ticket = ticket  # given back when the chat ends
            job.intake = intake
            queued = await runner.enqueue(job)
            await self._ack(frame, key, accepted.request_id, queued=queued, duplicate=False)
            if queued or job.task is None:
                return False
            # However the answer ends (even cancelled before it ran), the chat is in.
            job.task.add_done_callback(lambda _: intake.done())
            return True

    async def _never_queued(self, key: ConversationKey, request_id: str) -> bool:
        """A chat saved earlier that is neither waiting, running nor answered."""
        gateway = self.gateway
        if await gateway.runner.locate(request_id, self.principal.user_id) is not None:
            return False
        return not await gateway.store.answered(key, request_id)

    async def _ack(
        self, frame: ChatIn, key: ConversationKey, request_id: str, *, queued: int, duplicate: bool
    ) -> None:
        await self.reply(
            frames.ack(
                id=frame.id, request_id=request_id, queued=queued, duplicate=duplicate, key=key
            )
        )

    async def cancel(self, frame: CancelIn) -> None:
        runner = self.gateway.runner
        if frame.request_id is not None:
            user = self.principal.user_id
            found = await runner.locate(frame.request_id, user)
            if (
                found is None
                or not self.principal.can_use(found.project_id, found.agent_name)
                or not await runner.cancel(frame.request_id, user)
            ):
                # Someone else's request looks exactly like a missing one.
                raise LookupFailed(
                    f"no running or queued answer {frame.request_id!r}",
                    request_id=frame.request_id,
                )
            return
        assert frame.project_id is not None and frame.agent_name is not None
        key = await self.gateway.conversations.open(
            self.principal, frame.project_id, frame.agent_name, frame.thread_id
        )
        if not await runner.cancel_in(key):
            raise LookupFailed(f"nothing is running in {key}")

    async def resume(self, frame: ResumeIn) -> None:
        """Answer an agent's question; the paused answer goes on (its ``interrupt`` frame with
        ``state: "answered"`` reaches every subscriber). Errors name the ``interrupt_id``."""
        try:
            await self.answer(frame.interrupt_id, frame.value)
        except DariError as exc:
            error = frames.error(exc.code, exc.message)
            await self.reply({**error, "interrupt_id": frame.interrupt_id})

    async def answer(self, interrupt_id: str, value: object) -> ConversationKey:
        """Answer a question this user may see (subscribing this client to its conversation,
        so the rest of the answer reaches it); its conversation. Raises ``not_found``,
        ``already_answered``."""
        key = await self.gateway.runner.question(interrupt_id)
        if key is None or not await self.gateway.conversations.may_use(self.principal, key):
            # Another user's question looks exactly like a missing one.
            raise LookupFailed("no such question is waiting for an answer")
        await self.gateway.hub.join(self.client_id, key)
        await self.gateway.runner.answer(interrupt_id, value)
        return key

    async def history(self, frame: HistoryIn) -> None:
        page = await self.gateway.conversations.history(
            self.principal,
            frame.project_id,
            frame.agent_name,
            frame.thread_id,
            frame.limit,
            frame.before,
        )
        await self.reply({"type": "history", **page})

    async def subscribe(self, frame: SubscribeIn) -> None:
        hub, directory = self.gateway.hub, self.gateway.directory
        self.principal.require(frame.project_id, frame.agent_name)
        if frame.agent_name is None:
            directory.project(frame.project_id)
        else:
            directory.get(frame.project_id, frame.agent_name)
        key: ConversationKey | None = None
        if frame.agent_name is not None:
            conversations = self.gateway.conversations
            names = (self.principal, frame.project_id, frame.agent_name, frame.thread_id)
            # Leaving is always allowed; following needs access (and claims a new thread).
            key = (
                conversations.key(*names)
                if frame.type == "unsubscribe"
                else await conversations.open(*names, claim=True)
            )
        target = key.fields() if key else {"project_id": frame.project_id}
        if frame.type == "unsubscribe":
            if key is None:
                await hub.leave_project(self.client_id, frame.project_id)
            else:
                await hub.leave(self.client_id, key)
            await self.reply({"type": "unsubscribed", **target})
            return
        if key is None:
            await hub.join_project(self.client_id, frame.project_id)
        else:
            await hub.join(self.client_id, key)
        await self.reply({"type": "subscribed", **target})
        if key is not None:
            await send_snapshots(self.gateway, self.client_id, {key})


async def send_snapshots(
    gateway: Gateway, client_id: str, keys: set[ConversationKey]
) -> int | None:
    """The text so far of every answer in progress in ``keys``; live pieces follow. Returns
    the seq of the first snapshot (None: none was running)."""
    return await gateway.hub.snapshots(client_id, keys)
