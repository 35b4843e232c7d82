"""Several nodes: delivery through Redis (the ``Delivery`` of a cluster).

One node holds a client's socket; any node may produce frames for it. So subscriptions live in
Redis, a frame for a client goes into the client's shared log, and the node holding the socket
is woken through the bus. The script that logs a batch of frames also reads, per client, the
node ``attached:<id>`` names; the producing node then publishes one message per other node and
batch on ``<prefix>wake-node:<node_id>`` (which each node subscribes to at start), carrying the
frames and each listed client's seq, and that node hands them to its sockets' writers as
logged (no read back from Redis). Only a client whose holder is unknown is woken on its own
channel ``<prefix>wake:<client_id>``, which a node subscribes to while it holds the socket (it
also carries the "attached elsewhere" notice). A wake that is lost (bus reconnecting) is
repaired by re-reading the logs of every local socket when the bus comes back.

Keys (``<prefix>`` defaults to ``dari:``; every member carries an expiry time as its score, so
clients that vanish with their node are dropped after ``ttl_s`` without anyone's help):

- ``subs:c:<conversation>`` clients subscribed to a conversation (``<conversation>`` is the key
  as a JSON list), ``subs:p:<project>`` clients subscribed to a project,
  ``subs:pc:<project>`` conversations of the project that have subscribers;
- ``client:<id>:c`` / ``client:<id>:p`` the client's conversations / projects, to restore them
  on whichever node it connects to;
- ``clients`` every client, for broadcasts to all; ``attached:<id>`` the node holding its socket.

A running answer's text and steps (``progress:<conversation>:<request_id>:text`` / ``:steps``,
and the updates of its tool calls and questions, ``:tools`` / ``:interrupts``) grow in the same
atomic step as its frames enter the subscribers' logs, so a snapshot taken on
any node, or the text saved when the node running it died, is exactly what subscribers got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from dari.buses.base import Bus, BusError, BusMessage
from dari.hub.connection import Connection
from dari.hub.delivery import Delivery
from dari.hub.replay_redis import LUA_PRELUDE, RedisReplayLog, ReplayUnavailable
from dari.protocol.errors import CloseCode, ConfigError
from dari.protocol.frames import ConversationKey, Frame
from dari.runner.jobs import Progress
from dari.supervise import supervise

log = logging.getLogger("dari.hub")


@dataclass(frozen=True, slots=True)
class EndClaim:
    """Who holds an answer's end (``ended_key`` holds ``claimer``), and the keys that stop
    naming it running once its ``end`` is logged (``running_key`` while it holds ``run``)."""

    ended_key: str
    claimer: str
    running_key: str
    run: str
    answer_key: str


class EndTakenOver(Exception):
    """An answer's end was not logged: another node took its end over."""


WAKE = b""
ATTACHED = b"attached:"  # + the handshake's arrival: another node attached a socket of this client
PROGRESS_TTL_S = 24 * 3600.0
_ANSWER_FIELDS = frozenset(
    {"type", "seq", "request_id", "project_id", "agent_name", "thread_id"}
)  # leftovers of an answer nobody ended cannot outlive this
# Frames that grow a running answer's progress record (what snapshots and reapers read).
_PROGRESS_KINDS = frozenset({"response", "step", "tool", "interrupt"})
_PROGRESS_LEFT_OUT = _ANSWER_FIELDS | {"arguments_delta"}

