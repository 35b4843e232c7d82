"""One node: token buckets and the users' chat counts in process memory.

Nothing here awaits, so a check and its count are one step. A running place freed wakes the
user's first waiting answer (in arrival order).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from dari.protocol.ratelimit import TokenBucket
from dari.runner.quota import UserQuotas
from dari.settings import LimitsSettings

# Buckets kept before full ones are forgotten (a full bucket is the same as none).
MAX_BUCKETS = 10_000


class MemoryQuotas(UserQuotas):
    def __init__(self, limits: LimitsSettings) -> None:
        self.rate = limits.rate_per_s
        self.burst = limits.rate_burst
        self.max_running = limits.max_running_per_user
        self.max_waiting = limits.max_queued_per_user
        self._buckets: dict[str, TokenBucket] = {}
        self._admitted: dict[str, set[str]] = {}
        self._running: dict[str, set[str]] = {}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}

    # --- the rate limit ------------------------------------------------------------------------

    async def take_frame(self, subject: str) -> float:
        return self.take_now(subject)

    def take_now(self, subject: str) -> float:
        now = time.monotonic()
        bucket = self._buckets.get(subject)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[subject] = TokenBucket(rate=self.rate, burst=self.burst)
        if bucket.take(now):
            return 0.0
        return bucket.retry_after()

    def _forget_full(self, now: float) -> None:
        for subject in [s for s, b in self._buckets.items() if b.full_at() <= now]:
            del self._buckets[subject]

    # --- chats waiting and running -------------------------------------------------------------

    async def admit(self, user_id: str, ticket: str) -> bool:
        admitted = self._admitted.get(user_id, set())
        if len(admitted) - len(self._running.get(user_id, ())) >= self.max_waiting:
            return False
        self._admitted[user_id] = admitted
        admitted.add(ticket)
        return True

    async def try_start(self, user_id: str, ticket: str) -> bool:
        return self._start_now(user_id, ticket)

    def _start_now(self, user_id: str, ticket: str) -> bool:
        running = self._running.get(user_id)
        if running is None:
            running = self._running[user_id] = set()
        if ticket in running:
            return True
        if len(running) >= self.max_running:
            return False
        running.add(ticket)
        self._admitted.setdefault(user_id, set()).add(ticket)
        return True

    async def wait_start(self, user_id: str, ticket: str) -> None:
        while not self._start_now(user_id, ticket):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue = self._waiters.setdefault(user_id, deque())
            queue.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(user_id)  # woken, but leaving: the place goes to the next one
                raise
            finally:
                if waiter in queue:
                    queue.remove(waiter)
                if not queue and self._waiters.get(user_id) is queue:
                    del self._waiters[user_id]

    async def release(self, user_id: str, ticket: str) -> None:
        self.release_now(user_id, ticket)

    def release_now(self, user_id: str, ticket: str) -> None:
        admitted = self._admitted.get(user_id)
        if admitted is not None:
            admitted.discard(ticket)
            if not admitted:
                del self._admitted[user_id]
        running = self._running.get(user_id)
        if running is not None and ticket in running:
            running.discard(ticket)
            if not running:
                del self._running[user_id]
            self._wake(user_id)

    def _wake(self, user_id: str) -> None:
        queue = self._waiters.get(user_id)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def counts(self, user_id: str) -> tuple[int, int]:
        running = len(self._running.get(user_id, ()))
        return len(self._admitted.get(user_id, ())) - running, running
