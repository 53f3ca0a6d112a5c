"""Retries, Retry-After, typed errors and client-side pacing, against the simulator over HTTP."""

from __future__ import annotations

import time

import pytest

from membership_assets.action_builder.client import ActionBuilderClient, ActionBuilderCredentials
from membership_assets.connectors.errors import (
    AuthError,
    BadRequestError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from membership_assets.connectors.http import parse_retry_after
from membership_assets.connectors.ratelimit import RateLimiter
from membership_assets.simulators.action_builder import ActionBuilderSimulator

from .test_ab_paging import campaign_with_entities


class RecordingSleep:
    def __init__(self):
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client_for(sim, *, sleep=None, token=None, **kw) -> ActionBuilderClient:
    kw.setdefault("rate_limit", 5000)
    return ActionBuilderClient.connect(
        api_token=token or sim.token,
        base_url=sim.base_url,
        campaign_id=sim.data.campaign_id,
        sleep=sleep or (lambda s: None),
        **kw,
    )


@pytest.fixture
def small_sim():
    with ActionBuilderSimulator(campaign_with_entities(10), rate_limit=None) as sim:
        yield sim


def test_429_storm_waits_exactly_retry_after_then_succeeds(small_sim):
    small_sim.faults.add(path_pattern="/people", status=429, retry_after="1", times=3)
    sleep = RecordingSleep()
    client = client_for(small_sim, sleep=sleep, max_attempts=5)
    assert len(client.list_people()) == 10
    assert sleep.waits == [1.0, 1.0, 1.0]
    assert client.stats.rate_limited == 3 and client.stats.requests == 4


def test_429_storm_longer_than_the_retry_budget_raises_rate_limited(small_sim):
    small_sim.faults.add(path_pattern="/people", status=429, retry_after="0", times=None)
    client = client_for(small_sim, max_attempts=4)
    with pytest.raises(RateLimitedError) as err:
        client.list_people()
    assert err.value.status == 429 and err.value.retry_after == 0.0
    assert client.stats.requests == 4


def test_retry_after_pauses_every_thread_via_the_shared_limiter(small_sim):
    small_sim.faults.add(path_pattern="/people", status=429, retry_after="1", times=1)
    client = client_for(small_sim, rate_limit=1000)
    start = time.monotonic()
    client.list_people()
    # The retry itself slept (no-op here), but the limiter also holds other callers for 1s.
    assert time.monotonic() - start >= 0.95


def test_5xx_then_success_backs_off_exponentially(small_sim):
    small_sim.faults.add(path_pattern="/people", status=503, times=3)
    sleep = RecordingSleep()
    client = client_for(small_sim, sleep=sleep)
    assert len(client.list_people()) == 10
    assert len(sleep.waits) == 3
    assert all(w > 0 for w in sleep.waits)
    assert client.stats.retries == 3


def test_5xx_with_retry_after_is_honoured(small_sim):
    small_sim.faults.add(path_pattern="/people", status=503, retry_after="7", times=1)
    sleep = RecordingSleep()
    client_for(small_sim, sleep=sleep).list_people()
    assert sleep.waits == [7.0]


def test_persistent_5xx_raises_server_error(small_sim):
    small_sim.faults.add(path_pattern="/people", status=500, times=None)
    with pytest.raises(ServerError):
        client_for(small_sim, max_attempts=3).list_people()


def test_auth_failure_is_not_retried_and_says_what_to_fix(small_sim):
    client = client_for(small_sim, token="expired-token")
    with pytest.raises(AuthError, match="credentials rejected") as err:
        client.list_people()
    assert err.value.status == 401
    assert client.stats.requests == 1 and client.stats.retries == 0
    assert "expired-token" not in str(err.value)


def test_other_4xx_is_not_retried(small_sim):
    client = client_for(small_sim)
    with pytest.raises(BadRequestError, match=r"request rejected: .*\(HTTP 400\)") as err:
        client.api.request_json(
            "GET", f"campaigns/{small_sim.data.campaign_id}/people", params={"filter": "bogus eq 'x'"}
        )
    assert client.stats.requests == 1
    assert "Unsupported filter" not in str(err.value)  # the API's free text is never repeated


def test_truncated_json_body_is_retried(small_sim):
    small_sim.faults.add(path_pattern="/people", truncate_body=True, times=2)
    client = client_for(small_sim)
    assert len(client.list_people()) == 10
    assert client.stats.retries == 2


def test_timeouts_are_retried_then_reported(small_sim):
    small_sim.faults.add(path_pattern="/people", delay=0.5, times=None)
    client = client_for(small_sim, timeout=0.1, max_attempts=2)
    with pytest.raises(TransportError, match="timed out"):
        client.list_people()
    assert client.stats.requests == 2


def test_client_pacing_keeps_429s_at_zero_under_the_server_limit():
    with ActionBuilderSimulator(campaign_with_entities(30 * 25), rate_limit=20, burst=20) as sim:
        client = client_for(sim, rate_limit=20)
        start = time.monotonic()
        for _ in range(2):
            client.list_people()
        elapsed = time.monotonic() - start
        assert client.stats.requests == 60 and client.stats.rate_limited == 0
        assert elapsed >= 59 / 20 - 0.05  # paced, not bursting


def test_unpaced_client_is_throttled_but_loses_nothing():
    from concurrent.futures import ThreadPoolExecutor

    with ActionBuilderSimulator(campaign_with_entities(20 * 25), rate_limit=40, burst=5) as sim:
        client = ActionBuilderClient.connect(
            api_token=sim.token,
            base_url=sim.base_url,
            campaign_id=sim.data.campaign_id,
            rate_limit=10_000,
            max_attempts=8,
        )
        with ThreadPoolExecutor(8) as pool:
            people = client.list_people(map_fn=lambda fn, xs: pool.map(fn, xs))
        assert len(people) == 500
        assert client.stats.rate_limited > 0


def test_rate_limiter_spaces_requests_evenly():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.acquire()
    assert slept == pytest.approx([0.25, 0.25, 0.25, 0.25])
    limiter.pause_for(2.0)
    limiter.acquire()
    assert now[0] == pytest.approx(3.0)


def test_rate_limiter_allows_bursts_up_to_burst():
    now = [0.0]
    limiter = RateLimiter(4, burst=4, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    waits = [limiter.acquire() for _ in range(6)]
    assert waits[:4] == [0, 0, 0, 0] and waits[4] == pytest.approx(0.25)


def test_parse_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(
    "raw, message",
    [
        ("not json", "must be JSON"),
        ('["x"]', "JSON object"),
        ('{"api_token": "t"}', "missing subdomain"),
        ('{"api_token": "", "subdomain": "x"}', "missing api_token"),
    ],
)
def test_credentials_json_errors_are_clear(raw, message):
    with pytest.raises(ValueError, match=message):
        ActionBuilderCredentials.from_json(raw)


def test_credentials_build_the_documented_base_url():
    creds = ActionBuilderCredentials.from_json('{"api_token": "t", "subdomain": "guild"}')
    assert creds.base_url == "https://guild.actionbuilder.org/api/rest/v1"
