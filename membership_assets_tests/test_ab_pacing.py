"""Pacing that survives real limiters: slows on 429 and recovers, holds every unsent request
during a Retry-After, and does not give up while the server keeps pacing us."""

from __future__ import annotations

import time

import pytest

from membership_assets.connectors.errors import RateLimitedError
from membership_assets.connectors.ratelimit import RateLimiter
from membership_assets.simulators.action_builder import (
    ActionBuilderSimulator,
    SharedBudget,
    SlidingWindowLimiter,
    make_limiter,
)
from membership_assets.simulators.http import TokenBucket

from .test_ab_paging import campaign_with_entities
from .test_connector_retries import RecordingSleep, client_for


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.on_sleep = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            hook, self.on_sleep = self.on_sleep, None
            hook()


def test_a_429_slows_the_pace_which_recovers_to_just_under_the_rate_that_drew_it():
    t = FakeTime()
    limiter = RateLimiter(4, clock=t.clock, sleep=t.sleep)
    assert limiter.current_rate == 4
    limiter.rate_limited(None)
    assert limiter.current_rate == pytest.approx(3.2)
    limiter.rate_limited(None)  # a request already in flight reports the same excess
    assert limiter.current_rate == pytest.approx(3.2)
    for _ in range(200):
        limiter.acquire()
    assert limiter.current_rate == pytest.approx(0.95 * 4)  # recovered, with a margin
    t.now += 1000  # a long calm: whoever shared the budget may be gone; probe higher again
    limiter.acquire()
    limiter.acquire()
    for _ in range(100):
        limiter.acquire()
    assert limiter.current_rate == pytest.approx(4.0)


def test_a_limiter_never_hit_keeps_the_full_rate():
    t = FakeTime()
    limiter = RateLimiter(4, clock=t.clock, sleep=t.sleep)
    for _ in range(401):
        limiter.acquire()
    assert t.now == pytest.approx(100.0)


def test_retry_after_holds_a_request_that_already_had_its_slot():
    t = FakeTime()
    limiter = RateLimiter(4, clock=t.clock, sleep=t.sleep)
    limiter.acquire()  # sent at 0.0
    # While the next request sleeps towards its slot (0.25), another thread draws a 429
    # asking for 10 s: the slot is void, and the request waits for the pause.
    t.on_sleep = lambda: limiter.rate_limited(10.0)
    limiter.acquire()
    assert t.now >= 10.0


def test_actual_sends_stay_spaced_when_a_thread_wakes_late():
    t = FakeTime()
    limiter = RateLimiter(4, clock=t.clock, sleep=t.sleep)
    sends = []
    for i in range(12):
        if i == 1:

            def oversleep():
                t.now += 0.05  # this thread wakes 50 ms after its slot

            t.on_sleep = oversleep
        limiter.acquire()
        sends.append(t.now)
    assert sends[1] == pytest.approx(0.30)
    # No second holds five sends, as a strict one-second window would count them.
    assert all(sends[i + 4] - sends[i] >= 1.0 - 1e-9 for i in range(len(sends) - 4))


def test_429s_with_retry_after_do_not_use_up_the_attempts():
    with ActionBuilderSimulator(campaign_with_entities(10), rate_limit=None) as sim:
        sim.faults.add(path_pattern="/people", status=429, retry_after="1", times=4)
        sleep = RecordingSleep()
        client = client_for(sim, sleep=sleep, max_attempts=2)
        assert len(client.list_people()) == 10
        assert client.stats.rate_limited == 4


def test_paced_429s_give_up_on_the_time_budget():
    with ActionBuilderSimulator(campaign_with_entities(10), rate_limit=None) as sim:
        sim.faults.add(path_pattern="/people", status=429, retry_after="1", times=None)
        client = client_for(sim, max_attempts=2)
        client.api.rate_limit_budget = 2.5
        start = time.monotonic()
        with pytest.raises(RateLimitedError):
            client.list_people()
        assert client.stats.rate_limited == 3 and time.monotonic() - start < 10


def test_strict_window_blocks_everyone_for_the_penalty():
    limiter = SlidingWindowLimiter(limit=4, window=1.0, penalty=10.0)
    assert [limiter.take() for _ in range(4)] == [0.0] * 4
    assert limiter.take() == 10.0
    assert 9.9 < limiter.take() <= 10.0  # still blocked, whoever asks
    assert limiter.penalties == 1


def test_shared_budget_spends_the_other_clients_share():
    budget = SharedBudget(TokenBucket(4.0), other_rate=20.0)
    try:
        time.sleep(0.5)
        assert budget.other_requests >= 5
    finally:
        budget.close()
    assert isinstance(make_limiter("strict"), SlidingWindowLimiter)
    with pytest.raises(ValueError):
        make_limiter("bogus")


def test_a_listing_survives_a_strict_window_without_aborting():
    """Scaled down (40 req/s, 1 s penalty): no abort, few 429s, every page read."""
    data = campaign_with_entities(30 * 25)
    limiter = SlidingWindowLimiter(limit=40, window=1.0, penalty=1.0)
    with ActionBuilderSimulator(data, rate_limit=None, limiter=limiter) as sim:
        client = client_for(sim, rate_limit=40, sleep=time.sleep, max_attempts=2)
        people = client.list_people(map_fn=lambda fn, xs: map(fn, xs))
        assert len(people) == 30 * 25
        assert client.stats.rate_limited <= 3


def test_slow_start_ramps_up_to_the_full_rate_within_seconds():
    t = FakeTime()
    limiter = RateLimiter(4, clock=t.clock, sleep=t.sleep, start_share=0.95, start_seconds=10)
    assert limiter.current_rate == pytest.approx(3.8)
    while t.now < 11:
        limiter.acquire()
    assert limiter.current_rate == pytest.approx(4.0)
    for _ in range(400):
        limiter.acquire()
    assert t.now < 11 + 100.3  # the ramp cost a fraction of a second, not a share of the run


def test_a_429_with_a_long_block_probes_higher_only_in_small_steps():
    t = FakeTime()
    limiter = RateLimiter(4, clock=t.clock, sleep=t.sleep)
    limiter.rate_limited(10.0)  # a strict window: everything blocked for 10 s
    for _ in range(300):
        limiter.acquire()
    assert limiter.current_rate == pytest.approx(0.95 * 4)
    t.now += 200  # calm: probe, but a 10 s block costs far more than 2% of the pace
    for _ in range(300):
        limiter.acquire()
    assert limiter.current_rate == pytest.approx(0.95 * 4 * 1.02)
