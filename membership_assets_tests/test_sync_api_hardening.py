"""The receiver as an attacker meets it: a production-configured `sync-api` process over real
sockets. No 500 from any input, single-use signed calls, client address from trusted proxies
only, slow and idle connections dropped, a locked database stalls no one, refusals alert."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone

import dagster as dg
import pytest
import requests
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from membership_assets.registry.events import ChangeEventStore, ReceiverStore, change_events
from membership_assets.registry.store import MembersStore
from membership_assets.registry.sync_server import MAX_LOG_LINE
from membership_assets.registry.webhook import ClientRateLimiter, client_address, json_depth
from membership_assets_tests.sync_api_process import (
    STRONG_KEY,
    STRONG_SECRET,
    SyncApiProcess,
    event_body,
    production_env,
    signed_api_headers,
    webhook_headers,
)

HOOK = "/api/webhooks/registry"
MARKER = "Gudrun.Jonsdottir@example.is"  # what a sender wrote: must never reach the log


def migrated(url: str) -> MembersStore:
    store = MembersStore.from_url(url)
    store.ensure_schema()
    return store


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One production-configured receiver on SQLite for the tests that need no special limits."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sync_api') / 'members.sqlite'}"
    migrated(url).engine.dispose()
    with SyncApiProcess(production_env(url, SYNC_API_RATE_BURST="1000000", SYNC_API_RATE_LIMIT="10000")) as s:
        s.db_url = url
        yield s


def pending(url: str) -> int:
    store = ChangeEventStore.from_url(url)
    try:
        return store.stats()["pending_events"]
    finally:
        store.engine.dispose()


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are (no client library cleaning them) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def logged(server: SyncApiProcess, text: str, within: float = 3.0) -> bool:
    """True once the server's log shows ``text`` (its stderr is read by a thread)."""
    deadline = time.time() + within
    while text not in server.log:
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def post(base: str, body: bytes, headers: dict, timeout: float = 10.0) -> requests.Response:
    return requests.post(base + HOOK, data=body, headers=headers, timeout=timeout)


# -- 2. no 500 from any input -----------------------------------------------------------------


def test_a_non_ascii_digit_timestamp_is_a_401_without_a_traceback(server):
    before = len(server.lines)
    request = (
        b"POST /api/webhooks/registry HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Membership-Timestamp: \xb2\r\nX-Membership-Signature: sha256=00\r\nContent-Length: 2\r\n\r\n{}"
    )
    answer = raw_request(server.port, request)
    assert status_of(answer) == 401 and b'"bad_timestamp"' in answer
    assert logged(server, "rejected webhook: bad_timestamp")
    log = "\n".join(server.lines[before:])
    assert "bad_timestamp" in log and "Traceback" not in log and "\u00b2" not in log and "\\xb2" not in log


def test_a_signed_body_of_2000_nested_brackets_is_a_400(server):
    body = b"[" * 2000
    resp = post(server.base, body, webhook_headers(body))
    assert resp.status_code == 400 and resp.json() == {"error": "body_too_deep"}
    assert json_depth(b'{"a": "[[[[[[[[[[[[[[", "b": [1, {"c": 2}]}') == 3  # strings are skipped


def test_bodies_built_to_be_slow_to_parse_are_answered_at_once(server):
    for body in (b'"' + b'\\"' * 8000, b'"' * 16000, b"[" * 16000, b'{"a":' * 3000):
        started = time.perf_counter()
        resp = post(server.base, body, webhook_headers(body))
        assert resp.status_code == 400 and time.perf_counter() - started < 1.0


def test_oversized_targets_and_headers_are_refused(server):
    assert requests.get(f"{server.base}/api/sync/logs?limit={'9' * 5000}", timeout=10).status_code == 414
    one_read = (
        b"GET /api/sync/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-A: "
        + b"a" * 20_000
        + b"\r\n\r\n"
    )
    assert status_of(raw_request(server.port, one_read)) == 431


