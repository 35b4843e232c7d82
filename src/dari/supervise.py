"""Background tasks that cannot fail silently.

``supervise`` starts a task, keeps a strong reference to it (the event loop holds only weak
ones) and, when it ends with an exception, logs it with the task's purpose and calls
``on_failure`` so whoever waits on the task's work is failed instead of left hanging.
Cancellation is an orderly end, not a failure.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dari import metrics

log = logging.getLogger("dari")
T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def supervise(
    coro: Coroutine[Any, Any, T],
    purpose: str,
    *,
    on_failure: Callable[[BaseException], None] | None = None,
) -> asyncio.Task[T]:
    task = asyncio.get_running_loop().create_task(coro, name=f"dari: {purpose}")
    _running.add(task)

    def done(task: asyncio.Task[T]) -> None:
        _running.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        metrics.TASK_FAILURES.labels(purpose).inc()
        log.error("background task failed: %s", purpose, exc_info=exc)
        if on_failure is not None:
            try:
                on_failure(exc)
            except Exception:
                log.exception("handling the failure of %s failed", purpose)

    task.add_done_callback(done)
    return task


def dump_tasks_on_signal(signum: int = signal.SIGUSR1) -> bool:
    """``kill -USR1 <pid>`` logs every task of the loop with its stack: what a stuck node is
    waiting on. False where the loop cannot take signal handlers (not the main thread)."""
    loop = asyncio.get_running_loop()

    def dump() -> None:
        tasks = asyncio.all_tasks(loop)
        out = io.StringIO()
        for task in sorted(tasks, key=lambda t: t.get_name()):
            out.write(f"--- {task.get_name()}: {task.get_coro()!r}\n")
            task.print_stack(limit=12, file=out)
        log.warning("%d tasks:\n%s", len(tasks), out.getvalue())

    try:
        loop.add_signal_handler(signum, dump)
    except (RuntimeError, NotImplementedError, ValueError):
        return False
    return True
