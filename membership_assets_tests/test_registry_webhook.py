"""The webhook receiver and sync API over real HTTP: auth, replay, bad input, durability, debounce."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
import requests
import uvicorn

from membership_assets.registry.event_sensor import registry_change_events
from membership_assets.registry.events import ChangeEventStore, DebouncePolicy, PendingEvents, launch_decision
from membership_assets.registry.resources import MembersDatabase
from membership_assets.registry.webhook import (
    REQUEST_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SyncApiSettings,
    api_message,
    create_app,
    sign,
)

SECRET = "test-webhook-secret"
API_KEY = "test-api-key"


@contextmanager
def receiver(db_url: str, **overrides):
    settings = SyncApiSettings(members_db_url=db_url, webhook_secret=SECRET, api_key=API_KEY, **overrides)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "receiver did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def url(members_db_url):
    with receiver(members_db_url) as base:
        yield base


@pytest.fixture
def events(members_db_url):
    store = ChangeEventStore.from_url(members_db_url)
    store.ensure_schema()
    yield store
    store.engine.dispose()


def event_body(event_id: str | None = None, member_id: int = 42, event: str = "member.saved") -> bytes:
    return json.dumps(
        {
            "event_id": event_id or str(uuid.uuid4()),
            "event": event,
            "member_id": member_id,
            "occurred_at": datetime.now(timezone.utc).isoformat(),
        }
    ).encode()


def post_webhook(base: str, body: bytes, *, secret: str = SECRET, ts: int | None = None, headers=None):
    ts = int(time.time()) if ts is None else ts
    h = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(secret, ts, body),
    }
    h.update(headers or {})
    return requests.post(f"{base}/api/webhooks/registry", data=body, headers=h, timeout=10)


def pending_count(events: ChangeEventStore) -> int:
    return events.stats()["pending_events"]


def test_a_signed_webhook_is_recorded(url, events):
    body = event_body()
    resp = post_webhook(url, body)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": True, "event_id": json.loads(body)["event_id"]}
    assert pending_count(events) == 1


@pytest.mark.parametrize(
    "headers, ts_offset, secret",
    [
        ({TIMESTAMP_HEADER: None, SIGNATURE_HEADER: None}, 0, SECRET),  # unsigned
        ({}, 0, "a-wrong-secret"),  # badly signed
        ({}, -301, SECRET),  # too old: a captured request replayed later
        ({}, 301, SECRET),  # from the future
        ({SIGNATURE_HEADER: "sha256=00"}, 0, SECRET),
        ({TIMESTAMP_HEADER: "1e9"}, 0, SECRET),
    ],
    ids=["unsigned", "wrong_secret", "stale", "future", "garbage_signature", "bad_timestamp"],
)
def test_unauthenticated_webhooks_get_401_and_start_nothing(url, events, headers, ts_offset, secret):
    body = event_body()
    ts = int(time.time()) + ts_offset
    h = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body), **headers}
    h = {k: v for k, v in h.items() if v is not None}
    resp = requests.post(f"{url}/api/webhooks/registry", data=body, headers=h, timeout=10)
    assert resp.status_code == 401
    assert pending_count(events) == 0


def test_a_replayed_event_is_a_duplicate_and_a_tampered_one_is_refused(url, events):
    body = event_body()
    assert post_webhook(url, body).status_code == 202
    again = post_webhook(url, body)  # the sender's retry, or a replay within the window
    assert again.status_code == 200 and again.json()["duplicate"] is True
    ts = int(time.time())
    tampered = body.replace(b'"member_id": 42', b'"member_id": 43')
    resp = requests.post(
        f"{url}/api/webhooks/registry",
        data=tampered,
        headers={TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(SECRET, ts, body)},
        timeout=10,
    )
    assert resp.status_code == 401
    assert pending_count(events) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"event": "member.saved", "member_id": 1, "occurred_at": "2026-01-01T00:00:00Z"}).encode(),
        event_body(event="member.exploded"),
        event_body(member_id=-1),
        json.dumps(
            {
                "event_id": "'; DROP TABLE members; --",
                "event": "member.saved",
                "member_id": 1,
                "occurred_at": "x",
            }
        ).encode(),
        json.dumps(
            {"event_id": str(uuid.uuid4()), "event": "member.saved", "member_id": True, "occurred_at": "x"}
        ).encode(),
        json.dumps(
            {
                "event_id": str(uuid.uuid4()),
                "event": "member.saved",
                "member_id": 5,
                "occurred_at": "yesterday",
            }
        ).encode(),
    ],
    ids=[
        "not_json",
        "array",
        "no_event_id",
        "unknown_event",
        "negative_id",
        "sql_in_id",
        "bool_id",
        "bad_time",
    ],
)
def test_malformed_but_signed_bodies_get_400(url, events, body):
    resp = post_webhook(url, body)
    assert resp.status_code == 400
    assert pending_count(events) == 0


def test_oversized_bodies_get_413_with_or_without_a_length(url, events):
    big = event_body()[:-1] + b', "pad": "' + b"x" * 20_000 + b'"}'
    assert post_webhook(url, big).status_code == 413

    def chunks():  # chunked transfer: no Content-Length to refuse up front
        for _ in range(40):
            yield b"x" * 1024

    ts = int(time.time())
    resp = requests.post(
        f"{url}/api/webhooks/registry",
        data=chunks(),
        headers={TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: "sha256=00"},
        timeout=10,
    )
    assert resp.status_code == 413
    assert pending_count(events) == 0


def test_a_flood_is_rate_limited(members_db_url, events):
    with receiver(members_db_url, rate_per_second=1.0, rate_burst=20) as base:
        statuses = [post_webhook(base, event_body()).status_code for _ in range(30)]
    assert statuses[:20] == [202] * 20
    assert set(statuses[20:]) == {429}
    assert pending_count(events) == 20


def test_the_ip_allowlist_refuses_other_clients(members_db_url, events):
    with receiver(members_db_url, allowed_networks=("10.0.0.0/8",)) as base:
        assert post_webhook(base, event_body()).status_code == 403
    with receiver(members_db_url, allowed_networks=("127.0.0.1/32",)) as base:
        assert post_webhook(base, event_body()).status_code == 202


def test_logs_carry_no_sender_text_and_no_personal_data(url, caplog):
    caplog.set_level(logging.INFO, logger="membership_assets.sync_api")
    marker = "Gudrun.Jonsdottir@example.is\nFAKE LOG LINE"
    post_webhook(url, json.dumps({"event_id": marker, "event": "member.saved"}).encode())
    requests.get(f"{url}/api/sync/logs?limit={marker}", headers={"X-Api-Key": API_KEY}, timeout=10)
    requests.post(f"{url}/api/webhooks/registry", data=marker.encode(), timeout=10)
    text = caplog.text
    assert "Gudrun" not in text and "FAKE LOG LINE" not in text
    assert "event_id_not_uuid" in text and "limit_out_of_range" in text and "unsigned" in text


# -- sync API ---------------------------------------------------------------------------------


def signed_api(base: str, method: str, path: str, body: bytes = b"", secret: str = SECRET):
    ts, request_id = int(time.time()), str(uuid.uuid4())
    mac = sign(secret, ts, api_message(method, path, request_id, body))
    headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: mac, REQUEST_ID_HEADER: request_id}
    return requests.request(method, base + path, data=body, headers=headers, timeout=10)


def test_sync_api_requires_a_key_or_a_signature(url):
    for method, path in [
        ("GET", "/api/sync/status"),
        ("GET", "/api/sync/logs"),
        ("POST", "/api/sync/trigger"),
    ]:
        assert requests.request(method, url + path, timeout=10).status_code == 401
        assert (
            requests.request(method, url + path, headers={"X-Api-Key": "wrong"}, timeout=10).status_code
            == 401
        )
    assert requests.get(f"{url}/api/sync/status", headers={"X-Api-Key": API_KEY}, timeout=10).ok
    assert signed_api(url, "GET", "/api/sync/logs?limit=5").ok


def test_a_signed_status_read_cannot_be_replayed_as_a_trigger(url, events):
    ts, request_id = int(time.time()), str(uuid.uuid4())
    mac = sign(SECRET, ts, api_message("GET", "/api/sync/status", request_id, b""))
    headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: mac, REQUEST_ID_HEADER: request_id}
    assert requests.get(f"{url}/api/sync/status", headers=headers, timeout=10).ok
    assert requests.post(f"{url}/api/sync/trigger", headers=headers, timeout=10).status_code == 401
    assert pending_count(events) == 0


def test_status_and_logs_answer_from_the_sync_log(url, store):
    from membership_assets.registry.store import SyncLogEntry

    now = datetime.now(timezone.utc)
    store.record_failure(
        SyncLogEntry(
            id="s-failed",
            source="webhook",
            status="failed",
            sync_time=now,
            errors={
                "step": "membership_sync",
                "type": "ValueError",
                "error": "row of Jón Jónsson 0101302989",
            },
        )
    )
    store.apply(
        __import__("pandas").DataFrame(columns=store.changes_of("x").columns),
        SyncLogEntry(id="s-ok", source="scheduled", status="success", sync_time=now - timedelta(minutes=5)),
        base_sync_id=None,
    )
    headers = {"X-Api-Key": API_KEY}
    status = requests.get(f"{url}/api/sync/status", headers=headers, timeout=10).json()
    assert status["last_sync"]["id"] == "s-failed" and status["last_sync"]["source"] == "webhook"
    assert status["last_applied_sync"]["id"] == "s-ok"
    assert status["pending_events"] == 0
    logs = requests.get(f"{url}/api/sync/logs?limit=10", headers=headers, timeout=10)
    assert [s["id"] for s in logs.json()["syncs"]] == ["s-failed", "s-ok"]
    assert "Jón" not in logs.text and "0101302989" not in logs.text  # error texts may quote a row
    assert logs.json()["syncs"][0]["error"] == {"step": "membership_sync", "type": "ValueError"}


def test_a_trigger_is_recorded_and_launched_without_debouncing(url, events, members_db_url):
    resp = requests.post(
        f"{url}/api/sync/trigger", data=b'{"dry_run": true}', headers={"X-Api-Key": API_KEY}, timeout=10
    )
    assert resp.status_code == 202 and resp.json()["dry_run"] is True
    with dg.DagsterInstance.ephemeral() as instance:
        [request] = tick(instance, members_db_url)
    assert request.tags["membership/source"] == "api" and request.tags["membership/trigger"] == "api"
    assert request.job_name == "registry_preview"  # a dry run is a preview, never a sync


# -- the sensor: durability, claims, debounce -------------------------------------------------


def tick(instance, db_url: str) -> list[dg.RunRequest]:
    ctx = dg.build_sensor_context(instance=instance, resources={"members_db": MembersDatabase(url=db_url)})
    result = registry_change_events(ctx)
    if isinstance(result, dg.SkipReason):
        return []
    return list(result.run_requests or [])


def test_events_survive_a_receiver_restart_while_dagster_is_down(members_db_url, events, monkeypatch):
    monkeypatch.setenv("REGISTRY_EVENTS_QUIET_SECONDS", "0")
    with receiver(members_db_url) as base:
        for member in (1, 2, 3):
            assert post_webhook(base, event_body(member_id=member)).status_code == 202
    with receiver(members_db_url) as base:  # a new process on the same database
        assert post_webhook(base, event_body(member_id=4, event="member.deleted")).status_code == 202
    assert pending_count(events) == 4
    with dg.DagsterInstance.ephemeral() as instance:  # Dagster comes back
        [request] = tick(instance, members_db_url)
        assert request.tags["membership/source"] == "webhook" and request.tags["membership/events"] == "4"
    assert pending_count(events) == 0


def test_a_tick_that_died_after_claiming_is_requested_again_once(
    members_db_url, events, monkeypatch, registry_defs
):
    monkeypatch.setenv("REGISTRY_EVENTS_QUIET_SECONDS", "0")
    events.record(event_id=str(uuid.uuid4()), event="member.saved", source="webhook", member_id=1)
    with dg.DagsterInstance.ephemeral() as instance:
        [first] = tick(instance, members_db_url)  # claimed; suppose the run was never created
        [again] = tick(instance, members_db_url)
        assert again.run_key == first.run_key  # same key: Dagster would never launch it twice
        job = registry_defs.resolve_job_def("registry_sync")
        instance.create_run_for_job(
            job,
            tags={
                **first.tags,
                "dagster/run_key": first.run_key,
                "dagster/sensor_name": "registry_change_events",
            },
        )
        assert tick(instance, members_db_url) == []


def test_events_wait_while_a_sync_runs(members_db_url, events, monkeypatch, registry_defs):
    monkeypatch.setenv("REGISTRY_EVENTS_QUIET_SECONDS", "0")
    with dg.DagsterInstance.ephemeral() as instance:
        run = instance.create_run_for_job(registry_defs.resolve_job_def("registry_sync"))
        # The run stays NOT_STARTED, which counts as active.
        events.record(event_id=str(uuid.uuid4()), event="member.saved", source="webhook", member_id=1)
        assert tick(instance, members_db_url) == []
        instance.report_run_canceled(run)
        assert len(tick(instance, members_db_url)) == 1


def simulate(
    arrivals: list[float], policy: DebouncePolicy, tick_every: float, run_seconds: float
) -> list[float]:
    """Launch times of the sensor's decision for events arriving at ``arrivals`` (seconds)."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    at = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
    launches: list[float] = []
    consumed = 0
    t = 0.0
    while t < max(arrivals) + 300:
        busy = launches and t < launches[-1] + run_seconds
        pending = [a for a in arrivals[consumed:] if a <= t]
        if pending and not busy:
            batch = PendingEvents(len(pending), 0, at(pending[0]), at(pending[-1]), False, False)
            if launch_decision(batch, at(t), policy) is None:
                launches.append(t)
                consumed += len(pending)
        t += tick_every
    return launches