def test_client_errors_log_no_traceback_no_sender_bytes_and_bounded_lines(server):
    before = len(server.lines)
    marker_body = json.dumps({"event_id": MARKER, "event": "member.saved"}).encode()
    post(server.base, marker_body, webhook_headers(marker_body))
    post(server.base, MARKER.encode() * 500, {"X-Membership-Timestamp": MARKER, "X-Evil": "x" * 8000})
    requests.get(
        f"{server.base}/api/sync/logs?limit={MARKER}\nFAKE", headers={"X-Api-Key": STRONG_KEY}, timeout=10
    )
    raw_request(server.port, b"GET /\x00\xff" + MARKER.encode() + b" HTTP/1.1\r\n\r\n")
    raw_request(
        server.port, b"POST " + HOOK.encode() + b" HTTP/1.1\r\nHost: x\r\nX-A: " + b"y" * 40_000 + b"\r\n\r\n"
    )
    assert logged(server, "rejected logs: limit_out_of_range")
    time.sleep(0.3)
    lines = server.lines[before:]
    log = "\n".join(lines)
    assert "event_id_not_uuid" in log and "limit_out_of_range" in log
    assert "Gudrun" not in log and "FAKE" not in log and "Traceback" not in log
    assert all(len(line) <= MAX_LOG_LINE for line in lines)


_METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"PATCH", b"G\xc3T"])
_PATHS = st.sampled_from(
    [
        HOOK,
        "/api/sync/trigger",
        "/api/sync/status",
        "/api/sync/logs",
        "/healthz",
        "/readyz",
        "/api/openapi.json",
        "/",
        "/%ff%00",
    ]
).map(str.encode)
_HEADER_NAMES = st.sampled_from(
    [
        b"X-Membership-Timestamp",
        b"X-Membership-Signature",
        b"X-Membership-Request-Id",
        b"X-Api-Key",
        b"Content-Type",
        b"X-Forwarded-For",
        b"Transfer-Encoding",
        b"Expect",
        b"X-Whatever",
        b"Host",
        b"Content-Length",
    ]
)
_HEADER_VALUES = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from(
        [
            b"\xb2",
            b"\xd9\xa3",
            b"99999999999999999999",
            b"-1",
            b"1e9",
            b"sha256=" + b"0" * 64,
            b"[",
            b"chunked",
        ]
    ),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_EVENT_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.uuids().map(str), st.text(max_size=40), st.integers()),
        "event": st.sampled_from(["member.saved", "member.deleted", "ping", "x", ""]) | _JSON,
        "member_id": st.integers(min_value=-(2**70), max_value=2**70) | _JSON,
        "occurred_at": st.sampled_from(["2026-01-01T00:00:00+05:00", "9999-99-99", "\u00b2"])
        | st.text(max_size=30),
        "dry_run": _JSON,
    },
)
_BODIES = st.one_of(
    st.binary(max_size=300),
    _JSON.map(lambda v: json.dumps(v).encode()),
    _EVENT_LIKE.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    method=_METHODS,
    path=_PATHS,
    query=st.one_of(
        st.just(b""),
        st.sampled_from(
            [b"limit=5", b"limit=%C2%B2", b"limit=999", b"limit=", b"a=b&limit=1", b"limit=1&limit=x"]
        ),
        st.binary(max_size=30).map(lambda b: b.replace(b" ", b"").replace(b"\r", b"").replace(b"\n", b"")),
    ),
    # Half the requests without extra headers, so the signed ones reach the parsers behind auth.
    headers=st.one_of(st.just([]), st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=4)),
    body=_BODIES,
    auth=st.sampled_from([None, "webhook", "api", "api_key"]),
    chunked=st.booleans(),
)
def test_no_input_gets_a_5xx(server, method, path, query, headers, body, auth, chunked):
    """Any method, path, query, header and body, signed (as a webhook or an API call) or not:
    an answer below 500."""
    lines = [
        method + b" " + path + (b"?" + query if query else b"") + b" HTTP/1.1",
        b"Host: x",
        b"Connection: close",
    ]
    lines += [name + b": " + value for name, value in headers]
    path_qs = (path + (b"?" + query if query else b"")).decode("latin-1")
    valid = {
        None: {},
        "webhook": webhook_headers(body),
        "api": signed_api_headers(method.decode("latin-1"), path_qs, body),
        "api_key": {"X-Api-Key": STRONG_KEY},
    }[auth]
    for name, value in valid.items():
        lines.append(name.encode() + b": " + value.encode())
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(b"Content-Length: " + str(len(body)).encode())
        payload = body
    answer = raw_request(server.port, b"\r\n".join(lines) + b"\r\n\r\n" + payload)
    assert answer, "the server closed without an answer"
    event(f"{auth} -> {status_of(answer)}")  # --hypothesis-show-statistics: which paths were reached
    assert status_of(answer) < 500, answer[:200]


