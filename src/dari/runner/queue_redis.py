"""Several nodes: one queue per conversation in Redis, run by whoever holds its lease.

A chat arriving at any node is pushed onto ``queue:<conversation>``; the node then tries to take
``lease:<conversation>`` (SET NX PX, ``cluster.lease_s``). The holder pops and runs the chats
one at a time, renewing the lease every ``cluster.renew_s``; when the queue is empty it releases
the lease in the same atomic step that checks the queue (so a chat pushed meanwhile is never
stranded). Answers thus run one at a time per conversation, in the order the chats were pushed,
whichever node took them.

A node that dies stops renewing. Every node's reaper (every ``cluster.reap_s``) looks for
leases past their expiry (``leases``, a sorted set of expiry times) and claims each one
atomically: the claimer ends the answer that was running honestly (``agent_failed``, then
``end`` with ``error``), saves the text its subscribers received as ``failed``
(``progress:<request_id>``, see hub/delivery_redis.py), and starts the next chat of that
conversation.
The end of an answer is claimed once (``ended:<run>``, holding the claimer's node id) and its
``end`` is logged only while that claim holds, in the step that marks it done (``<node>!``, see
``publish_end``): a node that comes back after being reaped neither saves nor ends it a second
time, a reaper takes over the claim of a node that died before logging its end, and a node's
own claim is never taken for a lost lease by its renewals. While a reaper ends an answer, the
conversation stays due and running (see ``_CLAIM_DEAD``), so a reaper that dies or gives up is
followed by another. The lease is released only after the
answer's final save, so the next chat of the conversation never starts before it. A pushed chat
is due for a worker within a lease (``leases``), so a node that dies between pushing it and
taking the lease strands nothing.

Accepting a chat and pushing it happen under ``order:<conversation>`` (a short lock, taken
after a local one), so the order of user messages in history is the order of the queue. Each
queued chat gets a run id of its own, because request ids are unique per user only.

Cancel works from any node: a queued chat is removed from the list by the node that got the
cancel; a running one is cancelled by its node, told over the bus (channel ``<prefix>cancel``,
carrying the run id). A chat is found by ``req:<[user, request id]>``, so, as on one node, a
user can neither cancel nor probe another user's request that happens to share its id.

A question an answer asks (an interrupt) is ``question:<id>`` (a hash: conversation, state,
and the value once answered). The answer waits on the node running it, keeping its lease; a
``resume`` on any node answers the hash atomically (once: a second one finds it answered) and
hands the value over the bus (channel ``<prefix>resume``) to the node that waits. If that message
is lost, the waiting node finds the value in the hash when the question would expire.

Delegated tasks go through the same queue. Their conversation is new and their own, so the
delegating node takes the lease and runs the task at once; what the task is for (its agent and
the delegating conversation) travels with it, in the queued chat and in ``answer:<run>``. The
node that ends the task reports it (task row, report in history, ``auto_report``): its own node
when it finishes, or the reaper that failed it when that node died. The end is claimed once, so
the report is made once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import orjson
from redis.exceptions import RedisError

from dari.auth.base import Principal
from dari.buses.base import BusError, BusMessage
from dari.hub.delivery_redis import EndClaim, RedisDelivery, conversation_name, conversation_of
from dari.protocol import frames
from dari.protocol.errors import ErrorCode, StoreUnavailable, Unavailable
from dari.protocol.frames import ConversationKey, Frame
from dari.runner.answer import AnswerRun, retrying
from dari.runner.jobs import DelegatedTask, Job, Outcome
from dari.runner.queue import AnswerResult, ClosedState, ConversationQueue, OrderingLocks
from dari.supervise import supervise

if TYPE_CHECKING:
    from dari.runner.runner import Runner

log = logging.getLogger("dari.runner")

RECORD_TTL_S = 24 * 3600.0  # bookkeeping of one request outlives any answer
ORDER_LOCK_S = 10.0  # the longest a chat's acceptance may hold its conversation's order

# KEYS: lease, leases. ARGV: node, lease ms, conversation, expiry ms, running run id ('' none),
# ended:<run> key. Take or keep the lease; 0 when another node holds it or the running
# answer was already ended by another node (a reaper). Its own end ("<node>", or "<node>!" once
# logged) is not a loss.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if ARGV[5] ~= '' then
  local ended = redis.call('GET', ARGV[6])
  if ended and ended ~= ARGV[1] and ended ~= ARGV[1] .. '!' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1
"""

