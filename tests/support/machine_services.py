"""The machine's own PostgreSQL and Redis as seen from outside: does each answer, and which
Redis process is it. The test session compares a snapshot taken at its start with one taken at
its end (tests/conftest.py), so a test that stops or restarts a service it did not start fails
the run."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import redis
from redis.exceptions import RedisError

TIMEOUT_S = 2.0
# PostgreSQL's SSLRequest: any server answers it with one byte, 'S' or 'N', before any auth.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@dataclass(frozen=True, slots=True)
class ServicesSnapshot:
    postgres: bool  # answered
    redis_run_id: str | None  # None: did not answer

    def lost_in(self, later: ServicesSnapshot, where: MachineServices) -> list[str]:
        """What went wrong between this snapshot and ``later``, for people."""
        problems = []
        if self.postgres and not later.postgres:
            problems.append(
                f"PostgreSQL on {where.postgres_host}:{where.postgres_port} answered when the "
                "tests started and does not now"
            )
        if self.redis_run_id is not None:
            if later.redis_run_id is None:
                problems.append(
                    f"Redis on {where.redis_host}:{where.redis_port} answered when the tests "
                    "started and does not now"
                )
            elif later.redis_run_id != self.redis_run_id:
                problems.append(
                    f"Redis on {where.redis_host}:{where.redis_port} was restarted during the "
                    f"run (run_id {self.redis_run_id} became {later.redis_run_id})"
                )
        return problems


@dataclass(frozen=True, slots=True)
class MachineServices:
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379

    def snapshot(self) -> ServicesSnapshot:
        return ServicesSnapshot(postgres=self.postgres_answers(), redis_run_id=self.redis_run_id())

    def postgres_answers(self) -> bool:
        try:
            with socket.create_connection(
                (self.postgres_host, self.postgres_port), timeout=TIMEOUT_S
            ) as conn:
                conn.sendall(_SSL_REQUEST)
                return conn.recv(1) in (b"S", b"N")
        except OSError:
            return False

    def redis_run_id(self) -> str | None:
        client = redis.Redis(
            host=self.redis_host,
            port=self.redis_port,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
        )
        try:
            run_id = client.info("server").get("run_id")
            return str(run_id) if run_id else None
        except (OSError, RedisError):
            return None
        finally:
            client.close()


MACHINE_SERVICES = MachineServices()