@pytest.mark.parametrize("run_seconds", [10, 30, 60])
def test_a_burst_of_500_saves_in_a_minute_is_one_or_two_syncs(run_seconds):
    arrivals = [i * 60 / 500 for i in range(500)]
    launches = simulate(arrivals, DebouncePolicy(), tick_every=5, run_seconds=run_seconds)
    assert 1 <= len(launches) <= 2


def test_a_single_save_starts_a_sync_within_the_quiet_period():
    launches = simulate([3.0], DebouncePolicy(quiet_seconds=5), tick_every=5, run_seconds=20)
    assert launches == [10.0]


def test_the_sensor_debounces_a_burst_into_one_request(members_db_url, events, monkeypatch):
    # A quiet period longer than writing 500 events can take on a loaded machine: the tick below
    # must still fall inside it.
    monkeypatch.setenv("REGISTRY_EVENTS_QUIET_SECONDS", "30")
    monkeypatch.setenv("REGISTRY_EVENTS_MAX_WAIT_SECONDS", "120")
    now = datetime.now(timezone.utc)
    for i in range(500):  # the last one arrived just now: still within the quiet period
        events.record(
            event_id=str(uuid.uuid4()),
            event="member.saved",
            source="webhook",
            member_id=i + 1,
            now=now - timedelta(seconds=(499 - i) * 0.06),
        )
    with dg.DagsterInstance.ephemeral() as instance:
        assert tick(instance, members_db_url) == []
        pending = events.pending()
        assert launch_decision(pending, now + timedelta(seconds=6), DebouncePolicy()) is None


