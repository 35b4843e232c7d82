"""The session's guard on the machine's services (tests/conftest.py) notices a Redis that was
restarted or stopped and a PostgreSQL that stopped answering. Shown here on a redis-server of
the test's own, since the machine's must not be touched."""

from __future__ import annotations

import asyncio
import socket

from tests.cluster.services import unavailable
from tests.support.machine_services import MachineServices
from tests.support.redis_server import RedisServer


def _closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_restarted_redis_is_reported(private_redis: RedisServer) -> None:
    services = MachineServices(redis_port=private_redis.port, postgres_port=_closed_port())
    before = await asyncio.to_thread(services.snapshot)
    assert before.redis_run_id is not None and before.postgres is False
    assert before.lost_in(await asyncio.to_thread(services.snapshot), services) == []
    async with private_redis.stopped():
        pass
    problems = before.lost_in(await asyncio.to_thread(services.snapshot), services)
    assert len(problems) == 1 and "was restarted" in problems[0]


async def test_a_stopped_redis_is_reported(private_redis: RedisServer) -> None:
    services = MachineServices(redis_port=private_redis.port, postgres_port=_closed_port())
    before = await asyncio.to_thread(services.snapshot)
    await private_redis.stop()
    problems = before.lost_in(await asyncio.to_thread(services.snapshot), services)
    assert len(problems) == 1 and "does not now" in problems[0]


async def test_a_postgresql_that_stops_answering_is_reported(private_redis: RedisServer) -> None:
    # Something that speaks PostgreSQL's first reply: one byte to the SSLRequest.
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(8)
        writer.write(b"N")
        await writer.drain()
        writer.close()

    fake = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = fake.sockets[0].getsockname()[1]
    services = MachineServices(redis_port=private_redis.port, postgres_port=port)
    before = await asyncio.to_thread(services.snapshot)
    assert before.postgres is True
    fake.close()
    await fake.wait_closed()
    problems = before.lost_in(await asyncio.to_thread(services.snapshot), services)
    assert len(problems) == 1 and problems[0].startswith("PostgreSQL")


def test_the_machines_postgresql_is_seen_when_it_answers() -> None:
    # The check must recognise a real server, or the guard would never fire.
    if not MachineServices().postgres_answers():
        unavailable("PostgreSQL on 127.0.0.1:5432 does not answer the guard's check")
