"""Batching for in-process back ends: many concurrent async callers, one worker thread.

The engine sends each image's queries together and many images at once. A `Coalescer`
gathers whatever is pending from all callers into one batch, runs it in a worker thread
(so the event loop stays free while the model computes), and hands each caller its own
results. One batch runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Run items from concurrent callers in batches of at most `max_batch`.

    Args:
        run_batch: items -> one result per item, in order; runs in a worker thread.
        max_batch: the largest batch handed to `run_batch`.
    """

    def __init__(self, run_batch: Callable[[list[T]], list[R]], max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[T, asyncio.Future[R], asyncio.AbstractEventLoop]] = []
        self._running = False

    async def submit(self, items: Sequence[T]) -> list[R]:
        if not items:
            return []
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = [loop.create_future() for _ in items]
        with self._lock:
            self._pending.extend(
                (item, fut, loop) for item, fut in zip(items, futures, strict=True)
            )
            start = not self._running
            self._running = True
        if start:
            threading.Thread(target=self._drain, name="judge-batch", daemon=True).start()
        return list(await asyncio.gather(*futures))

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    return
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
            # A caller that gave up (cancelled at its timeout) needs no answer: compute
            # nothing for it. Reading done() from this thread can only be late, never wrong.
            batch = [entry for entry in batch if not entry[1].done()]
            if not batch:
                continue
            try:
                results = self._run_batch([item for item, _, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch gave {len(results)} results for {len(batch)} items")
                outcomes: list[R | BaseException] = list(results)
            except BaseException as exc:  # handed to the callers, who re-raise it
                outcomes = [exc] * len(batch)
            for (_, future, loop), outcome in zip(batch, outcomes, strict=True):
                # The caller's loop may be closed if it gave up; nothing is waiting then.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, future, outcome)


def _settle(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def run_isolated(
    run: Callable[[list[T]], list[R]], items: list[T], fail: Callable[[T, str], R]
) -> list[R]:
    """Run `items` as one batch; if the batch fails, run them one by one so a single bad
    item (an image too large for the context, say) fails alone with its reason."""
    try:
        return run(items)
    except Exception as exc:
        if len(items) == 1:
            return [fail(items[0], describe(exc))]
    results: list[R] = []
    for item in items:
        try:
            results.extend(run([item]))
        except Exception as exc:
            results.append(fail(item, describe(exc)))
    return results


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