def test_a_webhook_becomes_a_sync_logged_as_webhook(
    members_db_url, events, registry_defs, django_sim, monkeypatch
):
    """Django saves a member and calls the webhook; the sensor's run makes the member eligible."""
    from membership_assets.registry.store import MembersStore

    monkeypatch.setenv("REGISTRY_EVENTS_QUIET_SECONDS", "0")
    newcomer = {
        "kennitala": "0101302989",
        "name": "Ný Félagsdóttir",
        "email": "ny@example.is",
        "status": "active",
    }
    django_sim.add(newcomer)
    with receiver(members_db_url) as base:
        assert post_webhook(base, event_body(member_id=9001)).status_code == 202
    with dg.DagsterInstance.ephemeral() as instance:
        [request] = tick(instance, members_db_url)
        result = registry_defs.resolve_job_def("registry_sync").execute_in_process(
            instance=instance, tags=request.tags, run_config=request.run_config
        )
    assert result.success
    store = MembersStore.from_url(members_db_url)
    assert store.is_eligible("0101302989")
    assert store.log_entry(result.run_id)["source"] == "webhook"
    store.engine.dispose()


def test_only_consumed_events_past_the_retention_are_pruned(events):
    old = datetime.now(timezone.utc) - timedelta(days=40)
    for consumed in (True, False):
        events.record(
            event_id=str(uuid.uuid4()), event="member.saved", source="webhook", member_id=1, now=old
        )
        if consumed:
            events.claim(events.pending().max_id, "registry-events-x")
    assert events.prune(timedelta(days=30)) == 1
    assert events.stats()["pending_events"] == 1  # an unconsumed change is never forgotten


