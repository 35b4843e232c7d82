"""Background tasks that cannot fail silently.

``supervise`` starts a task, keeps a strong reference to it (the event loop holds only weak
ones) and, when it ends with an exception, logs it with the task's purpose and calls
``on_failure`` so whoever waits on the task's work is failed instead of left hanging.
Cancellation is an orderly end, not a failure.
"""

from __future__ import annotations

import asyncio
import logging
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
