"""The two WebSocket endpoints: the handshake, resume, and the receive loop.

The handshake refuses a bad ``client_id`` or a foreign ``Origin`` before the upgrade; auth and
ownership failures are sent as close codes a browser can read (accept, then 4401/4403).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from dari import __version__, metrics
from dari.app.credentials import credentials_of
from dari.app.gateway import Gateway
from dari.app.origin import origin_allowed
from dari.app.refusals import note_socket_refusal, refuse
from dari.app.session import ChatSession, RateLimitExceeded, send_snapshots
from dari.auth.base import Principal
from dari.conversations.redaction import Redactions
from dari.hub.connection import Connection, Renderer
from dari.hub.hub import StaleConnection
from dari.protocol import frames, thread_dialect
from dari.protocol.codec import encode
from dari.protocol.errors import (
    CloseCode,
    DariError,
    ErrorCode,
    ProtocolError,
    StoreUnavailable,
)
from dari.protocol.ids import is_valid_client_id
from dari.protocol.resume import plan_resume

log = logging.getLogger("dari.ws")
router = APIRouter()
THREAD_PREFIX = "thread."


def _visible_render(principal: Principal, deleted: Redactions) -> Renderer:
    """Encode frames; one the principal may no longer see (or of a deleted conversation's
    history) keeps its seq but not its content."""
    everything = principal.unrestricted

    def render(frame: frames.Frame) -> str:
        if everything or principal.can_see_frame(frame):
            shown = deleted.visible(principal, frame)
            if shown is not None:
                return encode(shown)
        return encode({"type": "redacted", "seq": frame["seq"]})

    return render


def _gateway(websocket: WebSocket) -> Gateway:
    gateway: Gateway = websocket.app.state.gateway
    return gateway


async def _authenticate(websocket: WebSocket, gateway: Gateway) -> Principal | None:
    """The principal, or None after refusing the socket (the close code says why)."""
    if not origin_allowed(websocket, gateway.settings):
        await refuse(websocket, CloseCode.POLICY_VIOLATION, "origin")  # before accept: 403
        return None
    try:
        return gateway.authenticator.authenticate(
            credentials_of(websocket, gateway.settings.auth.cookie_name, allow_query_token=True)
        )
    except DariError as exc:
        await websocket.accept()
        await refuse(websocket, CloseCode.UNAUTHORIZED, exc.message[:120])
        return None


def _over_connection_cap(
    gateway: Gateway, principal: Principal, client_id: str | None = None
) -> bool:
    """Whether one more socket would pass the user's limit (a replacement is not one more)."""
    state = gateway.hub.clients.get(client_id) if client_id is not None else None
    if state is not None and state.connection is not None and state.user_id == principal.user_id:
        return False
    limit = gateway.settings.limits.max_connections_per_user
    return gateway.hub.open_connections(principal.user_id) >= limit


