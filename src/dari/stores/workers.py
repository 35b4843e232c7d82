"""Where the store's SQL runs: a thread of its own for SQLite, the event loop for PostgreSQL.

Every store operation is a plain function over a synchronous SQLAlchemy ``Connection``, so it
is written once for both engines.

- SQLite has one writer at a time and no network: the cost of a query through an async driver
  is all hand-offs (a thread hop and a future per statement). ``SqliteWorker`` runs whole
  operations on one thread with the stdlib driver instead, and commits every operation that
  queued up while the previous batch ran in one transaction (group commit): one hop and a
  fraction of a commit per operation.
- PostgreSQL: ``AsyncEngineWorker`` runs a few batching loops on the event loop, each taking
  what queued up into one transaction through ``AsyncConnection.run_sync``; a slow statement
  holds up one loop, not the store.

Within a batch, operations run in the order they were submitted. If one fails, the batch is
rolled back and each operation is run again alone, so only the failing one reports an error.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from dari.protocol.errors import StoreUnavailable
from dari.supervise import supervise

T = TypeVar("T")
Operation = Callable[[Connection], T]

log = logging.getLogger("dari.store")

# One transaction never holds more than this many operations, so one slow batch cannot keep
# the callers of the next ones waiting long.
MAX_BATCH = 256
# Operations waiting per worker at most: past it the store is overloaded (or stalled), and a new
# operation fails at once with StoreUnavailable instead of the queue growing without bound.
MAX_PENDING = 20_000


_Job = tuple[Operation[Any], "asyncio.Future[Any]"]
_Result = tuple["asyncio.Future[Any] | None", Any, BaseException | None]
_STOP = object()


def _run_all(conn: Connection, batch: list[_Job]) -> list[_Result]:
    return [(future, operation(conn), None) for operation, future in batch]


class Worker(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    def submit(self, operation: Operation[T], order: str | None = None) -> asyncio.Future[T]:
        """Queue ``operation`` now; the future resolves once it is committed. Operations with
        the same ``order`` run in the order they were submitted (those of one conversation, so
        its messages keep their order in history)."""

    async def run(self, operation: Operation[T], order: str | None = None) -> T:
        return await self.submit(operation, order)

    @abstractmethod
    async def close(self) -> None: ...


class AsyncEngineWorker(Worker):
    """PostgreSQL: a few loops on the event loop, each committing what queued up in one go."""

    def __init__(self, url: URL, loops: int = 4) -> None:
        self.url = url
        self.loops = loops
        self._engine: AsyncEngine | None = None
        # A queue per loop: operations with one ``order`` key always go to the same loop, so
        # they run in submission order; the others are spread round-robin.
        self._queues: list[asyncio.Queue[_Job]] = [asyncio.Queue() for _ in range(loops)]
        self._next = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._engine = create_async_engine(
            self.url, pool_size=self.loops, max_overflow=self.loops, pool_pre_ping=True
        )
        self._tasks = [
            supervise(
                self._serve(jobs),
                f"store loop {n}",
                on_failure=lambda exc, jobs=jobs: _fail_waiting(jobs, exc),  # type: ignore[misc]
            )
            for n, jobs in enumerate(self._queues)
        ]

    def submit(self, operation: Operation[T], order: str | None = None) -> asyncio.Future[T]:
        if self._engine is None:
            raise RuntimeError("store not started")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if order is None:
            self._next = index = (self._next + 1) % self.loops
        else:
            index = zlib.crc32(order.encode()) % self.loops
        jobs = self._queues[index]
        if jobs.qsize() >= MAX_PENDING:
            future.set_exception(_overloaded(jobs.qsize()))
        else:
            jobs.put_nowait((operation, future))
        return future

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for jobs in self._queues:
            while not jobs.empty():
                _operation, future = jobs.get_nowait()
                if not future.done():
                    future.set_exception(RuntimeError("store closed"))
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def _serve(self, jobs: asyncio.Queue[_Job]) -> None:
        while True:
            batch = [await jobs.get()]
            while len(batch) < MAX_BATCH and not jobs.empty():
                batch.append(jobs.get_nowait())
            try:
                await self._run_batch(batch)
            except asyncio.CancelledError:
                for _operation, future in batch:
                    if not future.done():
                        future.set_exception(RuntimeError("store closed"))
                raise

    async def _run_batch(self, batch: list[_Job]) -> None:
        assert self._engine is not None
        try:
            async with self._engine.begin() as conn:
                results = await conn.run_sync(_run_all, batch)
        except Exception as exc:
            if len(batch) == 1:
                _settle_all([(batch[0][1], None, exc)])
                return
            for job in batch:  # all rolled back: run each alone so only the failing one fails
                await self._run_batch([job])
            return
        _settle_all(results)


class SqliteWorker(Worker):
    def __init__(self, url: URL) -> None:
        # The async URL names aiosqlite; this worker uses the stdlib driver on its own thread.
        self.url = url.set(drivername="sqlite")
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._failed: BaseException | None = None  # what stopped the thread unexpectedly

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="dari-sqlite", daemon=True
        )
        self._thread.start()
        await ready

    def submit(self, operation: Operation[T], order: str | None = None) -> asyncio.Future[T]:
        # One thread: everything runs in submission order, whatever ``order`` says.
        if self._thread is None or self._loop is None:
            raise RuntimeError("store not started")
        future: asyncio.Future[T] = self._loop.create_future()
        if self._failed is not None:
            future.set_exception(StoreUnavailable(f"the store's thread stopped: {self._failed!r}"))
        elif self._jobs.qsize() >= MAX_PENDING:
            future.set_exception(_overloaded(self._jobs.qsize()))
        else:
            self._jobs.put((operation, future))
        return future

    async def close(self) -> None:
        if self._thread is None or self._stopped is None:
            return
        self._jobs.put(_STOP)
        await self._stopped
        self._thread = None

    # --- on the worker thread -------------------------------------------------------------

    def _serve(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._settle([(ready, None, exc)])
            self._settle([(self._stopped, None, None)])
            return
        self._settle([(ready, None, None)])
        try:
            while True:
                batch: list[_Job] = []
                item = self._jobs.get()
                stop = item is _STOP
                if not stop:
                    batch.append(item)  # type: ignore[arg-type]
                while not stop and len(batch) < MAX_BATCH:
                    try:
                        item = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    else:
                        batch.append(item)  # type: ignore[arg-type]
                if batch:
                    self._run_batch(conn, batch)
                if stop:
                    break
        except BaseException as exc:
            # Supervised: the failure is logged and every waiter is failed, not left hanging.
            self._failed = exc
            log.error("the store's thread stopped", exc_info=exc)
            waiting: list[_Result] = []
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    waiting.append((item[1], None, StoreUnavailable(f"store stopped: {exc!r}")))  # type: ignore[index]
            self._settle(waiting)
            raise
        finally:
            conn.close()
            conn.engine.dispose()
            self._settle([(self._stopped, None, None)])

    def _connect(self) -> Connection:
        # One connection, used by this thread only.
        engine = create_engine(
            self.url,
            poolclass=StaticPool,
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # The driver's own transaction handling breaks SAVEPOINT (a nested block would
            # commit at once); SQLAlchemy's documented recipe: autocommit driver + our BEGIN.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Take the write lock up front: a deferred transaction that reads, then writes,
            # can hit SQLite's lock-upgrade deadlock when another process shares the file.
            # On the driver itself: SQLAlchemy's statement machinery has nothing to add to it.
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE")

        return engine.connect()

    def _run_batch(self, conn: Connection, batch: list[_Job]) -> None:
        try:
            with conn.begin():
                results = _run_all(conn, batch)
        except Exception as exc:
            if len(batch) == 1:
                results = [(batch[0][1], None, exc)]
            else:
                # Everything was rolled back; run each alone so only the failing one fails.
                for job in batch:
                    self._run_batch(conn, [job])
                return
        self._settle(results)

    def _settle(self, results: list[_Result]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # One wake-up of the event loop per batch, not one per operation.
        loop.call_soon_threadsafe(_settle_all, results)


def _settle_all(
    results: list[tuple[asyncio.Future[Any] | None, Any, BaseException | None]],
) -> None:
    for future, value, error in results:
        if future is None or future.done():
            continue  # the caller gave up waiting (cancelled); the work is done regardless
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _overloaded(waiting: int) -> StoreUnavailable:
    return StoreUnavailable(f"the store is overloaded: {waiting} operations are waiting")


def _fail_waiting(jobs: asyncio.Queue[_Job], exc: BaseException) -> None:
    """A store loop stopped unexpectedly: what waits in its queue fails instead of hanging."""
    while not jobs.empty():
        _operation, future = jobs.get_nowait()
        if not future.done():
            future.set_exception(StoreUnavailable(f"store loop stopped: {exc!r}"))


def make_worker(url: URL) -> Worker:
    if url.get_backend_name() == "sqlite":
        return SqliteWorker(url)
    return AsyncEngineWorker(url)
