"""Pacing that finds a shared budget within the first few 429s, on a fake clock.

A deterministic model of the benchmark's hardest case: a strict sliding window of 4 requests per
second that blocks everything after an excess (Retry-After 2 or 10), of which another client of
the same key spends 1 request per second; answers take 0.3 s, so a 429 is learnt after more
requests left. Wall time is compared with the floor (requests / the rate left to us).
"""

from __future__ import annotations

import random
from collections import deque

import pytest

from membership_assets.connectors.ratelimit import PROBE_AFTER_SECONDS, RateLimiter

NOMINAL = 4.0
PACING_SHARE = 0.997  # as the Action Builder client paces


class Clock:
    """Fake time; sleeping delivers the 429 answers that arrive meanwhile, as other threads do."""

    def __init__(self):
        self.now = 0.0
        self.answers: list[tuple[float, float, float]] = []  # (arrives, retry_after, sent_at)
        self.limiter: RateLimiter | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        end = self.now + seconds
        self.deliver(end)
        self.now = max(self.now, end)

    def deliver(self, until: float) -> None:
        while due := sorted(a for a in self.answers if a[0] <= until):
            arrives, retry_after, sent_at = due[0]
            self.answers.remove(due[0])
            self.now = max(self.now, arrives)
            self.limiter._local.sent_at = sent_at  # the thread that sent it hears the 429
            self.limiter.rate_limited(retry_after)


class StrictWindow:
    def __init__(self, limit: int = 4, penalty: float = 2.0):
        self.limit, self.penalty = limit, penalty
        self.sent: deque[float] = deque()
        self.blocked_until = 0.0

    def take(self, now: float) -> float:
        if now < self.blocked_until:
            return self.blocked_until - now
        while self.sent and self.sent[0] <= now - 1.0:
            self.sent.popleft()
        if len(self.sent) >= self.limit:
            self.blocked_until = now + self.penalty
            return self.penalty
        self.sent.append(now)
        return 0.0


def scan(requests: int = 140, penalty: float = 2.0, other: float = 1.0, seed: int = 0, latency: float = 0.3):
    """(wall / floor, answered 429s, limiter) for ``requests`` successful requests."""
    rng = random.Random(seed)
    t = Clock()
    limiter = RateLimiter(NOMINAL * PACING_SHARE, clock=t.clock, sleep=t.sleep, start_share=0.95)
    t.limiter = limiter
    server = StrictWindow(penalty=penalty)
    next_other = rng.random() / other if other else float("inf")
    done = refused = 0
    while done < requests:
        limiter.acquire()
        t.deliver(t.now)
        arrives = t.now + rng.random() * 0.001  # arrival jitter on a local network
        while next_other <= arrives:
            server.take(next_other)
            next_other += 1.0 / other + 1e-4
        wait = server.take(arrives)
        if wait:
            refused += 1
            t.answers.append((arrives + latency, float(int(wait + 0.999)), t.now))
        else:
            done += 1
    floor = done / (NOMINAL - other)
    return t.now / floor, refused, limiter


@pytest.mark.parametrize("seed", range(8))
def test_a_shared_strict_window_settles_at_the_budget_left_within_two_429s(seed):
    ratio, refused, limiter = scan(seed=seed)
    assert ratio <= 1.15
    assert limiter.slowdowns <= 2 and refused <= 4
    assert limiter.inferred_budget == 3  # the other client's share was seen, not guessed
    assert 0.9 * 3 <= limiter.current_rate < 3.0


def test_the_strict_window_alone_is_never_hit():
    ratio, refused, limiter = scan(penalty=10.0, other=0.0)
    assert refused == 0 and ratio <= 1.01 and limiter.inferred_budget is None


def test_a_larger_share_taken_by_another_client_is_found_as_fast():
    ratio, refused, limiter = scan(other=2.0)
    assert ratio <= 1.15 and limiter.slowdowns <= 2 and limiter.inferred_budget == 2


def test_our_own_full_second_is_not_read_as_another_clients_share():
    t = Clock()
    limiter = RateLimiter(4, clock=t.clock, sleep=t.sleep)
    t.limiter = limiter
    for _ in range(8):
        limiter.acquire()  # four a second: the server's second held only ours
    limiter.rate_limited(None)
    assert limiter.inferred_budget is None
    assert limiter.current_rate == pytest.approx(3.2)  # a plain multiplicative slowdown


def test_a_429_for_a_request_sent_before_the_slowdown_is_the_same_excess():
    t = Clock()
    limiter = RateLimiter(4, clock=t.clock, sleep=t.sleep)
    t.limiter = limiter
    for _ in range(4):
        limiter.acquire()
    early = limiter._local.sent_at
    t.now += 5.0  # answered long after (a slow server): still an echo of the first excess
    limiter.rate_limited(None)
    slowed = limiter.current_rate
    limiter._local.sent_at = early
    t.now += 5.0
    limiter.rate_limited(None)
    assert limiter.slowdowns == 1 and limiter.current_rate >= slowed


def test_no_rate_is_regained_while_paused():
    t = Clock()
    limiter = RateLimiter(4, clock=t.clock, sleep=t.sleep)
    t.limiter = limiter
    limiter.rate_limited(10.0)
    slowed = limiter.current_rate
    t.now += 9.0
    limiter._recover(t.now)
    assert limiter.current_rate == slowed  # nothing was sent, so nothing was learnt
    t.now += 2.0  # one second after the pause
    limiter._recover(t.now)
    assert limiter.current_rate == pytest.approx(slowed + 0.02 * 4 * 1.0)
    assert PROBE_AFTER_SECONDS > 10
