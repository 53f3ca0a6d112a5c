"""Client-side pacing so a whole scan stays inside an API's request rate, even a shared one.

Action Builder allows 4 requests per second per API key, and one key serves the whole
organization: other tools may be spending part of the budget, and the server's limiter may be
stricter than a token bucket (a sliding window that blocks everything for a while after one
excess request). So every thread of a scan draws from one limiter that

* spaces requests evenly (a GCRA / leaky bucket) at the current rate, never above the nominal one;
* slows down on a 429 (multiplicative decrease) and remembers the rate that drew it, then
  recovers gradually to just below that rate, and probes higher again only after a long calm
  (additive increase): a limiter that is never hit stays at the nominal rate;
* reads the budget another client leaves from the 429 itself: the refused request's send time
  says how many of our requests the server's second held, and fewer than the per-second limit
  means the rest is spent by someone else, so the pace settles under that count at once;
* on Retry-After holds every request not yet sent, including those already given a slot: the
  slots handed out before the pause are void and are handed out again after it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

DECREASE = 0.8  # rate kept after a 429
RESUME_SHARE = 0.9  # share of an inferred budget to resume at after the pause
MARGIN = 0.95  # share of the rate that drew a 429 to recover to
# A 429 whose Retry-After is long (a limiter that blocks everything, say for 10 s) costs far more
# than running a little slower: after one, probe higher only in small steps.
EXPENSIVE_PAUSE_SECONDS = 2.0
EXPENSIVE_PROBE_STEP = 1.02
RECOVER_PER_SECOND = 0.02  # share of the nominal rate regained per calm second
PROBE_AFTER_SECONDS = 120.0  # calm time after which the remembered ceiling is raised a step
COOLDOWN_SECONDS = 1.0  # 429s this soon after a slowdown answer requests sent before it
MIN_SHARE = 0.1  # never slower than this share of the nominal rate
# How far back a 429 looks at our own sends: the documented limit is per second; half a send
# interval more, so arrival jitter never makes our own full second look like someone else's.
WINDOW_SECONDS = 1.0
WINDOW_SLACK_INTERVALS = 0.5


class RateLimiter:
    """Thread-safe adaptive pacing: at most ``rate`` requests per second, ``burst`` at once."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        start_share: float = 1.0,
        start_seconds: float = 10.0,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = float(rate)  # nominal: never exceeded
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = clock()  # theoretical arrival time of the next request
        # Slow start: connections are being opened in the first seconds, and the jitter that
        # adds would draw a 429 from a strict window; ramp up to the full rate meanwhile.
        self._current = self.rate * min(1.0, start_share)
        self._start_ramp = (1.0 - min(1.0, start_share)) / max(start_seconds, 1e-9)
        self._ceiling: float | None = None  # the slowest rate that drew a 429 lately
        self._expensive = False  # a 429 came with a long pause
        self._last_adjust = self._last_429 = self._last_probe = clock()
        self._paused_until = 0.0
        # The last sends, one "second" worth of them at the nominal rate (3.988/s: 4, so that no
        # five sends fall within one second, which a strict window of 4 per second refuses).
        self._window = max(1, math.ceil(self.rate - 1e-9))
        self._sends: deque[float] = deque(maxlen=self._window)
        # Our sends of the last two seconds or so, and each thread's last send: a 429 is
        # answered to the thread that sent the request, which tells when that request left.
        self._history: deque[float] = deque(maxlen=3 * self._window + 4)
        self._local = threading.local()
        self.inferred_budget: int | None = None  # requests/second left to us by others, if seen
        self._epoch = 0  # bumped by every pause: slots granted before it are void
        self.total_wait = 0.0
        self.slowdowns = 0

    @property
    def interval(self) -> float:
        return 1.0 / self._current

    @property
    def current_rate(self) -> float:
        return self._current

    def acquire(self) -> float:
        """Block until one request may be sent; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._recover(now)
                tat = max(self._tat, now, self._paused_until)
                allowed_at = tat - (self.burst - 1) * self.interval
                wait = max(0.0, allowed_at - now)
                self._tat = tat + self.interval
                epoch = self._epoch
                self.total_wait += wait
            if wait > 0:
                self._sleep(wait)
                waited += wait
            late = self._space_from_last_send(epoch)
            if late is None:
                continue  # a Retry-After arrived while this request waited: queue again
            waited += late
            return waited

    def _space_from_last_send(self, epoch: int) -> float | None:
        """Keep each actual send at least ``window`` intervals after the ``window``-th before it
        (burst 1): a thread that woke late must not let the ones behind it through in a bunch,
        or a strict sliding-window limiter sees one request too many in its second. Returns the
        extra seconds waited, None if a pause voided the slot."""
        extra_total = 0.0
        while True:
            with self._lock:
                if self._epoch != epoch:
                    return None
                now = self._clock()
                earliest = now
                if self.burst == 1 and len(self._sends) == self._sends.maxlen:
                    earliest = self._sends[0] + self._window * self.interval
                if now >= earliest:
                    self._sends.append(now)
                    self._history.append(now)
                    self._local.sent_at = now
                    return extra_total
                extra = earliest - now
            self._sleep(extra)
            extra_total += extra

    def pause_for(self, seconds: float) -> None:
        """Hold every request not yet sent for ``seconds`` (the server asked, via Retry-After)."""
        with self._lock:
            until = self._clock() + max(0.0, seconds)
            if until > self._paused_until:
                self._paused_until = until
                self._tat = until
                self._epoch += 1

    def rate_limited(self, retry_after: float | None = None) -> None:
        """The server refused a request (429): slow down, and pause if it said how long.

        The refused request's own send time tells how many of our requests the server's second
        held before it: fewer than the documented per-second limit means another client of the
        same key spends the rest, so the budget left to us is at most that many per second and
        the pace settles just under it at once, instead of probing down one 429 at a time.
        """
        sent_at = getattr(self._local, "sent_at", None)
        with self._lock:
            now = self._clock()
            if self._is_new_excess(now, sent_at):
                self._expensive |= (retry_after or 0.0) > EXPENSIVE_PAUSE_SECONDS
                budget = self._budget_seen(sent_at)
                ceiling = min(self._ceiling or self.rate, self._current)
                if budget is not None and budget < ceiling:
                    self.inferred_budget = budget
                    self._ceiling = float(budget)
                    self._current = max(self.rate * MIN_SHARE, budget * RESUME_SHARE)
                else:
                    self._ceiling = ceiling
                    self._current = max(self.rate * MIN_SHARE, self._current * DECREASE)
                self.slowdowns += 1
                self._last_429 = self._last_probe = now
            self._last_adjust = now
        if retry_after is not None:
            self.pause_for(retry_after)

    def _is_new_excess(self, now: float, sent_at: float | None) -> bool:
        """Requests already in flight at the old rate report the same excess: count it once.
        A request sent before the last slowdown is such an echo; without a send time (another
        thread's request), anything within ``COOLDOWN_SECONDS`` of the last 429 is."""
        if self.slowdowns == 0:
            return True
        if sent_at is not None:
            return sent_at > self._last_429
        return now - self._last_429 > COOLDOWN_SECONDS

    def _budget_seen(self, sent_at: float | None) -> int | None:
        """Our sends in the second before ``sent_at``, when fewer than the per-second limit."""
        if sent_at is None:
            return None
        window = WINDOW_SECONDS + WINDOW_SLACK_INTERVALS / self.rate
        ours = sum(1 for t in self._history if sent_at - window <= t < sent_at)
        limit = round(self.rate * WINDOW_SECONDS)
        return ours if 0 < ours < limit else None

    def _recover(self, now: float) -> None:
        if self._ceiling is not None and now - self._last_probe > PROBE_AFTER_SECONDS:
            # Long calm: whoever shared the budget may have gone; try a step higher.
            step = EXPENSIVE_PROBE_STEP if self._expensive else 1 / MARGIN
            self._ceiling = min(self.rate / MARGIN, self._ceiling * step)
            self._last_probe = now
        target = self.rate if self._ceiling is None else min(self.rate, self._ceiling * MARGIN)
        if self._current < target:
            slope = RECOVER_PER_SECOND if self.slowdowns else min(RECOVER_PER_SECOND, self._start_ramp)
            # Nothing is learnt about the rate while paused: recover only for time spent sending.
            calm = now - max(self._last_adjust, self._paused_until)
            gained = max(0.0, calm) * slope * self.rate
            self._current = min(target, self._current + gained)
        self._last_adjust = now


class ClientRateLimiter:
    """Token bucket per client, the ``max_clients`` most recently seen kept: a flood from many
    addresses forgets the longest-quiet clients one at a time, never everyone's state at once."""

    def __init__(
        self, rate: float, burst: int, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic
    ):
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, since = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - since) * self.rate)
            allowed = tokens >= 1
            self._buckets[client] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return allowed

    def __len__(self) -> int:
        return len(self._buckets)

    def retry_after(self) -> int:
        return max(1, int(1 / self.rate + 0.999))
