"""Fair use per user, over all of a user's connections and conversations and, with several
nodes, over all nodes: the frame rate limit, and how many of a user's chats may wait and run.

Chosen once from the settings with the engine (``app/gateway.py``: ``build_quotas``):

- ``MemoryQuotas`` (``quota_memory.py``): one node; token buckets and counts in process memory.
- ``RedisQuotas`` (``quota_redis.py``): several nodes; a token bucket per user in Redis (a Lua
  script) and the user's chats as sorted sets whose members expire, so that a node that dies
  holding a count cannot keep it for ever.

Counting is by *ticket*: a chat accepted for a user takes one (``admit``: it counts as
waiting), its answer takes a running place with it (``wait_start``), and ``release`` gives
both back when the chat ends, however it ends. Waiting is ``admitted - running``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class UserQuotas(ABC):
    @abstractmethod
    async def take_frame(self, subject: str) -> float:
        """Take one frame from ``subject``'s token bucket: 0 when taken, else the seconds
        until one would be (the frame is refused)."""

    @abstractmethod
    async def admit(self, user_id: str, ticket: str) -> bool:
        """Count one more waiting chat of the user under ``ticket``, unless the user already
        has ``limits.max_queued_per_user`` waiting (then False)."""

    @abstractmethod
    async def try_start(self, user_id: str, ticket: str) -> bool:
        """Take a running place for ``ticket`` if the user has fewer than
        ``limits.max_running_per_user`` running (True also when it holds one already)."""

    @abstractmethod
    async def wait_start(self, user_id: str, ticket: str) -> None:
        """Wait until ``ticket`` holds a running place (cancellable)."""

    @abstractmethod
    async def release(self, user_id: str, ticket: str) -> None:
        """The chat ended (or was never queued): its waiting and running places are free."""

    @abstractmethod
    async def counts(self, user_id: str) -> tuple[int, int]:
        """(waiting, running) chats of the user, as counted now."""