# Clients subscribed to the project or to any of its conversations, expired members dropped.
# KEYS: subs:p:<project>, subs:pc:<project>. ARGV: now ms, key prefix of subs:c:.
_PROJECT_SUBSCRIBERS = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local out = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, conversation in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local key = ARGV[2] .. conversation
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  for _, client in ipairs(redis.call('ZRANGE', key, 0, -1)) do out[#out + 1] = client end
end
return out
"""

# Drop a client's shared state, unless it is attached somewhere or was seen within its TTL.
# KEYS: clients, attached:<id>, client:<id>:c, client:<id>:p, its log's counter and stream.
# ARGV: client id, now ms (0: force), key prefix. Returns 1 when dropped.
_FORGET = """
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
local now = tonumber(ARGV[2])
if now > 0 and (redis.call('EXISTS', KEYS[2]) == 1 or (seen and tonumber(seen) > now)) then
  return 0
end
for _, conversation in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  redis.call('ZREM', ARGV[3] .. 'subs:c:' .. conversation, ARGV[1])
end
for _, project in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  redis.call('ZREM', ARGV[3] .. 'subs:p:' .. project, ARGV[1])
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

# A socket left: the client's expiry moves on (its log and subscriptions are kept that long),
# and attached:<id> goes only if this node still holds it. KEYS: attached:<id>, clients.
# ARGV: node id, client id, expiry (ms).
_DETACH = """
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Several frames, each into many clients' logs, in one call: what the node's fan-outs queued
# while the previous call was in flight (one round trip and one script run for all of them).
# KEYS: epoch. ARGV: 1 epoch candidate, 2 max frames, 3 max age ms, 4 counter TTL ms,
# 5 side TTL ms, 6 log key prefix, 7 max bytes per client, 8 attached:<id> key prefix, 9 the
# calling node's id; then per frame: frame JSON, side op ('', 'append', 'rpush', 'end'),
# side key, side value, subscribers key, '1' to include the subscribers, n, n client ids.
# Op 'end' logs an answer's end only if its end is claimed by the caller, or by nobody (side key
# ended:<run>, value "<holder>\n<running key>\n<run> <request>\n<answer key>"); in the same step
# the claim is marked done ("<holder>!"), the answer stops being running and its record goes;
# an end already marked done is not logged again (a retried call).
# Returns {epoch, then per frame: count (-1: an end not logged, its claim is someone else's),
# then count triples of client id, the frame's seq and the node holding the client's socket
# ('' when it is the caller or unknown)}.
_FAN_OUT_MANY = (
    LUA_PRELUDE
    + """
local current = epoch()
local now = now_ms()
local out = {current}
local holders = {}  -- per client, read once per call
local function holder(client)
  local node = holders[client]
  if node == nil then
    node = redis.call('GET', ARGV[8] .. client) or ''
    if node == ARGV[9] then node = '' end
    holders[client] = node
  end
  return node
end
local i = 10
while i <= #ARGV do
  local frame, op, side, value, subs = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local with_subs, n = ARGV[i + 5], tonumber(ARGV[i + 6])
  local skip = false
  if op == 'append' then
    redis.call('APPEND', side, value)
    redis.call('PEXPIRE', side, ARGV[5])
  elseif op == 'rpush' then
    redis.call('RPUSH', side, value)
    redis.call('PEXPIRE', side, ARGV[5])
  elseif op == 'end' then
    local claimer, running, run, answer =
      string.match(value, '^([^\\n]*)\\n([^\\n]*)\\n([^\\n]*)\\n(.*)$')
    local state = redis.call('GET', side)
    if state == claimer or not state then  -- unclaimed: its claim failed while Redis was away
      redis.call('SET', side, claimer .. '!', 'PX', ARGV[5])
      if redis.call('GET', running) == run then redis.call('DEL', running) end
      redis.call('DEL', answer)
    elseif state == claimer .. '!' then
      skip = 'logged'  -- a retry of a call whose reply was lost: logged once already
    else
      skip = 'taken'
    end
  end
  local targets, seen = {}, {}
  local function add(client)
    if seen[client] then return end
    seen[client] = true
    local seq = log_append(ARGV[6] .. client .. ':seq', ARGV[6] .. client .. ':log', frame, now,
      ARGV[2], ARGV[3], ARGV[4], ARGV[7])
    targets[#targets + 1] = client
    targets[#targets + 1] = seq
    targets[#targets + 1] = holder(client)
  end
  if skip then
    out[#out + 1] = skip == 'taken' and -1 or 0
  else
    if with_subs == '1' then
      redis.call('ZREMRANGEBYSCORE', subs, '-inf', now)
      for _, client in ipairs(redis.call('ZRANGE', subs, 0, -1)) do add(client) end
    end
    for j = 1, n do add(ARGV[i + 6 + j]) end
    out[#out + 1] = #targets / 3
    for _, value in ipairs(targets) do out[#out + 1] = value end
  end
  i = i + 7 + n
end
return out
"""
)

# A snapshot of the answer running in a conversation, logged for one client.
# KEYS: epoch, running:<conversation> ("<run id> <request id>").
# ARGV: 1 epoch candidate, 2 max frames, 3 max age ms, 4 counter TTL ms, 5 log key prefix,
# 6 client id, 7 progress:<conversation>: prefix, 8 the conversation's fields as JSON members,
# 9 max bytes per client.
# Returns {epoch, seq} when there was an answer to show, {epoch} otherwise.
_SNAPSHOT = (
    LUA_PRELUDE
    + """
local current = epoch()
local running = redis.call('GET', KEYS[2])
local request = running and string.match(running, '^%S+ (.*)$')
if not request then return {current} end
local text = redis.call('GET', ARGV[7] .. request .. ':text') or ''
local steps = redis.call('LRANGE', ARGV[7] .. request .. ':steps', 0, -1)
-- Tool calls and questions: each update holds the whole state of its call or question, so
-- the latest one of each id (in the order they began) is what the snapshot shows.
local function latest(list, id_field)
  local order, last = {}, {}
  for _, raw in ipairs(redis.call('LRANGE', ARGV[7] .. request .. list, 0, -1)) do
    local id = cjson.decode(raw)[id_field]
    if last[id] == nil then order[#order + 1] = id end
    last[id] = raw
  end
  local out = {}
  for _, id in ipairs(order) do out[#out + 1] = last[id] end
  return '[' .. table.concat(out, ',') .. ']'
end
local frame = '{"type":"snapshot","request_id":' .. cjson.encode(request) .. ',' .. ARGV[8]
  .. ',"content":' .. cjson.encode(text) .. ',"steps":[' .. table.concat(steps, ',') .. ']'
  .. ',"tools":' .. latest(':tools', 'tool_call_id')
  .. ',"interrupts":' .. latest(':interrupts', 'interrupt_id') .. '}'
local seq = log_append(ARGV[5] .. ARGV[6] .. ':seq', ARGV[5] .. ARGV[6] .. ':log', frame,
  now_ms(), ARGV[2], ARGV[3], ARGV[4], ARGV[9])
return {current, seq}
"""
)


def conversation_name(key: ConversationKey) -> str:
    # A per-user conversation's name ends with its user (key.scope): two users' "main" are
    # two queues, leases, subscriber sets and progress records.
    return orjson.dumps(key.parts()).decode()


def conversation_of(name: str | bytes) -> ConversationKey:
    return ConversationKey(*orjson.loads(name))


NODE_TTL_S = 15.0  # a node id is free again this long after its process stopped renewing it

# KEYS: node:<id>. ARGV: instance token, TTL ms. Take or renew the claim; returns the other
# holder's token when a live process of another instance holds it, else nil.
_CLAIM_NODE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# KEYS: node:<id>. ARGV: instance token. Drop the claim if it is this instance's.
_RELEASE_NODE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_FAN_OUT_BATCH = 128  # frames per script call at most
# Fan-outs waiting for the call in flight; past this a producer gets ReplayUnavailable rather
# than the node's memory growing while Redis is slow.
MAX_QUEUED_FAN_OUTS = 20_000
# A fan-out waiting for the sender: its script arguments, the frame, who waits for its seqs,
# and how long this node's writers may gather it (Connection.notify).
_Queued = tuple[list[Any], Frame, asyncio.Future[list[tuple[str, int]]], float]


def _decode(values: Iterable[bytes | str]) -> set[str]:
    return {v.decode() if isinstance(v, bytes) else v for v in values}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisDelivery(Delivery):
    def __init__(self, log: RedisReplayLog, bus: Bus, ttl_s: float) -> None:
        super().__init__()
        self.replay = log
        self.log = log
        self.bus = bus
        self.redis = log.redis
        self.prefix = log.prefix
        self.ttl_s = ttl_s
        self._project_subscribers = self.redis.register_script(_PROJECT_SUBSCRIBERS)
        self._forget = self.redis.register_script(_FORGET)
        self._detach = self.redis.register_script(_DETACH)
        self._fan_out_many = self.redis.register_script(_FAN_OUT_MANY)
        # Fan-outs wait here while one call is in flight, then go together in the next.
        self._queued: list[_Queued] = []
        self._sender: asyncio.Task[None] | None = None
        self._snapshot = self.redis.register_script(_SNAPSHOT)
        self._watchers: dict[str, Callable[[BusMessage], Awaitable[None]]] = {}
        # This process's claim on its node id: a second live process with the same id is
        # refused at start (it would drop this one's bus messages as its own echoes).
        self._instance = os.urandom(8).hex()
        self._claim_node = self.redis.register_script(_CLAIM_NODE)
        self._release_node = self.redis.register_script(_RELEASE_NODE)
        self._node_keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Claim this node's id (refusing one a live node holds), then keep the claim.

        Redis may be down at start: the node starts anyway (not ready), connects later and
        claims its id then."""
        # Frames other nodes logged for this node's sockets, one message per batch.
        await self.bus.subscribe(self._k("wake-node", self.bus.node_id), self._on_node_wake)
        try:
            await self.log.ping()
            await self._claim_node_id()
        except ReplayUnavailable as exc:
            log.warning("%s; retrying on use, /readyz says not ready meanwhile", exc.message)
        self._node_keeper = supervise(self._keep_node_id(), "keeping the node id")

    async def _claim_node_id(self) -> None:
        key, ttl = self._k("node", self.bus.node_id), int(NODE_TTL_S * 1000)
        holder = await self._call(self._claim_node(keys=[key], args=[self._instance, ttl]))
        if holder not in (None, b"", ""):
            raise ConfigError(
                f"node_id {self.bus.node_id!r} is in use by a live node (seen in Redis within "
                f"the last {NODE_TTL_S:.0f} s): give each node its own node_id, or leave it "
                "unset for a unique default"
            )

    async def _keep_node_id(self) -> None:
        while True:
            await asyncio.sleep(NODE_TTL_S / 3)
            try:
                await self._claim_node_id()
            except ReplayUnavailable:
                continue  # Redis away: readiness says so; the claim is renewed when it is back
            except ConfigError as exc:
                log.error("%s", exc.message)  # another process took the id while Redis was away

    async def ping(self) -> None:
        await self.log.ping()

    async def close(self) -> None:
        if self._node_keeper is not None:
            self._node_keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._node_keeper
        if self._sender is not None and not self._sender.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._sender), 5)
        with contextlib.suppress(ReplayUnavailable, RedisError, OSError):
            key = self._k("node", self.bus.node_id)
            await self._release_node(keys=[key], args=[self._instance])
        await self.log.close()

    async def _call(self, work: Awaitable[Any]) -> Any:
        try:
            return await work
        except (RedisError, OSError) as exc:
            raise ReplayUnavailable(f"shared state unreachable: {exc}") from exc

    def _expiry(self) -> int:
        return int((time.time() + self.ttl_s) * 1000)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- subscriptions -----------------------------------------------------------------------

    def _add(self, pipe: Any, key: str, member: str, expiry: int) -> None:
        # The set itself goes when its newest member would: nothing outlives its TTL.
        pipe.zadd(key, {member: expiry})
        pipe.pexpireat(key, expiry)

    async def subscribe(self, client_id: str, key: ConversationKey) -> None:
        name, expiry = conversation_name(key), self._expiry()
        async with self.redis.pipeline(transaction=True) as pipe:
            self._add(pipe, self._k("subs", "c", name), client_id, expiry)
            self._add(pipe, self._k("subs", "pc", key.project_id), name, expiry)
            self._add(pipe, self._k("client", client_id, "c"), name, expiry)
            pipe.zadd(self._k("clients"), {client_id: expiry})
            await self._call(pipe.execute())

    async def unsubscribe(self, client_id: str, key: ConversationKey) -> None:
        name = conversation_name(key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._k("subs", "c", name), client_id)
            pipe.zrem(self._k("client", client_id, "c"), name)
            await self._call(pipe.execute())

    async def subscribe_project(self, client_id: str, project_id: str) -> None:
        expiry = self._expiry()
        async with self.redis.pipeline(transaction=True) as pipe:
            self._add(pipe, self._k("subs", "p", project_id), client_id, expiry)
            self._add(pipe, self._k("client", client_id, "p"), project_id, expiry)
            pipe.zadd(self._k("clients"), {client_id: expiry})
            await self._call(pipe.execute())

    async def unsubscribe_project(self, client_id: str, project_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._k("subs", "p", project_id), client_id)
            pipe.zrem(self._k("client", client_id, "p"), project_id)
            await self._call(pipe.execute())

    async def subscriptions(self, client_id: str) -> tuple[set[ConversationKey], set[str]]:
        """The client's conversations and projects, as any node recorded them."""
        now = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self._k("client", client_id, "c"), now, "+inf")
            pipe.zrangebyscore(self._k("client", client_id, "p"), now, "+inf")
            conversations, projects = await self._call(pipe.execute())
        return {conversation_of(name) for name in conversations}, _decode(projects)

    async def refresh(self, attached: Iterable[str]) -> None:
        """Refresh the attachment records of the sockets this node holds, and push back the
        expiry of those clients and their subscriptions (they are still around)."""
        expiry, lease = self._expiry(), int(self.ttl_s * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for client_id in attached:
                state = self.clients.get(client_id)
                if state is None:
                    continue
                pipe.set(self._k("attached", client_id), self.bus.node_id, px=lease)
                pipe.zadd(self._k("clients"), {client_id: expiry})
                for key in state.conversations:
                    name = conversation_name(key)
                    self._add(pipe, self._k("subs", "c", name), client_id, expiry)
                    self._add(pipe, self._k("subs", "pc", key.project_id), name, expiry)
                    self._add(pipe, self._k("client", client_id, "c"), name, expiry)
                for project in state.projects:
                    self._add(pipe, self._k("subs", "p", project), client_id, expiry)
                    self._add(pipe, self._k("client", client_id, "p"), project, expiry)
            await self._call(pipe.execute())

    async def project_subscribers(self, project_id: str) -> set[str]:
        members = await self._call(
            self._project_subscribers(
                keys=[self._k("subs", "p", project_id), self._k("subs", "pc", project_id)],
                args=[int(time.time() * 1000), self._k("subs", "c", "")],
            )
        )
        return _decode(members)

    async def all_clients(self) -> set[str]:
        now = int(time.time() * 1000)
        return _decode(await self._call(self.redis.zrangebyscore(self._k("clients"), now, "+inf")))

    async def forget(self, client_id: str, *, force: bool = False) -> None:
        """Drop the client's shared state and log, unless another node still serves it
        (``force``: a socket-bound client id that nobody can come back with)."""
        counter, stream = self.log.log_keys(client_id)
        keys = [
            self._k("clients"),
            self._k("attached", client_id),
            self._k("client", client_id, "c"),
            self._k("client", client_id, "p"),
            counter,
            stream,
        ]
        now = int(time.time() * 1000)
        await self._call(
            self._forget(keys=keys, args=[client_id, 0 if force else now, self.prefix])
        )

    # --- delivery ----------------------------------------------------------------------------

    async def send(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        seq = await self.log.append(client_id, frame, merge_key)
        state = self.clients.get(client_id)
        if state is not None and state.connection is not None:
            state.connection.notify()
        else:
            await self.wake((client_id,))
        return seq

    async def send_many(
        self, client_ids: Collection[str], frame: Frame, merge_key: str | None = None
    ) -> int:
        return await self._deliver(client_ids, frame)  # no merging in the shared log

    async def publish(
        self,
        key: ConversationKey,
        local: Collection[str],
        frame: Frame,
        merge_key: str | None = None,
        gather_s: float = 0.0,
    ) -> int:
        # Even with nobody subscribed: an answer's pieces also record its progress.
        # Subscribers are read in the same step as the logs grow: see snapshots().
        return await self._deliver(local, frame, key, gather_s)

    async def publish_end(
        self, key: ConversationKey, local: Collection[str], frame: Frame, claim: EndClaim
    ) -> bool:
        """Log an answer's ``end`` only if ``claim`` still holds its end (see _FAN_OUT_MANY);
        False when another node took the end over (its node seemed dead), which logs its own."""
        try:
            await asyncio.shield(self.fan_out(frame, local, key, claim))
        except EndTakenOver:
            return False
        return True

    async def _deliver(
        self,
        client_ids: Iterable[str],
        frame: Frame,
        conversation: ConversationKey | None = None,
        gather_s: float = 0.0,
    ) -> int:
        # Shielded: once the frame is logged its readers must be woken, even if the producer
        # is cancelled meanwhile (an ``end`` left in a log with no wake is never sent).
        return await asyncio.shield(
            self._log_and_wake(list(client_ids), frame, conversation, gather_s)
        )

    async def _log_and_wake(
        self,
        client_ids: list[str],
        frame: Frame,
        conversation: ConversationKey | None,
        gather_s: float = 0.0,
    ) -> int:
        """Log for every client (and the conversation's subscribers) in one step; the sender
        then wakes each reader (see _send_queued)."""
        return len(await self.fan_out(frame, client_ids, conversation, gather_s=gather_s))

    async def fan_out(
        self,
        frame: Frame,
        client_ids: Iterable[str] = (),
        conversation: ConversationKey | None = None,
        claim: EndClaim | None = None,
        gather_s: float = 0.0,
    ) -> list[tuple[str, int]]:
        """Log ``frame`` for ``client_ids`` and, with ``conversation``, for its subscribers as
        Redis has them at that very moment, and wake their readers; returns, for each client
        it went to, the frame's seq there. A piece or step of an answer also grows that
        answer's progress.

        Calls made while another is in flight are sent together in one script call, in the
        order they were made: under load many answers' pieces share one round trip."""
        op, side_key, value = "", self._k("none"), b""
        kind = frame["type"]
        if kind in _PROGRESS_KINDS and isinstance(frame.get("request_id"), str):
            # The frame has only the wire names; the conversation (with its scope) is given.
            key = conversation or ConversationKey(
                frame["project_id"], frame["agent_name"], frame["thread_id"]
            )
            text_key, steps_key = self._progress_keys(key, frame["request_id"])
            if kind == "response":
                op, side_key, value = "append", text_key, frame["content"].encode()
            else:
                # A step; or a tool call's or question's whole state so far (see _SNAPSHOT).
                item = {k: v for k, v in frame.items() if k not in _PROGRESS_LEFT_OUT}
                side_key = steps_key if kind == "step" else steps_key[: -len("steps")] + kind + "s"
                op, value = "rpush", orjson.dumps(item)
        if claim is not None:
            op, side_key = "end", claim.ended_key
            value = "\n".join(
                (claim.claimer, claim.running_key, claim.run, claim.answer_key)
            ).encode()
        subscribers = (
            self._k("subs", "c", conversation_name(conversation)) if conversation else side_key
        )
        body = frame if "seq" not in frame else {k: v for k, v in frame.items() if k != "seq"}
        clients = list(client_ids)
        group: list[Any] = [
            orjson.dumps(body),
            op,
            side_key,
            value,
            subscribers,
            "1" if conversation else "0",
            len(clients),
            *clients,
        ]
        if len(self._queued) >= MAX_QUEUED_FAN_OUTS:
            raise ReplayUnavailable("shared state too slow: too many frames waiting for Redis")
        future: asyncio.Future[list[tuple[str, int]]] = asyncio.get_running_loop().create_future()
        self._queued.append((group, frame, future, gather_s))
        if self._sender is None or self._sender.done():
            self._sender = supervise(
                self._send_queued(), "fan-out to Redis", on_failure=self._fail_queued
            )
        return await future

    def _fail_queued(self, exc: BaseException) -> None:
        """The sender stopped unexpectedly: its waiters fail instead of hanging."""
        queued, self._queued = self._queued, []
        for _group, _frame, future, _gather in queued:
            if not future.done():
                future.set_exception(ReplayUnavailable(f"fan-out stopped: {exc!r}"))

    async def _send_queued(self) -> None:
        log = self.log
        while self._queued:
            batch, self._queued = self._queued[:_FAN_OUT_BATCH], self._queued[_FAN_OUT_BATCH:]
            args: list[Any] = [
                os.urandom(6).hex(),
                log.max_frames,
                log.max_age_ms,
                log.counter_ttl_ms,
                int(PROGRESS_TTL_S * 1000),
                log.log_prefix,
                log.max_client_bytes,
                self._k("attached", ""),
                self.bus.node_id,
            ]
            for group, _frame, _future, _gather in batch:
                args.extend(group)
            try:
                result = await self._call(self._fan_out_many(keys=[log.epoch_key], args=args))
            except BaseException as exc:
                for _group, _frame, future, _gather in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            # The frames were logged: wake every reader, even if their producers were cancelled
            # meanwhile (an ``end`` left in a log with no wake is never sent).
            await self._wake_readers(batch, result)

    async def _wake_readers(
        self,
        batch: list[_Queued],
        result: list[Any],
    ) -> None:
        """Hand each logged frame to this node's sockets, then send each other node that holds
        some of the clients one message with its share of the batch; clients whose holder is
        unknown are woken one by one."""
        epoch = _text(result[0])
        position = 1
        by_node: dict[str, list[bytes]] = {}
        unknown: dict[str, None] = {}  # ordered, each once
        for group, frame, future, gather_s in batch:
            count = int(result[position])
            if count < 0:  # an end whose claim another node took over: not logged
                position += 1
                if not future.done():
                    future.set_exception(EndTakenOver())
                continue
            values = result[position + 1 : position + 1 + 3 * count]
            position += 1 + 3 * count
            targets: list[tuple[str, int]] = []
            pairs: dict[str, list[str | int]] = {}
            for raw_client, raw_seq, raw_node in zip(
                values[::3], values[1::3], values[2::3], strict=True
            ):
                client, seq, node = _text(raw_client), int(raw_seq), _text(raw_node)
                targets.append((client, seq))
                state = self.clients.get(client)
                if state is not None and state.connection is not None:
                    # Handed over as logged, so this node's writer need not read it back.
                    state.connection.offer(epoch, seq, frame)
                    state.connection.notify(gather_s)
                elif not node:
                    unknown[client] = None
                if node:  # held on another node (also when a socket here is being replaced)
                    pairs.setdefault(node, []).extend((client, seq))
            for node, listed in pairs.items():
                # The frame as logged (JSON without seq) and the clients' seqs.
                by_node.setdefault(node, []).append(
                    b"[" + group[0] + b"," + orjson.dumps(listed) + b"]"
                )
            if not future.done():
                future.set_result(targets)
        for node, frames in by_node.items():
            payload = b"[" + orjson.dumps(epoch) + b",[" + b",".join(frames) + b"]]"
            try:
                await self.bus.publish(self._k("wake-node", node), payload)
            except BusError as exc:
                # The holder re-reads every log when its bus reconnects; nothing is lost.
                log.warning("waking node %s failed: %s", node, exc)
        await self.wake(unknown)

    async def _on_node_wake(self, message: BusMessage) -> None:
        """Another node logged frames for sockets held here: each writer is handed them as
        logged (it sends them when they are next in line, and reads the log for a gap)."""
        try:
            epoch, groups = orjson.loads(message.payload)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            log.warning("dropped a malformed wake from node %s", message.sender)
            return
        woken: dict[str, Connection] = {}
        elsewhere: dict[str, None] = {}
        for frame, listed in groups:
            for client, seq in zip(listed[::2], listed[1::2], strict=True):
                state = self.clients.get(client)
                connection = state.connection if state is not None else None
                if connection is None or connection.closed.is_set():
                    # Not (or no longer) held here though attached:<id> said so (a socket
                    # replaced, a record not yet updated): whoever holds it reads its log.
                    elsewhere[client] = None
                    continue
                connection.offer(epoch, seq, frame)
                woken[client] = connection
        for connection in woken.values():
            connection.notify()
        if elsewhere:
            await self.wake(elsewhere)

    async def snapshots(self, client_id: str, keys: Iterable[ConversationKey]) -> int | None:
        first: int | None = None
        for key in keys:
            seq = await self.snapshot(client_id, key)
            if seq is not None:
                first = seq if first is None else first
                state = self.clients.get(client_id)
                if state is not None and state.connection is not None:
                    state.connection.notify()
                else:
                    await self.wake((client_id,))
        return first

    async def answer_began(self, progress: Progress) -> None:
        """Nothing to do: the answer's progress grows with its fan-outs (see fan_out)."""

    async def answer_ended(self, progress: Progress) -> None:
        await self.drop_progress(progress.key, progress.request_id)

    async def snapshot(self, client_id: str, key: ConversationKey) -> int | None:
        """Log a ``snapshot`` of the answer running in ``key`` (on any node) for the client;
        its seq, None when no answer is running there.

        Read and logged in one step, so each piece of that answer is either in the snapshot or
        logged for the client after it (if it is subscribed): nothing falls in between.
        """
        name, log = conversation_name(key), self.log
        fields = orjson.dumps(key.fields()).decode()[1:-1]
        result = await self._call(
            self._snapshot(
                keys=[log.epoch_key, self._k("running", name)],
                args=[
                    os.urandom(6).hex(),
                    log.max_frames,
                    log.max_age_ms,
                    log.counter_ttl_ms,
                    log.log_prefix,
                    client_id,
                    self._k("progress", name, ""),
                    fields,
                    log.max_client_bytes,
                ],
            )
        )
        return int(result[1]) if len(result) > 1 else None

    def _progress_keys(self, key: ConversationKey, request_id: str) -> tuple[str, str]:
        # Request ids are unique per user only; one answer runs at a time per conversation.
        base = self._k("progress", conversation_name(key), request_id)
        return f"{base}:text", f"{base}:steps"

    async def progress(
        self, key: ConversationKey, request_id: str
    ) -> tuple[str, list[dict[str, Any]]]:
        """The text and steps of a running answer so far (wherever it runs)."""
        text_key, steps_key = self._progress_keys(key, request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(text_key)
            pipe.lrange(steps_key, 0, -1)
            text, steps = await self._call(pipe.execute())
        return (text or b"").decode(), [orjson.loads(step) for step in steps]

    async def drop_progress(self, key: ConversationKey, request_id: str) -> None:
        text_key, steps_key = self._progress_keys(key, request_id)
        base = steps_key[: -len("steps")]
        keys = (text_key, steps_key, base + "tools", base + "interrupts")
        await self._call(self.redis.delete(*keys))

    async def wake(self, client_ids: Iterable[str]) -> None:
        """Tell whichever node holds these clients' sockets to read their logs."""
        for client_id in client_ids:
            try:
                await self.bus.publish(self._k("wake", client_id), WAKE)
            except BusError as exc:
                # The holder re-reads every log when its bus reconnects; nothing is lost.
                log.warning("waking %s failed: %s", client_id, exc)
                return

    # --- sockets -----------------------------------------------------------------------------

    async def attached(self, client_id: str) -> None:
        """A socket of ``client_id`` is attached here: listen for its wakes, tell the others
        (a socket of the same client on another node is closed as replaced)."""

        async def on_message(message: BusMessage) -> None:
            state = self.clients.get(client_id)
            current = state.connection if state is not None else None
            if current is None:
                return
            if message.payload.startswith(ATTACHED):
                # Handshakes race across nodes: a socket whose handshake began earlier (one the
                # client already gave up on) may finish attaching later. The socket that
                # arrived last wins: an older one closes; a newer one answers with its own
                # arrival so that the older one, wherever it is, closes.
                announced = int(message.payload[len(ATTACHED) :] or 0)
                if current.generation < announced:
                    await current.close(CloseCode.REPLACED, "replaced by a newer connection")
                elif current.generation > announced:
                    await self._hold(client_id)  # wakes (attached:<id>) follow the live socket
                    await self._announce(client_id, current.generation)
            else:
                current.notify()

        previous = self._watchers.pop(client_id, None)
        if previous is not None:
            await self.bus.unsubscribe(self._k("wake", client_id), previous)
        self._watchers[client_id] = on_message
        await self.bus.subscribe(self._k("wake", client_id), on_message)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._k("attached", client_id), self.bus.node_id, px=int(self.ttl_s * 1000))
            pipe.zadd(self._k("clients"), {client_id: self._expiry()})
            await self._call(pipe.execute())
        state = self.clients.get(client_id)
        if state is not None and state.connection is not None:
            await self._announce(client_id, state.connection.generation)

    async def _hold(self, client_id: str) -> None:
        """Record that this node holds the client's socket again (another node's attach
        overwrote the record before its socket lost the race)."""
        try:
            key, lease = self._k("attached", client_id), int(self.ttl_s * 1000)
            await self.redis.set(key, self.bus.node_id, px=lease)
        except (RedisError, OSError) as exc:
            log.warning("recording that %s is held here failed: %s", client_id, exc)

    async def _announce(self, client_id: str, generation: int) -> None:
        try:
            await self.bus.publish(self._k("wake", client_id), ATTACHED + b"%d" % generation)
        except BusError as exc:
            log.warning("announcing %s failed: %s", client_id, exc)

    async def detached(self, client_id: str) -> None:
        handler = self._watchers.pop(client_id, None)
        if handler is not None:
            await self.bus.unsubscribe(self._k("wake", client_id), handler)
        try:
            await self._detach(
                keys=[self._k("attached", client_id), self._k("clients")],
                args=[self.bus.node_id, client_id, self._expiry()],
            )
        except (RedisError, OSError) as exc:
            log.warning("recording that %s left failed: %s", client_id, exc)
        # Frames may have been routed here for a newer socket of the client on another node
        # (while this one was being replaced): that node's writer reads them from the log.
        await self.wake((client_id,))