# KEYS: lease, leases. ARGV: node, lease ms, conversation, expiry ms. 1 when taken.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  return 1
end
return 0
"""

# KEYS: queue, lease, leases. ARGV: node, conversation. 1 released, 0 not empty, -1 not ours.
_RELEASE_IF_EMPTY = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('LLEN', KEYS[1]) > 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""

# KEYS: leases, lease, running. ARGV: conversation, now ms, expiry ms of the reaper's hold.
# "<run> <request>" running ('' if none) when this node claimed the dead lease; nil when it is
# alive or another node claimed it. An answer to end stays due (at the hold's expiry, which the
# reaper renews) and running until its end is logged: if the reaper dies or loses Redis first,
# another round, here or on another node, takes it up again.
_CLAIM_DEAD = """
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) > tonumber(ARGV[2]) then return false end
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local running = redis.call('GET', KEYS[3]) or ''
if running == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return running
"""

# KEYS: ended:<run>, answer:<run>, req:<[user, request]>. ARGV: TTL ms, the claimer ("<node>"
# for the answer's own node, "<node>~r" for a reaper), '1' when a reaper ends the answer of a
# node that stopped renewing, the caller's node. The answer's record ({} if none) when this
# caller ends it; nil when someone already did. A claim whose end was not logged yet (no "!"
# mark, see publish_end) is taken over by a reaper: its node died in between, or it was a
# reaper that died or gave up (its own node's reaper may take it again). Only the claim of an
# answer running on the caller's own node is not: that node is alive. The running mark and the
# record stay until the end is logged (hub/delivery_redis.py, op 'end').
_CLAIM_END = """
local holder = redis.call('GET', KEYS[1])
if holder and (ARGV[3] ~= '1' or holder == ARGV[4] or string.sub(holder, -1) == '!') then
  return false
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
local record = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[3])
return record
"""

# KEYS: order:<conversation>. ARGV: token. Release the ordering lock if this caller holds it.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: queue, running. ARGV: TTL ms. The next queued chat, marked running in the same step, so
# that a chat's depth never misses it between the queue and the run (nil when none is queued).
_POP = """
local payload = redis.call('LPOP', KEYS[1])
if not payload then return false end
local chat = cjson.decode(payload)
redis.call('SET', KEYS[2], chat['x'] .. ' ' .. chat['r'], 'PX', ARGV[1])
return payload
"""

# KEYS: lease, leases. ARGV: conversation. A draining node offers a conversation it will not
# run: marked expired now, so that the next reaper round of another node takes it and starts
# its queue. Nothing to do while a lease is held (its holder pops the chat).
_OFFER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""

# KEYS: queue, lease, leases. ARGV: node, conversation. A draining node lets go of a lease it
# holds between answers; chats still queued are offered to the other nodes (see _OFFER).
_LET_GO = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('LLEN', KEYS[1]) > 0 then
  redis.call('ZADD', KEYS[3], 0, ARGV[2])
else
  redis.call('ZREM', KEYS[3], ARGV[2])
end
return 1
"""

# KEYS: question:<id>. ARGV: value JSON. Answer a pending question: {'accepted'} when this call
# did, else {state} ('unknown' when there is no such question).
_ANSWER = """
local state = redis.call('HGET', KEYS[1], 's')
if not state then return {'unknown'} end
if state ~= 'pending' then return {state} end
redis.call('HSET', KEYS[1], 's', 'answered', 'v', ARGV[1])
return {'accepted'}
"""

# KEYS: question:<id>. ARGV: the closing state. Close a pending question: {state} as it was
# ('pending' when this call closed it), with the value when it had been answered.
_SETTLE = """
local state = redis.call('HGET', KEYS[1], 's')
if not state then return {'unknown'} end
if state == 'pending' then redis.call('HSET', KEYS[1], 's', ARGV[1]) end
if state == 'answered' then return {state, redis.call('HGET', KEYS[1], 'v')} end
return {state}
"""

