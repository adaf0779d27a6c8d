"""How much work the service takes on: a fixed number of requests judged at once, a
bounded queue in front of them, and a 429 beyond it.

A request that finds every slot busy waits in the queue; one that finds the queue full is
refused at once with Retry-After, rather than waiting without bound while its client times
out and retries (which would only add load). Counts are exact because the event loop is
single-threaded: nothing here awaits between a check and its update.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from judge.serve.problems import ApiError


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int, retry_after_s: int) -> None:
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.retry_after_s = retry_after_s
        self._slots = asyncio.Semaphore(max_concurrent)
        self.running = 0
        self.waiting = 0
        self.rejected = 0

    async def acquire(self) -> None:
        """Take one of the slots, waiting in the queue if every slot is busy.

        Raises:
            ApiError: 429 when every slot is busy and the queue is full.
        """
        if self._slots.locked() and self.waiting >= self.max_queue:
            self.rejected += 1
            raise ApiError(
                429, "queue_full",
                f"the service is at capacity ({self.max_concurrent} requests judged, "
                f"{self.waiting} waiting); retry after {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        """Give a slot back (once per `acquire`)."""
        self.running -= 1
        self._slots.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the slots for the body of the `async with`.

        Raises:
            ApiError: 429 when every slot is busy and the queue is full.
        """
        await self.acquire()
        try:
            yield
        finally:
            self.release()
