"""The threads a request starts, so that its slot is given back only when they have ended.

A request's coroutines stop at its timeout (they are cancelled: no model call is made for
an answered request), but a thread cannot be stopped: a decode or a relevance scan the
request started runs to its end. If the slot were given back with the answer, such work
would pile up beside the next requests' and `--max-concurrent` would bound nothing. So
every thread started through the event loop's executor (`asyncio.to_thread`, which the
engine and the service use for all blocking work) is recorded against the request that
started it, through a context variable the request's tasks inherit, and the request's
slot is released when the last of them returns, which may be after the answer went out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

_CURRENT: ContextVar[Work | None] = ContextVar("judge_serve_work", default=None)


class Work:
    """The executor futures of one request."""

    def __init__(self) -> None:
        self._futures: list[Future[Any]] = []

    def add(self, future: Future[Any]) -> None:
        self._futures.append(future)

    @property
    def running(self) -> int:
        return sum(not f.done() for f in self._futures)

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` on the running loop once every recorded thread has returned
        (at once when none is running)."""
        pending = [f for f in self._futures if not f.done()]
        if not pending:
            callback()
            return
        loop = asyncio.get_running_loop()
        left = [len(pending)]

        def one_done() -> None:  # on the loop: no lock needed for the count
            left[0] -= 1
            if left[0] == 0:
                callback()

        def finished(_: Future[Any]) -> None:  # in the worker thread
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to release
                loop.call_soon_threadsafe(one_done)

        for future in pending:
            future.add_done_callback(finished)


def track() -> tuple[Work, Any]:
    """Start recording the threads of the current task (and the tasks it starts); returns
    the record and the token that `untrack` takes."""
    work = Work()
    return work, _CURRENT.set(work)


def untrack(token: Any) -> None:
    _CURRENT.reset(token)


class TrackingExecutor(ThreadPoolExecutor):
    """The loop's default executor: a thread pool that records each job against the
    request whose task submitted it (`run_in_executor` submits from the caller's task, so
    the context variable is the caller's)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        work = _CURRENT.get()
        if work is not None:
            work.add(future)
        return future


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Make a `TrackingExecutor` the default executor of `loop` (the service's loop)."""
    loop.set_default_executor(TrackingExecutor(thread_name_prefix="judge-serve"))
