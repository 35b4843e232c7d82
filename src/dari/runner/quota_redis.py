"""Several nodes: fair use counted in Redis, so a user gets the same limits on every node.

Keys (``<prefix>`` as the delivery's, ``dari:`` by default):

- ``quota:rate:<subject>`` a token bucket (hash: tokens, Redis time of the last take), taken
  from by one script; it expires once it would be full again;
- ``quota:admitted:<user>`` and ``quota:running:<user>``: the user's tickets (chats accepted
  and not ended / answers running), sorted sets scored by an expiry time. Each check drops
  expired members first, so a count left by a node that died goes by itself: a running place
  after ``limits.answer_timeout_s`` plus two minutes (no answer runs longer), a waiting one
  after two hours. The reaper that ends a dead node's answer gives its place back at once.

A running place freed on this node wakes this node's waiting answers of that user at once;
places freed on other nodes are found by polling (every 50 ms, backing off to 0.5 s) while
an answer waits. While Redis is unreachable the rate limit falls back to this node's own
buckets; counts cannot be taken then (the chat fails as anything needing Redis does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from dari.protocol.errors import StoreUnavailable
from dari.runner.quota import UserQuotas
from dari.runner.quota_memory import MemoryQuotas
from dari.settings import LimitsSettings

log = logging.getLogger("dari.runner")

ADMITTED_TTL_S = 2 * 3600.0  # the longest a chat is counted as waiting
RUNNING_GRACE_S = 120.0  # beyond answer_timeout_s, before a running place expires by itself
POLL_S, POLL_MAX_S = 0.05, 0.5

# KEYS: bucket. ARGV: rate per s, burst, TTL ms. Takes one token; returns the seconds until
# one would be there ("0" when taken), as a string (Lua numbers become integers otherwise).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'v', 't')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'v', tostring(tokens), 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return tostring(wait)
"""

# KEYS: admitted, running. ARGV: ticket, now ms, expiry ms, max waiting, TTL ms. 1 if counted.
_ADMIT = """
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) - redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: admitted, running. ARGV: ticket, now ms, running expiry ms, max running, running TTL ms,
# admitted TTL ms. 1 when the ticket holds a running place (taken now or before).
_START = """
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
-- Counted as admitted at least as long as it runs (waiting = admitted - running).
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS: admitted, running. ARGV: ticket. 1 when it held a running place.
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
"""

# KEYS: admitted, running. ARGV: now ms. {admitted, running}, expired members dropped.
_COUNTS = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
"""


class RedisQuotas(UserQuotas):
    def __init__(
        self,
        limits: LimitsSettings,
        redis: Redis,
        prefix: str = "dari:",
        *,
        running_ttl_s: float | None = None,
        admitted_ttl_s: float = ADMITTED_TTL_S,
    ) -> None:
        self.limits = limits
        self.redis = redis
        self.prefix = prefix
        self.running_ttl_ms = int(
            (running_ttl_s or limits.answer_timeout_s + RUNNING_GRACE_S) * 1000
        )
        self.admitted_ttl_ms = int(admitted_ttl_s * 1000)
        # A full bucket is the same as none: the key may go once it would be full again.
        self.rate_ttl_ms = int(limits.rate_burst / limits.rate_per_s * 1000) + 1000
        self._take = redis.register_script(_TAKE)
        self._admit = redis.register_script(_ADMIT)
        self._start = redis.register_script(_START)
        self._release = redis.register_script(_RELEASE)
        self._counts = redis.register_script(_COUNTS)
        self._local = MemoryQuotas(limits)  # the rate limit while Redis is unreachable
        self._cut_off = False
        self._freed: dict[str, asyncio.Event] = {}  # per user: a place was freed here

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(("quota", *parts))

    def _keys(self, user_id: str) -> list[str]:
        return [self._k("admitted", user_id), self._k("running", user_id)]

    async def _call(self, work: Any) -> Any:
        try:
            return await work
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"the shared quotas are unreachable: {exc}") from exc

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    async def take_frame(self, subject: str) -> float:
        limits = self.limits
        try:
            wait = await self._take(
                keys=[self._k("rate", subject)],
                args=[limits.rate_per_s, limits.rate_burst, self.rate_ttl_ms],
            )
        except (RedisError, OSError) as exc:
            if not self._cut_off:
                log.warning("rate limits fall back to this node's own buckets: %s", exc)
                self._cut_off = True
            return self._local.take_now(subject)
        self._cut_off = False
        return float(wait)

    async def admit(self, user_id: str, ticket: str) -> bool:
        now = self._now_ms()
        counted = await self._call(
            self._admit(
                keys=self._keys(user_id),
                args=[
                    ticket,
                    now,
                    now + self.admitted_ttl_ms,
                    self.limits.max_queued_per_user,
                    self.admitted_ttl_ms,
                ],
            )
        )
        return bool(counted)

    async def try_start(self, user_id: str, ticket: str) -> bool:
        now = self._now_ms()
        started = await self._call(
            self._start(
                keys=self._keys(user_id),
                args=[
                    ticket,
                    now,
                    now + self.running_ttl_ms,
                    self.limits.max_running_per_user,
                    self.running_ttl_ms,
                    self.admitted_ttl_ms,
                ],
            )
        )
        return bool(started)

    async def wait_start(self, user_id: str, ticket: str) -> None:
        delay = POLL_S
        while not await self.try_start(user_id, ticket):
            freed = self._freed.setdefault(user_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                # Woken at once by a place freed here; places freed elsewhere are polled for.
                # (asyncio.timeout: wait_for on Python 3.11 can swallow a cancel of the chat.)
                async with asyncio.timeout(delay):
                    await freed.wait()
            delay = min(delay * 2, POLL_MAX_S)

    async def release(self, user_id: str, ticket: str) -> None:
        was_running = await self._call(self._release(keys=self._keys(user_id), args=[ticket]))
        if was_running:
            freed = self._freed.pop(user_id, None)
            if freed is not None:
                freed.set()  # every waiter here tries again; one of them gets the place

    async def counts(self, user_id: str) -> tuple[int, int]:
        admitted, running = await self._call(
            self._counts(keys=self._keys(user_id), args=[self._now_ms()])
        )
        return int(admitted) - int(running), int(running)