def test_the_django_standin_webhook_reaches_the_voting_roll(
    members_db_url, events, registry_defs, monkeypatch
):
    """h2's Django registry signs and sends the webhook from its model signals; this receiver
    accepts it, and the sensor's run makes the new member eligible (source webhook)."""
    from membership_assets.registry.resources import DjangoRegistryResource
    from membership_assets.registry.store import MembersStore
    from membership_assets.simulators.django_registry import DjangoRegistrySimulator, generate_registry

    monkeypatch.setenv("REGISTRY_EVENTS_QUIET_SECONDS", "0")
    newcomer = {
        "kennitala": "0101302989",
        "name": "Ný Félagsdóttir",
        "email": "ny@example.is",
        "status": "active",
    }
    with (
        receiver(members_db_url) as base,
        DjangoRegistrySimulator(
            generate_registry(60, seed=2, invalid=False),
            webhook_url=f"{base}/api/webhooks/registry",
            webhook_secret=SECRET,
        ) as sim,
    ):
        sim.add(newcomer)
        deadline = time.time() + 20
        while pending_count(events) < 1:
            assert time.time() < deadline, "the stand-in's webhook never arrived"
            time.sleep(0.05)
        django = DjangoRegistryResource(base_url=sim.base_url, api_key=sim.token, rate_limit=1000)
        job = registry_defs.resolve_job_def("registry_sync")
        with dg.DagsterInstance.ephemeral() as instance:
            [request] = tick(instance, members_db_url)
            result = job.execute_in_process(
                instance=instance,
                tags=request.tags,
                run_config=request.run_config,
                resources={"django": django},
            )
    assert result.success
    store = MembersStore.from_url(members_db_url)
    assert store.is_eligible("0101302989") and store.log_entry(result.run_id)["source"] == "webhook"
    store.engine.dispose()