async def _receive_loop(
    websocket: WebSocket, connection: Connection, session: ChatSession, on_text: object = None
) -> None:
    """Feed frames to the session until the socket closes or misbehaves."""
    handle = session.handle_raw if on_text is None else on_text
    expires_at = session.principal.expires_at
    while not connection.closed.is_set():
        timeout = None if expires_at is None else expires_at - time.time()
        if timeout is not None and timeout <= 0:  # also under steady traffic
            note_socket_refusal(websocket, CloseCode.UNAUTHORIZED, "token expired")
            await connection.close(CloseCode.UNAUTHORIZED, "token expired")
            return
        try:
            async with asyncio.timeout(timeout):
                message = await websocket.receive()
        except TimeoutError:
            note_socket_refusal(websocket, CloseCode.UNAUTHORIZED, "token expired")
            await connection.close(CloseCode.UNAUTHORIZED, "token expired")
            return
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
        try:
            await handle(data)  # type: ignore[operator]
        except RateLimitExceeded as exc:
            # Tell the client why before the close, and let that reach it first.
            seq = await session.reply(
                frames.error(
                    ErrorCode.RATE_LIMITED,
                    "too many frames; closing the connection",
                    retry_after=exc.retry_after,
                )
            )
            await connection.flush(seq, timeout=1.0)
            note_socket_refusal(websocket, CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            await connection.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return


def _closed_while_redis_is_away(
    handler: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    """Several nodes: while Redis is unreachable no frame can be logged, so a socket cannot
    be served; close it with 1013 (try again later) instead of failing the ASGI call."""

    @functools.wraps(handler)
    async def wrapper(websocket: WebSocket, *args: Any, **kwargs: Any) -> None:
        try:
            await handler(websocket, *args, **kwargs)
        except StoreUnavailable as exc:
            log.warning("closing a socket: %s", exc.message)
            with contextlib.suppress(Exception):
                await websocket.close(code=CloseCode.TRY_AGAIN_LATER, reason="try again later")

    return wrapper


@router.websocket("/ws/chat/{client_id}")
@_closed_while_redis_is_away
async def chat_socket(websocket: WebSocket, client_id: str) -> None:
    gateway = _gateway(websocket)
    settings = gateway.settings
    generation = gateway.hub.next_generation()  # before any await: the arrival order
    if not is_valid_client_id(client_id):
        await refuse(websocket, CloseCode.POLICY_VIOLATION, "invalid client_id")  # no state yet
        return
    principal = await _authenticate(websocket, gateway)
    if principal is None:
        return
    # Every refusal comes before the claim below: a refused handshake takes no client_id.
    if _over_connection_cap(gateway, principal, client_id):
        await websocket.accept()
        await refuse(websocket, CloseCode.POLICY_VIOLATION, "too many connections")
        return
    # "thread." ids belong to sockets of the second dialect: never anyone else's to attach to.
    if client_id.startswith(THREAD_PREFIX):
        owner = ""
    else:
        owner = await gateway.store.claim_client(client_id, principal.user_id)
    if owner != principal.user_id:
        await websocket.accept()
        await refuse(websocket, CloseCode.FORBIDDEN, "client_id belongs to another user")
        return
    await websocket.accept()

    hub = gateway.hub
    try:
        state = hub.client(client_id, principal)
    except DariError:
        await refuse(websocket, CloseCode.FORBIDDEN, "client_id belongs to another user")
        return
    if state.connection is None and _over_connection_cap(gateway, principal):
        await refuse(websocket, CloseCode.POLICY_VIOLATION, "too many connections")
        return
    await hub.restore(state)  # subscriptions made on any node
    await gateway.conversations.prune(state)  # ... except to threads unshared meanwhile
    position = await gateway.replay.position(client_id)
    plan = plan_resume(
        websocket.query_params.get("last_seq"), websocket.query_params.get("epoch"), position
    )
    connection = Connection(
        websocket,
        client_id,
        principal.user_id,
        gateway.replay,
        position=plan.position,
        send_timeout_s=settings.limits.send_timeout_s,
        max_lag_frames=settings.limits.max_lag_frames,
        render=_visible_render(state.principal, gateway.conversations.redactions),
        generation=generation,
        log_head=position.head,
    )
    try:
        previous = hub.attach(connection)
    except StaleConnection:
        await websocket.close(CloseCode.REPLACED, "a newer connection of this client_id exists")
        return
    metrics.CONNECTIONS.labels("chat").inc()
    metrics.CONNECTIONS_OPEN.labels("chat").inc()
    # From here on the socket counts as attached: whatever fails (Redis away while watching),
    # the finally below detaches it, so it never lingers against the user's connection cap.
    try:
        if previous is not None:
            await previous.close(CloseCode.REPLACED, "replaced by a newer connection")
        await hub.watch(connection)  # frames logged on any node wake this writer
        if websocket.query_params.get("last_seq") is not None:
            metrics.REPLAY.labels("resumed" if plan.resumed else "not_resumed").inc()
            if plan.resumed:
                metrics.REPLAYED_FRAMES.inc(position.head - plan.position)
        session = ChatSession(gateway, principal, client_id)
        start = plan.position
        if not plan.resumed:
            # Snapshots first, then the welcome that starts right before them: pieces logged
            # since the position was read are in the snapshots already (a fresh start owes the
            # client nothing logged before its welcome).
            first = await send_snapshots(gateway, client_id, set(state.conversations))
            if first is not None:
                start = first - 1
                connection.skip_to(start)
        await connection.send_direct(
            frames.welcome(
                client_id=client_id,
                position=start,
                resumed=plan.resumed,
                last_seq=max(position.head, start),
                epoch=position.epoch,
                heartbeat_s=settings.heartbeat_s,
                server_version=__version__,
                reason=plan.reason.value if plan.reason else None,
            )
        )
        connection.start()
        await _receive_loop(websocket, connection, session)
    except WebSocketDisconnect:
        pass
    finally:
        metrics.CONNECTIONS_OPEN.labels("chat").dec()
        await connection.stop()
        await hub.detach(connection)


@router.websocket("/api/chat/ws/{thread_id}")
@_closed_while_redis_is_away
async def thread_socket(websocket: WebSocket, thread_id: str) -> None:
    gateway = _gateway(websocket)
    settings = gateway.settings
    if not 0 < len(thread_id) <= 128:
        await refuse(websocket, CloseCode.POLICY_VIOLATION, "invalid thread_id")
        return
    principal = await _authenticate(websocket, gateway)
    if principal is None:
        return
    await websocket.accept()
    if _over_connection_cap(gateway, principal):
        await refuse(websocket, CloseCode.POLICY_VIOLATION, "too many connections")
        return
    client_id = f"{THREAD_PREFIX}{uuid.uuid4().hex}"
    gateway.hub.client(client_id, principal, ephemeral=True)
    connection = Connection(
        websocket,
        client_id,
        principal.user_id,
        gateway.replay,
        position=0,
        send_timeout_s=settings.limits.send_timeout_s,
        max_lag_frames=settings.limits.max_lag_frames,
        render=thread_dialect.render,
    )
    gateway.hub.attach(connection)
    session = ChatSession(gateway, principal, client_id)

    async def on_text(data: str | bytes | None) -> None:
        if not isinstance(data, str):
            await session.handle_raw(data)  # the codec answers binary frames with bad_request
            return
        try:
            raw = orjson.loads(data) if len(data) <= settings.limits.max_message_bytes else None
        except orjson.JSONDecodeError:
            raw = None
        if isinstance(raw, dict) and "type" not in raw:
            try:
                chat = thread_dialect.chat_frame(
                    raw,
                    thread_id=thread_id,
                    project_id=settings.default_project,
                    agent_name=settings.default_agent,
                )
            except ProtocolError as exc:
                await session.reply(frames.error(ErrorCode.BAD_REQUEST, exc.message))
                return
            data = orjson.dumps(chat).decode()
        await session.handle_raw(data)

    metrics.CONNECTIONS.labels("thread").inc()
    metrics.CONNECTIONS_OPEN.labels("thread").inc()
    try:
        await gateway.hub.watch(connection)
        connection.start()
        await _receive_loop(websocket, connection, session, on_text)
    except WebSocketDisconnect:
        pass
    finally:
        metrics.CONNECTIONS_OPEN.labels("thread").dec()
        await connection.stop()
        await gateway.hub.detach(connection)
