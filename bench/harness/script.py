"""Run one async function in a load worker process (pinned to the load CPU) and get its result.

For scenarios whose client side is a short script (one resuming client, say) rather than a
load of many clients. ``func`` must be a module-level coroutine function (it is pickled by
name); it runs on uvloop, and the process is killed if it has not answered within ``timeout``.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from harness.procs import LOAD_CPU, pin, raise_nofile

_CTX = mp.get_context("spawn")


def run_in_worker(func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, timeout: float) -> Any:
    parent, child = _CTX.Pipe()
    proc = _CTX.Process(target=_entry, args=(func, args, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise TimeoutError(f"{func.__name__} gave no answer within {timeout:g} s")
        ok, value = parent.recv()
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()  # only our own worker, by its pid
            proc.join(timeout=5)
        parent.close()
    if not ok:
        raise RuntimeError(value)
    return value


def _entry(
    func: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...], conn: Connection
) -> None:
    pin(LOAD_CPU)
    raise_nofile()
    try:
        conn.send((True, uvloop.run(func(*args))))
    except Exception as exc:
        conn.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