# KEYS: queue. Every queued chat, removed.
_DRAIN = """
local queued = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return queued
"""


def _encode_task(task: DelegatedTask) -> list[str]:
    return [task.agent_name, conversation_name(task.origin)]


def _decode_task(value: list[str]) -> DelegatedTask:
    return DelegatedTask(value[0], conversation_of(value[1]))


def _encode(job: Job, run_id: str) -> bytes:
    key = job.key
    data: dict[str, Any] = {
        "x": run_id,
        "r": job.request_id,
        "k": key.parts(),
        "m": job.message,
        "i": job.images,
        "u": job.user_id,
    }
    if job.delegated is not None:
        data["t"] = _encode_task(job.delegated)
    if job.principal is not None:
        data["p"] = job.principal.to_json()
    if job.ticket is not None:
        data["q"] = job.ticket
    return orjson.dumps(data)


def _run_of(payload: bytes) -> str:
    run_id: str = orjson.loads(payload)["x"]
    return run_id


def _decode(payload: bytes) -> tuple[Job, str]:
    data = orjson.loads(payload)
    task = _decode_task(data["t"]) if "t" in data else None
    job = Job(data["r"], ConversationKey(*data["k"]), data["m"], data["i"], data["u"], task)
    job.principal = Principal.from_json(data["p"]) if "p" in data else None
    job.ticket = data.get("q")
    return job, data["x"]


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; whether it is. The keepers' tick: they stop on
    the event as well as by cancel (redis-py's ``wait_for`` can swallow a cancel on 3.11)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


class RedisQueue(ConversationQueue):
    hands_over = True  # any node's worker runs a conversation's queue
    begins_with_row = True

    def __init__(self, runner: Runner, delivery: RedisDelivery) -> None:
        self.runner = runner
        self.hub = delivery
        self.bus = delivery.bus
        self.node_id = delivery.bus.node_id
        self.redis = delivery.redis
        self.prefix = delivery.prefix
        # A dead node's answer is ended at most lease_s + reap_s after its last renewal.
        self.timing = runner.settings.cluster
        self._hold = self.redis.register_script(_HOLD)
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._release_if_empty = self.redis.register_script(_RELEASE_IF_EMPTY)
        self._claim_dead = self.redis.register_script(_CLAIM_DEAD)
        self._claim_end = self.redis.register_script(_CLAIM_END)
        self._drain = self.redis.register_script(_DRAIN)
        self._unlock = self.redis.register_script(_UNLOCK)
        self._pop = self.redis.register_script(_POP)
        self._offer = self.redis.register_script(_OFFER)
        self._let_go = self.redis.register_script(_LET_GO)
        self._answer = self.redis.register_script(_ANSWER)
        self._settle = self.redis.register_script(_SETTLE)
        self._waiting: dict[str, asyncio.Future[Any]] = {}  # questions asked by answers here
        self._local_order = OrderingLocks()
        self.workers: dict[str, asyncio.Task[None]] = {}
        self._leaving: set[asyncio.Task[Any]] = set()  # workers releasing their lease
        self.current: dict[str, Job] = {}  # conversation name -> the job running here
        self._runs: dict[str, str] = {}  # conversation name -> the run id of that job
        self._ended_elsewhere: set[str] = set()  # run ids a reaper ended: not ours to report
        self._reaper: asyncio.Task[None] | None = None
        self._reaper_id = f"{self.node_id}~r"  # who holds an end this node's reaper claimed

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _req(self, user_id: str, request_id: str) -> str:
        # Request ids are chosen per user: the user is part of the key.
        return self._k("req", orjson.dumps([user_id, request_id]).decode())

    async def _call(self, work: Any) -> Any:
        try:
            return await work
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"the shared queue is unreachable: {exc}") from exc

    @staticmethod
    def _ms(seconds: float) -> int:
        return int(seconds * 1000)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.subscribe(self._k("cancel"), self._on_cancel)
        await self.bus.subscribe(self._k("resume"), self._on_resume)
        self._reaper = supervise(self._reap_forever(), "reaping expired leases")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        # Running answers are stopped (and saved as failed) by the runner; the leases are left
        # to expire, so another node's reaper takes up what is still queued. Workers start
        # nothing new while closing; each first reports the task it was running, if any.
        workers = list(self.workers.values())
        if workers:
            _, late = await asyncio.wait(workers, timeout=5)
            for worker in late:
                worker.cancel()
            if late:
                await asyncio.wait(late, timeout=5)

    async def stop_starting(self) -> None:
        """Draining: chats keep being queued here, for other nodes. This node takes no lease
        (``_start_if_free``), its reaper stops after the round in progress, and each worker
        lets go of its lease once its answer is saved (``_work``)."""

    async def hand_over(self, timeout: float) -> None:
        workers = list(self.workers.values())
        if workers:
            await asyncio.wait(workers, timeout=timeout)

    # --- submitting --------------------------------------------------------------------------

    @asynccontextmanager
    async def _ordered(self, key: ConversationKey) -> AsyncIterator[None]:
        name = conversation_name(key)
        # Local callers queue on a local lock first (in arrival order, no polling of Redis);
        # the Redis lock then orders this node against the others.
        async with self._local_order.hold(key):
            lock, token = self._k("order", name), uuid.uuid4().hex
            ttl = self._ms(ORDER_LOCK_S)
            delay = 0.002
            async with asyncio.timeout(ORDER_LOCK_S):
                while not await self._call(self.redis.set(lock, token, nx=True, px=ttl)):
                    await asyncio.sleep(delay)  # another node accepts a chat here right now
                    delay = min(delay * 2, 0.05)
            try:
                yield
            finally:
                with contextlib.suppress(StoreUnavailable):
                    await self._call(self._unlock(keys=[lock], args=[token]))

    def ordered(self, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        return self._ordered(key)

    def size(self) -> int:
        return len(self.current)

    def running_here(self) -> list[Job]:
        return list(self.current.values())

    async def depth(self, key: ConversationKey) -> int:
        name = conversation_name(key)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(self._k("queue", name))
            pipe.exists(self._k("running", name))
            queued, running = await self._call(pipe.execute())
        return int(queued) + int(running)

    async def enqueue(self, job: Job) -> int:
        """Queue ``job`` for its conversation on every node; how many answers are ahead.

        A delegated task is queued the same way (its conversation is its own, so this node
        takes the lease and runs it at once): it is then reaped like any answer if this node
        dies, and whichever node ends it reports it.
        """
        name = conversation_name(job.key)
        payload = _encode(job, uuid.uuid4().hex)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.llen(self._k("queue", name))
            pipe.exists(self._k("running", name))
            pipe.rpush(self._k("queue", name), payload)
            pipe.hset(self._req(job.user_id, job.request_id), mapping={"c": name, "p": payload})
            pipe.pexpire(self._req(job.user_id, job.request_id), self._ms(RECORD_TTL_S))
            # Due for a worker within a lease: if this node dies (or Redis goes away) before
            # it takes the lease below, a reaper finds the entry expired and starts the queue.
            # NX: a holder's own expiry is left as it is.
            pipe.zadd(self._k("leases"), {name: self._expiry()}, nx=True)
            queued, running, *_ = await self._call(pipe.execute())
        await self._start_if_free(job.key)
        return int(queued) + int(running)

    async def _start_if_free(self, key: ConversationKey) -> None:
        name = conversation_name(key)
        worker = self.workers.get(name)
        if worker is not None and not worker.done() and worker not in self._leaving:
            # This node's worker pops it (taking the lease again if it expired meanwhile, as
            # when Redis was away longer than a lease): a second one here would run the
            # conversation's chats side by side.
            return
        if self.runner.draining:
            await self._call(
                self._offer(keys=[self._k("lease", name), self._k("leases")], args=[name])
            )
            return
        taken = await self._call(
            self._acquire(
                keys=[self._k("lease", name), self._k("leases")],
                args=[self.node_id, self._ms(self.timing.lease_s), name, self._expiry()],
            )
        )
        if taken:
            self.workers[name] = supervise(self._work(key), f"queue of {name}")

    def _expiry(self) -> int:
        return self._ms(time.time() + self.timing.lease_s)

    # --- running -----------------------------------------------------------------------------

    async def _work(self, key: ConversationKey) -> None:
        name = conversation_name(key)
        me = asyncio.current_task()
        assert me is not None
        lost = asyncio.Event()
        stop = asyncio.Event()
        keeper = asyncio.create_task(self._keep(key, lost, stop))
        try:
            while not lost.is_set() and not self.runner.closing and not self.runner.draining:
                payload = await self._call(
                    self._pop(
                        keys=[self._k("queue", name), self._k("running", name)],
                        args=[self._ms(RECORD_TTL_S)],
                    )
                )
                if payload is None:
                    # Leaving: a chat pushed meanwhile is started by whoever pushed it.
                    self._leaving.add(me)
                    released = await self._call(
                        self._release_if_empty(
                            keys=[
                                self._k("queue", name),
                                self._k("lease", name),
                                self._k("leases"),
                            ],
                            args=[self.node_id, name],
                        )
                    )
                    if released != 0:
                        return
                    self._leaving.discard(me)
                    continue
                job, run_id = _decode(payload)
                await self._run(name, job, run_id)
            if self.runner.draining and not lost.is_set():
                # Its answer is saved: another node runs what is queued here from now on.
                await self._call(
                    self._let_go(
                        keys=[self._k("queue", name), self._k("lease", name), self._k("leases")],
                        args=[self.node_id, name],
                    )
                )
        except Exception:
            log.exception("the queue of %s stopped on this node; its lease will expire", key)
        finally:
            # Both: a cancel can be lost inside redis-py (its wait_for on Python 3.11), and a
            # keeper that outlived its worker would hold the conversation's lease for ever.
            stop.set()
            keeper.cancel()
            self._leaving.discard(me)
            if self.workers.get(name) is me:
                del self.workers[name]

    async def _run(self, name: str, job: Job, run_id: str) -> None:
        task = job.delegated
        answer = self._k("answer", run_id)
        record: dict[Any, Any] = {
            "c": name,
            "n": self.node_id,
            "r": job.request_id,
            "u": job.user_id,
        }
        if task is not None:
            record["t"] = orjson.dumps(_encode_task(task)).decode()  # for a reaper to report it
        if job.ticket is not None:
            record["q"] = job.ticket  # for a reaper to give the user's place back
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(answer, mapping=record)
            pipe.pexpire(answer, self._ms(RECORD_TTL_S))
            await self._call(pipe.execute())
        self.current[name] = job
        self._runs[name] = run_id
        job.task = asyncio.create_task(AnswerRun(self.runner, job).run())
        outcome: Outcome | None = None
        try:
            outcome = await job.task
        except asyncio.CancelledError:
            if self.runner.closing:
                # The node is stopping: the answer was saved as failed here, so is the task.
                if task is not None and run_id not in self._ended_elsewhere:
                    stopped = Outcome("error", "", f"the node running it ({self.node_id}) stopped")
                    await self._report(job, task, stopped)
                raise
        except StoreUnavailable:
            # Its end could not be logged: this node stops serving the queue and leaves the
            # lease to expire, so a reaper ends the answer for its subscribers once Redis is back.
            raise
        except Exception:
            log.exception("answer %s crashed", job.request_id)
        finally:
            self.current.pop(name, None)
            self._runs.pop(name, None)
        if run_id in self._ended_elsewhere:
            self._ended_elsewhere.discard(run_id)  # a reaper ended it, and reported it
        elif task is not None and outcome is not None:
            await self._report(job, task, outcome)

    async def _report(self, job: Job, task: DelegatedTask, outcome: Outcome) -> None:
        try:
            await self.runner.report_task(job.request_id, task.agent_name, task.origin, outcome)
        except Exception:
            log.exception("reporting task %s failed", job.request_id)

    async def _keep(self, key: ConversationKey, lost: asyncio.Event, stop: asyncio.Event) -> None:
        """Renew the lease while answers run (until ``stop``); on losing it, stop the answer
        running here."""
        name = conversation_name(key)
        while not await _stopped_within(stop, self.timing.renew_s):
            running = self._runs.get(name, "")
            try:
                held = await self._hold(
                    keys=[self._k("lease", name), self._k("leases")],
                    args=[
                        self.node_id,
                        self._ms(self.timing.lease_s),
                        name,
                        self._expiry(),
                        running,
                        self._k("ended", running),
                    ],
                )
            except (RedisError, OSError) as exc:
                log.warning("renewing the lease of %s failed: %s", key, exc)
                continue  # maybe a blip; if it lasts, another node reaps and we find out
            if not held:
                log.error("lost the lease of %s; stopping its answer here", key)
                lost.set()
                job = self.current.get(name)
                if job is not None:
                    self.runner.cancel_job(job)
                return

    def runs(self, job: Job) -> bool:
        """Whether ``job`` is running here, taken from the shared queue."""
        return self.current.get(conversation_name(job.key)) is job

    async def begun(self, job: Job, message_id: int) -> None:
        """The answer's row exists: a reaper can now save what it streamed."""
        if not self.runs(job):
            return
        run_id = self._runs[conversation_name(job.key)]
        await self._call(self.redis.hset(self._k("answer", run_id), "m", message_id))

    async def claim_end(self, job: Job) -> bool:
        """Whether the caller ends the answer (saves it and sends ``end``): only once."""
        if not self.runs(job):
            return True
        name = conversation_name(job.key)
        run_id = self._runs.get(name, "")
        record = await self._call(self._end_record(run_id, job.request_id, job.user_id))
        if record is None:
            self._ended_elsewhere.add(run_id)
        return record is not None

    async def publish_end(self, job: Job, frame: Frame) -> None:
        if not self.runs(job):  # a queued chat that never ran here
            await self.runner.hub.publish(job.key, frame)
            return
        name = conversation_name(job.key)
        run_id = self._runs[name]
        if not await self._publish_end(job.key, run_id, job.request_id, frame):
            self._ended_elsewhere.add(run_id)  # a reaper took it for dead, ended and reported it

    async def _publish_end(
        self,
        key: ConversationKey,
        run_id: str,
        request_id: str,
        frame: Frame,
        claimer: str | None = None,
    ) -> bool:
        name = conversation_name(key)
        claim = EndClaim(
            ended_key=self._k("ended", run_id),
            claimer=claimer or self.node_id,
            running_key=self._k("running", name),
            run=f"{run_id} {request_id}",
            answer_key=self._k("answer", run_id),
        )
        local = self.runner.hub.conversation_subscribers(key)
        return await self.hub.publish_end(key, local, frame, claim)

    async def _end_record(
        self, run_id: str, request_id: str, user_id: str, *, reaping: bool = False
    ) -> dict[str, str] | None:
        result = await self._claim_end(
            keys=[
                self._k("ended", run_id),
                self._k("answer", run_id),
                self._req(user_id, request_id),
            ],
            args=[
                self._ms(RECORD_TTL_S),
                self._reaper_id if reaping else self.node_id,
                "1" if reaping else "0",
                self.node_id,
            ],
        )
        if result is None:
            return None
        pairs = [_text(item) for item in result]
        return dict(zip(pairs[::2], pairs[1::2], strict=True))

    # --- the reaper --------------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        cut_off = False
        while True:
            await asyncio.sleep(self.timing.reap_s)
            if self.runner.draining:
                return  # what it took up it could not run; other nodes reap
            try:
                if cut_off:
                    # Redis was away: every lease may have expired meanwhile, the live
                    # holders' too. They take theirs again at their next renewal; only a
                    # lease still expired one lease later is a dead node's.
                    await self.redis.ping()
                    cut_off = False
                    await asyncio.sleep(self.timing.lease_s)
                    continue
                await self.reap()
            except (RedisError, OSError) as exc:
                # Once per outage, not once per round: the bus already logs the lost link.
                if not cut_off:
                    log.warning("cannot look for expired leases: %s", exc)
                cut_off = True
                continue
            except Exception:
                log.exception("reaping expired leases failed")

    async def reap(self) -> int:
        """End the answers of nodes that stopped renewing their leases; restart their queues."""
        now = self._ms(time.time())
        expired = await self.redis.zrangebyscore(self._k("leases"), "-inf", now, start=0, num=16)
        count = 0
        for raw in expired:
            name = _text(raw if isinstance(raw, bytes | str) else None)
            running = await self._claim_dead(
                keys=[self._k("leases"), self._k("lease", name), self._k("running", name)],
                args=[name, now, self._expiry()],
            )
            if running is None:
                continue  # alive after all, or another node claimed it
            count += 1
            key = conversation_of(name)
            if running:
                run_id, _, request_id = _text(running).partition(" ")
                await self._end_dead(key, run_id, request_id)
            if await self.redis.llen(self._k("queue", name)):
                await self._start_if_free(key)
        return count

    async def _end_dead(self, key: ConversationKey, run_id: str, request_id: str) -> None:
        """End the answer of a node that died, holding it due meanwhile (see _CLAIM_DEAD)."""
        stop = asyncio.Event()
        keeper = asyncio.create_task(self._keep_due(conversation_name(key), stop))
        try:
            await self._end_dead_answer(key, run_id, request_id)
        finally:
            stop.set()  # the keeper stops on the event (a cancel alone can be lost on 3.11)
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_due(self, name: str, stop: asyncio.Event) -> None:
        """Push the conversation's due time on while this reaper ends its answer: only a
        reaper that stopped (died, or lost Redis for good) lets another one take it up."""
        while not await _stopped_within(stop, self.timing.renew_s):
            try:
                # XX: only while due (a worker that took the lease meanwhile owns the entry).
                await self.redis.zadd(self._k("leases"), {name: self._expiry()}, xx=True, gt=True)
            except (RedisError, OSError) as exc:
                log.warning("holding %s while ending its answer failed: %s", name, exc)

    async def _end_dead_answer(self, key: ConversationKey, run_id: str, request_id: str) -> None:
        user_id = _text(await self.redis.hget(self._k("answer", run_id), "u"))
        record = await self._end_record(run_id, request_id, user_id, reaping=True)
        if record is None:
            return  # its node ended it after all
        node = record.get("n", "?")
        log.warning("node %s stopped while answering %s in %s: ending it", node, request_id, key)
        await self.runner.release(user_id, record.get("q"))  # the user's running place
        if record.get("i"):  # it waited for an answer: nobody can give it one now
            await self._settle(keys=[self._k("question", record["i"])], args=["cancelled"])
        text, steps = await self.hub.progress(key, request_id)
        store = self.runner.store
        if record.get("m"):
            await store.save_answer(int(record["m"]), text, "failed", steps)
        elif not await store.answered(key, request_id):
            # Its node died before the answer's row was written: the row is added here, so
            # history still shows the answer (failed) where it ran.
            message_id = await store.begin_answer(key, request_id, self.node_id)
            await store.save_answer(message_id, text, "failed", steps)
        hub = self.runner.hub
        message = f"the node answering this ({node}) stopped; the answer is incomplete"
        error = {**frames.error(ErrorCode.AGENT_FAILED, message, request_id), **key.fields()}
        # Ended here or nowhere (the claim is this node's now): through a Redis restart too.
        await retrying(lambda: hub.publish(key, dict(error)))
        end = frames.answer_frame("end", key, request_id, finish_reason="error")
        await retrying(
            lambda: self._publish_end(key, run_id, request_id, dict(end), self._reaper_id)
        )
        await self.hub.drop_progress(key, request_id)
        if record.get("t"):
            # A delegated task: it failed with its node, and says so where it was asked for.
            task = _decode_task(orjson.loads(record["t"]))
            outcome = Outcome("error", text, f"the node running it ({node}) stopped")
            await self.runner.report_task(request_id, task.agent_name, task.origin, outcome)

    # --- cancelling --------------------------------------------------------------------------

    async def _on_cancel(self, message: BusMessage) -> None:
        run_id = message.payload.decode()
        for name, running in list(self._runs.items()):
            job = self.current.get(name)
            if running == run_id and job is not None:
                self.runner.cancel_job(job)

    async def locate(self, request_id: str, user_id: str) -> ConversationKey | None:
        """The conversation of ``user_id``'s chat queued or running on any node."""
        name = await self._call(self.redis.hget(self._req(user_id, request_id), "c"))
        return conversation_of(name) if name else None

    async def cancel_request(self, request_id: str, user_id: str) -> bool:
        record = await self._call(self.redis.hgetall(self._req(user_id, request_id)))
        if not record:
            return False
        name, payload = _text(record[b"c"]), record[b"p"]
        if await self._call(self.redis.lrem(self._k("queue", name), 1, payload)):
            await self._end_unstarted(_decode(payload)[0])
            return True
        return await self._cancel_running(name, _run_of(payload))

    async def _cancel_running(self, name: str, run_id: str) -> bool:
        """Cancel run ``run_id`` if it is the one running in conversation ``name``."""
        running = _text(await self._call(self.redis.get(self._k("running", name))))
        if running.partition(" ")[0] != run_id:
            return False
        job = self.current.get(name)
        if job is not None and self._runs.get(name) == run_id:
            self.runner.cancel_job(job)
            return True
        try:
            await self.bus.publish(self._k("cancel"), run_id.encode())
        except BusError as exc:
            raise Unavailable(
                f"cannot reach the node running it: {exc}", code=ErrorCode.INTERNAL
            ) from exc
        return True

    async def cancel_conversation(self, key: ConversationKey) -> int:
        name = conversation_name(key)
        queued = await self._call(self._drain(keys=[self._k("queue", name)]))
        for payload in queued:
            await self._end_unstarted(_decode(payload)[0])
        running = _text(await self._call(self.redis.get(self._k("running", name))))
        cancelled = len(queued)
        if running and await self._cancel_running(name, running.partition(" ")[0]):
            cancelled += 1
        return cancelled

    async def _end_unstarted(self, job: Job) -> None:
        await self._call(self.redis.delete(self._req(job.user_id, job.request_id)))
        await self.runner.end_unstarted(job)

    # --- questions -----------------------------------------------------------------------------

    async def ask(self, job: Job, interrupt_id: str, timeout_s: float) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[interrupt_id] = future
        key, name = self._k("question", interrupt_id), conversation_name(job.key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"c": name, "s": "pending"})
            pipe.pexpire(key, self._ms(timeout_s + RECORD_TTL_S))
            if self.runs(job):
                # For a reaper: the question of an answer whose node died is closed with it.
                pipe.hset(self._k("answer", self._runs[name]), "i", interrupt_id)
            try:
                await self._call(pipe.execute())
            except BaseException:
                del self._waiting[interrupt_id]
                raise
        return future

    async def question(self, interrupt_id: str) -> ConversationKey | None:
        name = await self._call(self.redis.hget(self._k("question", interrupt_id), "c"))
        return conversation_of(_text(name)) if name else None

    async def answer(self, interrupt_id: str, value: Any) -> AnswerResult:
        encoded = orjson.dumps(value)
        result = await self._call(
            self._answer(keys=[self._k("question", interrupt_id)], args=[encoded])
        )
        state = cast(AnswerResult, _text(result[0]))
        if state != "accepted":
            return state
        if not self._hand_over(interrupt_id, value):
            try:
                await self.bus.publish(self._k("resume"), orjson.dumps([interrupt_id, value]))
            except BusError as exc:
                # Answered all the same: the waiting node reads it from the question in time.
                log.warning("cannot hand the answer of %s over now: %s", interrupt_id, exc)
        return "accepted"

    def _hand_over(self, interrupt_id: str, value: Any) -> bool:
        future = self._waiting.pop(interrupt_id, None)
        if future is None:
            return False
        if not future.done():
            future.set_result(value)
        return True

    async def _on_resume(self, message: BusMessage) -> None:
        interrupt_id, value = orjson.loads(message.payload)
        self._hand_over(interrupt_id, value)

    async def settle(self, interrupt_id: str, state: ClosedState) -> tuple[bool, Any]:
        self._waiting.pop(interrupt_id, None)
        result = await self._call(
            self._settle(keys=[self._k("question", interrupt_id)], args=[state])
        )
        if _text(result[0]) == "answered":
            return True, orjson.loads(result[1])
        return False, None