def test_the_fuzzed_server_logged_no_traceback(server):
    assert "Traceback" not in server.log and "unhandled" not in server.log


# -- 3. single-use signed calls ---------------------------------------------------------------


def test_a_captured_signed_trigger_is_accepted_once(server):
    before = pending(server.db_url)
    headers = signed_api_headers("POST", "/api/sync/trigger", b'{"dry_run": true}')
    answers = [
        requests.post(
            f"{server.base}/api/sync/trigger", data=b'{"dry_run": true}', headers=headers, timeout=10
        )
        for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [202, 200, 200, 200]
    assert all(a.json()["request_id"] == headers["x-membership-request-id"] for a in answers)
    assert answers[1].json()["duplicate"] is True
    assert pending(server.db_url) == before + 1


def test_a_captured_signed_read_is_refused_the_second_time(server):
    path = "/api/sync/logs?limit=5"
    headers = signed_api_headers("GET", path)
    assert requests.get(server.base + path, headers=headers, timeout=10).status_code == 200
    again = requests.get(server.base + path, headers=headers, timeout=10)
    assert again.status_code == 409 and again.json() == {"error": "request_replayed"}
    as_trigger = requests.post(f"{server.base}/api/sync/trigger", headers=headers, timeout=10)
    assert as_trigger.status_code == 401
    unsigned_id = {k: v for k, v in signed_api_headers("GET", path).items() if k != "x-membership-request-id"}
    assert requests.get(server.base + path, headers=unsigned_id, timeout=10).status_code == 401


def test_an_api_key_trigger_is_idempotent_by_request_id(server):
    headers = {"X-Api-Key": STRONG_KEY, "X-Membership-Request-Id": str(uuid.uuid4())}
    codes = [
        requests.post(f"{server.base}/api/sync/trigger", headers=headers, timeout=10).status_code
        for _ in range(2)
    ]
    assert codes == [202, 200]


# -- ping, health, UTC ------------------------------------------------------------------------


def test_a_signed_ping_is_acknowledged_and_stored_nowhere(server):
    before = pending(server.db_url)
    body = b'{"event": "ping"}'
    resp = post(server.base, body, webhook_headers(body))
    assert resp.status_code == 200 and resp.json() == {"ping": "ok"}
    assert post(server.base, body, {}).status_code == 401
    assert post(server.base, body, webhook_headers(body, secret="wrong" * 8)).status_code == 401
    assert pending(server.db_url) == before


def test_health_and_readiness_need_no_auth_and_show_no_data(server):
    health = requests.get(f"{server.base}/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = requests.get(f"{server.base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_occurred_at_keeps_its_instant_on_sqlite(server):
    body = event_body(occurred_at="2026-03-01T12:00:00+05:00")
    assert post(server.base, body, webhook_headers(body)).status_code == 202
    event_id = json.loads(body)["event_id"]
    store = MembersStore.from_url(server.db_url)
    with store.engine.connect() as conn:
        stored = conn.execute(
            sa.select(change_events.c.occurred_at).where(change_events.c.event_id == event_id)
        ).scalar_one()
    store.engine.dispose()
    stored = stored if stored.tzinfo else stored.replace(tzinfo=timezone.utc)
    assert stored == datetime(2026, 3, 1, 7, 0, tzinfo=timezone.utc)


# -- 4. client address from trusted proxies only; bounded rate-limit state --------------------


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'members.sqlite'}"
    migrated(url).engine.dispose()
    return url


def test_x_forwarded_for_is_ignored_without_trusted_proxies(db_url):
    env = production_env(
        db_url, SYNC_API_ALLOWED_IPS="10.9.8.7", SYNC_API_RATE_BURST="5", SYNC_API_RATE_LIMIT="0.01"
    )
    with SyncApiProcess(env) as s:
        body = event_body()
        spoofed = {**webhook_headers(body), "X-Forwarded-For": "10.9.8.7"}
        assert post(s.base, body, spoofed).status_code == 403
        health = requests.get(f"{s.base}/healthz", headers={"X-Forwarded-For": "10.9.8.7"}, timeout=10)
        assert health.status_code == 200  # probes pass the allowlist
    env = production_env(db_url, SYNC_API_RATE_BURST="5", SYNC_API_RATE_LIMIT="0.01")
    with SyncApiProcess(env) as s:
        codes = []
        for i in range(8):  # a new forwarded address each time does not buy a new bucket
            body = event_body()
            codes.append(
                post(s.base, body, {**webhook_headers(body), "X-Forwarded-For": f"10.0.0.{i}"}).status_code
            )
        assert codes == [202] * 5 + [429] * 3


def test_behind_a_trusted_proxy_the_forwarded_client_counts(db_url):
    env = production_env(db_url, SYNC_API_ALLOWED_IPS="10.9.8.7", SYNC_API_TRUSTED_PROXIES="127.0.0.1/32")
    with SyncApiProcess(env) as s:

        def via_proxy(forwarded: str | None) -> int:
            body = event_body()
            extra = {"X-Forwarded-For": forwarded} if forwarded else {}
            return post(s.base, body, {**webhook_headers(body), **extra}).status_code

        assert via_proxy("10.9.8.7") == 202
        assert via_proxy("10.9.8.7, 127.0.0.1") == 202  # our own proxy hops are skipped
        assert via_proxy("10.9.8.7, 203.0.113.5") == 403  # the client prepended a forged address
        assert via_proxy(None) == 403  # the proxy itself is not the allowed client
        assert via_proxy("not an address") == 403


def test_client_address_resolution():
    proxies = [__import__("ipaddress").ip_network("10.0.0.0/8")]
    assert client_address("203.0.113.9", "10.9.8.7", proxies) == "203.0.113.9"  # untrusted peer
    assert client_address("10.0.0.2", "198.51.100.1, 10.0.0.3", proxies) == "198.51.100.1"
    assert client_address("10.0.0.2", "garbage, 10.0.0.3", proxies) == "10.0.0.3"
    assert client_address("10.0.0.2", None, proxies) == "10.0.0.2"


def test_rate_limit_state_is_bounded_without_resetting_everyone():
    clock = [0.0]
    limiter = ClientRateLimiter(rate=0.001, burst=2, max_clients=100, clock=lambda: clock[0])
    assert [limiter.allow("attacker") for _ in range(3)] == [True, True, False]
    for i in range(99):  # a flood of new addresses up to the bound
        limiter.allow(f"198.51.100.{i}")
        limiter.allow("attacker")  # still throttled, and now the most recently seen
    assert limiter.allow("attacker") is False
    assert len(limiter) == 100
    for i in range(5_000):  # far beyond the bound: memory stays bounded
        limiter.allow(f"2001:db8::{i:x}")
    assert len(limiter) == 100


# -- 5. slow clients and connection floods ----------------------------------------------------


def open_idle(port: int, count: int, partial: bytes = b"") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if partial:
            s.sendall(partial)
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.5)
    try:
        data = s.recv(1024)
    except TimeoutError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 408")


def raise_file_limit(needed: int) -> None:
    """This test process holds the connections itself: it needs the descriptors."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_hundreds_of_idle_and_half_sent_connections_do_not_stop_a_signed_webhook(db_url):
    raise_file_limit(1400)
    env = production_env(db_url, SYNC_API_HEADER_TIMEOUT="4", SYNC_API_MAX_CONNECTIONS="1000")
    with SyncApiProcess(env) as s:
        idle = open_idle(s.port, 700)
        half = open_idle(s.port, 400, b"POST /api/webhooks/registry HTTP/1.1\r\nHost: x\r\nX-Membership-")
        try:
            body = event_body()
            started = time.perf_counter()
            resp = post(s.base, body, webhook_headers(body), timeout=5)
            elapsed = time.perf_counter() - started
            assert resp.status_code == 202 and elapsed < 1.0, elapsed
            time.sleep(4.5)  # past the header deadline: every idle and half-sent one is gone
            survivors = [
                c for c in idle[:50] + half[:50] + idle[-50:] + half[-50:] if not closed_by_server(c)
            ]
            assert not survivors
            assert logged(s, "connection limit 1000 reached")  # 1,100 > 1,000: the quietest were dropped
        finally:
            for c in idle + half:
                c.close()


def test_a_body_that_never_finishes_is_dropped(db_url):
    env = production_env(db_url, SYNC_API_HEADER_TIMEOUT="2", SYNC_API_BODY_TIMEOUT="2")
    with SyncApiProcess(env) as s:
        [c] = open_idle(
            s.port, 1, b"POST /api/webhooks/registry HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.perf_counter()
        c.settimeout(10)
        try:
            while c.recv(1024):
                pass
        except OSError:
            pass
        assert 1.5 < time.perf_counter() - started < 6
        c.close()
        assert logged(s, "closed: body_timeout")


# -- 6. a locked database stalls no one -------------------------------------------------------


def test_a_write_locked_database_delays_nobody_else(tmp_path):
    path = tmp_path / "members.sqlite"
    url = f"sqlite:///{path}"
    migrated(url).engine.dispose()
    with SyncApiProcess(production_env(url, SYNC_API_DB_TIMEOUT="1")) as s:
        lock = sqlite3.connect(path, timeout=1, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the members database is write-locked (a long sync)
        try:
            started = time.perf_counter()
            assert post(s.base, b"{}", {}).status_code == 401
            assert requests.get(f"{s.base}/healthz", timeout=5).status_code == 200
            assert time.perf_counter() - started < 1.0  # not "until the lock is released"
            body = event_body()
            started = time.perf_counter()
            busy = post(s.base, body, webhook_headers(body))
            assert busy.status_code == 503 and busy.json() == {"error": "database_busy"}
            assert busy.headers["Retry-After"] and time.perf_counter() - started < 2.5
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        again = post(s.base, body, webhook_headers(body))  # Django's retry of the same event
        assert again.status_code in (200, 202)
        assert pending(url) == 1  # stored once, whichever attempt wrote it


def test_pending_events_are_bounded(db_url):
    with SyncApiProcess(production_env(db_url, SYNC_API_MAX_PENDING_EVENTS="3")) as s:
        codes = []
        for _ in range(5):
            body = event_body()
            codes.append(post(s.base, body, webhook_headers(body)).status_code)
        assert codes == [202, 202, 202, 429, 429]
    assert pending(db_url) == 3


@pytest.mark.postgres
def test_readyz_fails_while_the_database_is_unreachable():
    from membership_assets_tests.conftest import _postgres_url

    url = sa.make_url(_postgres_url("h5_readyz"))
    store = MembersStore.from_url(url.render_as_string(hide_password=False))
    store.drop_schema()
    store.ensure_schema()
    store.engine.dispose()
    with TcpRelay(url.host, url.port) as relay:
        via_relay = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        with SyncApiProcess(production_env(via_relay, SYNC_API_DB_TIMEOUT="2")) as s:
            assert requests.get(f"{s.base}/readyz", timeout=10).json() == {"ready": True}
            relay.cut()
            time.sleep(1.1)  # readiness is cached for a second
            started = time.perf_counter()
            ready = requests.get(f"{s.base}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json() == {"ready": False}
            assert time.perf_counter() - started < 3
            assert requests.get(f"{s.base}/healthz", timeout=5).status_code == 200


class TcpRelay:
    """A TCP relay to the database that the test can cut (the database becomes unreachable)."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.cutting = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cutting:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            s.close()

    def cut(self) -> None:
        self.cutting = True
        for s in self.open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, *exc) -> None:
        self.cut()
        self.listener.close()


