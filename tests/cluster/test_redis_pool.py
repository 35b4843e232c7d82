"""The Redis client dari uses: a burst beyond its pool waits for a connection, never fails."""

from __future__ import annotations

import asyncio
import uuid

from dari.buses.redis import redis_client
from tests.cluster.services import require_redis


async def test_a_burst_beyond_the_pool_waits_instead_of_failing() -> None:
    url = await require_redis()
    client = redis_client(url, "dari-test-pool", max_connections=2, timeout_s=5.0)
    key = f"dari-test-pool-{uuid.uuid4().hex}"
    try:
        # Twelve commands that each hold a connection for 50 ms, on a pool of two.
        results = await asyncio.gather(
            *(client.blpop([key], timeout=0.05) for _ in range(12)), return_exceptions=True
        )
        assert results == [None] * 12
    finally:
        await client.aclose()
