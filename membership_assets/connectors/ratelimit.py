"""Client-side pacing so a whole scan stays inside an API's documented request rate.

Action Builder allows 4 requests per second per API key. Every thread of a scan draws from one
limiter, which spaces requests evenly (a GCRA / leaky bucket) instead of sleeping a fixed time
after each call; a 429 with Retry-After pauses *all* threads, not just the one that was refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Thread-safe request pacing: at most ``rate`` requests per second, ``burst`` at once."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self.interval = 1.0 / self.rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = clock()  # theoretical arrival time of the next request
        self.total_wait = 0.0

    def acquire(self) -> float:
        """Block until one request may be sent; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            allowed_at = tat - (self.burst - 1) * self.interval
            wait = max(0.0, allowed_at - now)
            self._tat = tat + self.interval
            self.total_wait += wait
        if wait > 0:
            self._sleep(wait)
        return wait

    def pause_for(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the server asked us to, via Retry-After)."""
        with self._lock:
            self._tat = max(self._tat, self._clock() + max(0.0, seconds))
