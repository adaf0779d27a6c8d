"""A circuit breaker: stop sending requests to a server that keeps failing.

After `threshold` consecutive failed attempts the breaker opens: for `cooldown` seconds
every request fails at once with the reason, instead of waiting out timeouts and retries
against a dead server. Then one trial request goes through; success closes the breaker,
failure opens it for another cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitOpen(Exception):
    """Raised instead of sending a request while the breaker is open."""


class TrialPending(CircuitOpen):
    """The cool-down is over and one trial request is testing the server: wait for it."""


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 30.0,
        *,
        target: str = "the server",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold, self.cooldown, self.target = threshold, cooldown, target
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.last_reason = ""
        self._trial_in_flight = False
        self.times_opened = 0

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def before_request(self) -> None:
        """Raise `CircuitOpen` if no request may go out now."""
        if self.opened_at is None:
            return
        remaining = self.opened_at + self.cooldown - self._clock()
        reason = (
            f"circuit breaker open: {self.failures} consecutive failures talking to "
            f"{self.target} (last: {self.last_reason})"
        )
        if remaining > 0:
            raise CircuitOpen(f"{reason}; next try in {remaining:.0f} s")
        if self._trial_in_flight:
            raise TrialPending(reason)
        self._trial_in_flight = True  # half-open: this one request tests the server

    def abandon_trial(self) -> None:
        """The request was cancelled: neither success nor failure, so free the trial slot."""
        self._trial_in_flight = False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_in_flight = False

    def failure(self, reason: str) -> bool:
        """Count a failed attempt; True when this failure opened (or re-opened) the breaker."""
        self.failures += 1
        self.last_reason = reason
        trial = self._trial_in_flight
        self._trial_in_flight = False
        if trial or (self.opened_at is None and self.failures >= self.threshold):
            self.opened_at = self._clock()
            self.times_opened += 1
            return True
        return False