# -- 8. refused webhooks reach the admins -----------------------------------------------------


def test_a_burst_of_refused_webhooks_alerts_the_admins_once(db_url, tmp_path):
    from membership_assets.notify.resources import FileOutboxEmail, Recipients
    from membership_assets.registry.refusal_alerts import webhook_refusals
    from membership_assets.registry.resources import MembersDatabase

    with SyncApiProcess(production_env(db_url, SYNC_API_STATS_SECONDS="0.2")) as s:
        for i in range(22):  # Django still signs with the secret rotated away on this side
            body = event_body(member_id=i + 1, note=MARKER)
            post(s.base, body, webhook_headers(body, secret="an-old-secret-" + STRONG_SECRET))
        for _ in range(3):  # and a clock 6 minutes off
            body = event_body()
            post(s.base, body, webhook_headers(body, ts=int(time.time()) - 360))
        store = ReceiverStore(MembersStore.from_url(db_url))
        deadline = time.time() + 10
        while store.counts_since(datetime.fromtimestamp(0, timezone.utc)).get("bad_signature", 0) < 22:
            assert time.time() < deadline, "the receiver never wrote its counts"
            time.sleep(0.1)
    outbox = tmp_path / "outbox"
    resources = {
        "members_db": MembersDatabase(url=db_url),
        "email": FileOutboxEmail(directory=str(outbox), from_address="sync@localhost"),
        "recipients": Recipients(tag_report="o@example.org", admins="admins@example.org"),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        webhook_refusals(ctx)
        [message] = list(outbox.glob("*.eml"))
        text = message.read_text()
        assert "bad_signature: 22" in text and "stale_timestamp: 3" in text
        assert "Gudrun" not in text and STRONG_SECRET not in text
        again = dg.build_sensor_context(instance=instance, resources=resources, cursor=ctx.cursor)
        webhook_refusals(again)  # the problem lasts: no second email within the hour
        assert len(list(outbox.glob("*.eml"))) == 1


def test_webhooks_gone_silent_while_the_registry_changed_alert():
    from datetime import timedelta

    from membership_assets.registry.refusal_alerts import refusal_alert

    now = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    assert refusal_alert({"bad_signature": 19}, now, 0, now) is None
    assert refusal_alert({"bad_length": 500}, now, 0, now) is None  # not an auth failure
    subject, body = refusal_alert({}, now - timedelta(hours=2), 1, now)
    assert "No webhook was accepted in the last hour" in body
    assert refusal_alert({}, now - timedelta(minutes=10), 3, now) is None
    assert refusal_alert({}, None, 3, now) is None  # never used webhooks: nothing went silent


# -- routes mounted later (the admin page) get the same protections ---------------------------


def test_a_mounted_route_is_screened_capped_and_never_leaks_a_traceback(db_url, caplog):
    """h3's admin page mounts into the same app: rate limit, body cap, header deadline and the
    no-traceback rule hold for it too (served by the same guarded uvicorn protocol)."""
    import logging

    import uvicorn
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from membership_assets.registry.sync_server import uvicorn_config
    from membership_assets.registry.webhook import SyncApiSettings, create_app

    async def echo(request):
        return PlainTextResponse(str(len(await request.body())))

    async def broken(request):
        raise RuntimeError(MARKER)

    admin = Mount("/admin", routes=[Route("/echo", echo, methods=["POST"]), Route("/broken", broken)])
    settings = SyncApiSettings(
        members_db_url=db_url,
        webhook_secret=STRONG_SECRET,
        port=0,
        rate_per_second=0.01,
        rate_burst=6,
        header_timeout=1.0,
    )
    caplog.set_level(logging.INFO)
    server = uvicorn.Server(
        uvicorn_config(create_app(settings, extra_routes=[admin]), settings, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    try:
        assert requests.post(f"{base}/admin/echo", data=b"x" * 10, timeout=10).text == "10"
        assert requests.post(f"{base}/admin/echo", data=b"x" * 20_000, timeout=10).status_code == 413

        def chunks():
            for _ in range(40):
                yield b"x" * 1024

        assert requests.post(f"{base}/admin/echo", data=chunks(), timeout=10).status_code == 413
        broken_answer = requests.get(f"{base}/admin/broken", timeout=10)
        assert broken_answer.status_code == 500 and broken_answer.json() == {"error": "internal"}
        [c] = open_idle(port, 1, b"GET /admin/echo HTTP/1.1\r\nHost: x\r\n")
        assert closed_by_server(c) is False  # still within its header deadline
        time.sleep(1.3)
        assert closed_by_server(c)
        c.close()
        codes = [requests.post(f"{base}/admin/echo", data=b"x", timeout=10).status_code for _ in range(3)]
        assert codes[-1] == 429  # the same per-client bucket as the API
    finally:
        server.should_exit = True
        thread.join(10)
    assert "unhandled RuntimeError" in caplog.text
    assert MARKER not in caplog.text and "Traceback" not in caplog.text
