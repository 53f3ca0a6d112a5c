"""The admin page of the sync service over real HTTP: sign-in, sessions, CSRF, each page, preview
then sync now, and the sync API's corrected counts and errors."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import uuid
from datetime import datetime, timezone

import dagster as dg
import pandas as pd
import pytest
import requests
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from membership_assets.__main__ import main
from membership_assets.registry.admin import reason_codes, reason_fix
from membership_assets.registry.admin_auth import (
    AdminConfigError,
    LoginLimiter,
    SessionSigner,
    authenticate,
    hash_password,
    parse_users,
    verify_password,
)
from membership_assets.registry.events import ChangeEventStore, change_events
from membership_assets.registry.preview import registry_planner
from membership_assets.registry.resources import DjangoRegistryResource, RegistrySyncPolicy
from membership_assets.registry.store import sync_log
from membership_assets_tests.admin_site import (
    ADMIN,
    API_KEY,
    OTHER,
    OTHER_PASSWORD,
    PASSWORD,
    PERSONAL,
    admin_settings,
    csrf_of,
    members,
    post_form,
    seed_history,
    serve,
    sign_in,
    table_rows,
)
from membership_assets_tests.test_registry_webhook import tick

PAGES = [
    "/admin/",
    "/admin/history",
    "/admin/syncs/sync-0003",
    "/admin/quarantine",
    "/admin/events",
    "/admin/sync",
]


@pytest.fixture
def seeded(store):
    return seed_history(store)


@pytest.fixture
def site(members_db_url, store, seeded):
    with serve(members_db_url, admin_settings()) as base:
        yield base


def planner_for(sim, **policy) -> object:
    django = DjangoRegistryResource(
        base_url=sim.base_url, api_key=sim.token, page_size=50, rate_limit=1000, max_attempts=2
    )
    return registry_planner(django, RegistrySyncPolicy(**policy))


def sync_requests(store) -> list[dict]:
    c = change_events.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(c.source, c.requested_by, c.dry_run).where(c.event == "sync.requested"))
        return [dict(r._mapping) for r in rows]


# -- passwords, sessions, limits (pure) -------------------------------------------------------


def test_password_hashes_verify_and_refuse_anything_else():
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert verify_password(PASSWORD, stored) and not verify_password(PASSWORD + "x", stored)
    # Django's own format, so an existing Ekklesia admin hash can be reused.
    django = (
        "pbkdf2_sha256$600000$salt1234$"
        + __import__("base64")
        .b64encode(__import__("hashlib").pbkdf2_hmac("sha256", PASSWORD.encode(), b"salt1234", 600000))
        .decode()
    )
    assert verify_password(PASSWORD, django) and not verify_password("wrong password!", django)
    for garbage in (
        "",
        "plain",
        "scrypt$1$1$1$a$b",
        "scrypt$16384$8$1$!!$??",
        "pbkdf2_sha256$10$s$h",
        "md5$x",
    ):
        assert not verify_password(PASSWORD, garbage)
    assert not verify_password("p" * 10_000, stored)  # cost never grows with the input
    with pytest.raises(ValueError):
        hash_password("short")


def test_the_accounts_variable_is_checked_at_start():
    users = parse_users(f"Anna:{hash_password(PASSWORD)},\n bjorn:{hash_password(OTHER_PASSWORD)}")
    assert set(users) == {"anna", "bjorn"}
    assert authenticate(users, "ANNA ", PASSWORD) == "anna"
    assert (
        authenticate(users, "anna", OTHER_PASSWORD) is None
        and authenticate(users, "nobody", PASSWORD) is None
    )
    for bad in (
        "anna",
        "anna:plaintext-password",
        f"an na:{hash_password(PASSWORD)}",
        f"a:{users['anna']},a:{users['anna']}",
    ):
        with pytest.raises(AdminConfigError):
            parse_users(bad)
    with pytest.raises(AdminConfigError):
        SessionSigner("too short", 60)


def test_a_session_expires_and_cannot_be_forged_or_reused_after_sign_out():
    now = [1_000_000.0]
    signer = SessionSigner("s" * 40, 3600, clock=lambda: now[0])
    session, cookie = signer.issue("anna")
    assert signer.read(cookie) == session
    payload, mac = cookie.split(".")
    forged = payload.replace(payload[:4], "eyJ1" if payload[:4] != "eyJ1" else "eyJ2") + "." + mac
    for bad in (None, "", "x", "a.b.c", forged, cookie + "x", "." * 600):
        assert signer.read(bad) is None
    assert SessionSigner("t" * 40, 3600, clock=lambda: now[0]).read(cookie) is None  # another secret
    now[0] += 3601
    assert signer.read(cookie) is None  # expired
    now[0] -= 3601
    other, _ = signer.issue("bjorn")
    assert signer.csrf_ok(session, signer.csrf_token(session))
    assert not signer.csrf_ok(session, signer.csrf_token(other)) and not signer.csrf_ok(session, None)
    signer.revoke(session)
    assert signer.read(cookie) is None


def test_the_login_limiter_counts_per_address_and_per_name():
    now = [0.0]
    limiter = LoginLimiter(attempts=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1", "anna") == 0
        limiter.failed("10.0.0.1", "anna")
    assert limiter.retry_after("10.0.0.1", "bjorn") > 0  # this address is blocked
    assert limiter.retry_after("10.0.0.2", "anna") > 0  # and this name, from anywhere
    assert limiter.retry_after("10.0.0.2", "bjorn") == 0
    now[0] += 61
    assert limiter.retry_after("10.0.0.1", "anna") == 0


def test_every_reason_code_has_a_sentence_saying_what_to_fix():
    from membership_assets.registry.validation import validate_members

    rows = [
        {"row_number": 1, "kennitala": None, "name": None, "email": "x", "status": None},
        {
            "row_number": 2,
            "kennitala": "0101302988",
            "name": "A\x00",
            "email": "a@b.is",
            "status": "honorary",
        },
        {
            "row_number": 3,
            "kennitala": "9999123456",
            "name": "B" * 300,
            "email": "b@b.is",
            "status": "active",
        },
    ]
    codes = {r.split(":")[0] for rej in validate_members(rows).rejects for r in rej.reasons}
    assert len(codes) >= 5
    generic = reason_fix("something_new")
    for code in codes:
        assert reason_fix(code) != generic, code
    assert "check digit" in reason_fix("kennitala_invalid_checksum")
    assert "Shorten" in reason_fix("name_too_long") and "Retype" in reason_fix("email_control_characters")


# -- sign-in and sessions over HTTP -----------------------------------------------------------


def test_pages_need_a_signed_in_admin(site):
    assert requests.get(f"{site}/", timeout=10, allow_redirects=False).headers["location"] == "/admin/"
    for path in PAGES:
        resp = requests.get(f"{site}{path}", timeout=10, allow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"] == "/admin/login", path
    for path in ("/admin/sync/now", "/admin/sync/preview", "/admin/logout"):
        resp = requests.post(f"{site}{path}", data={"csrf": "x"}, headers={"Origin": site}, timeout=10)
        assert resp.status_code == 403, path
    # The machine API key is not a login.
    resp = requests.get(f"{site}/admin/", headers={"X-Api-Key": API_KEY}, timeout=10, allow_redirects=False)
    assert resp.status_code == 303


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it(site):
    resp = requests.post(
        f"{site}/admin/login",
        data={"username": ADMIN, "password": PASSWORD},
        headers={"Origin": site},
        timeout=10,
        allow_redirects=False,
    )
    assert resp.status_code == 303
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # loopback: http is fine here (see the next test)
    http = sign_in(site)
    page = http.get(f"{site}/admin/", timeout=10)
    assert page.status_code == 200 and f"Signed in as <strong>{ADMIN}</strong>" in page.text
    stolen = dict(http.cookies)
    resp = post_form(http, site, "/admin/logout")
    assert resp.url.endswith("/admin/login?notice=signed_out")
    replay = requests.get(f"{site}/admin/", cookies=stolen, timeout=10, allow_redirects=False)
    assert replay.status_code == 303  # the old cookie no longer works


def test_a_public_service_sets_secure_host_only_cookies(members_db_url, store):
    admin = admin_settings(public_origin="https://sync.example.org")
    with serve(members_db_url, admin) as base:
        resp = requests.post(
            f"{base}/admin/login",
            data={"username": ADMIN, "password": PASSWORD},
            headers={"Origin": "https://sync.example.org"},
            timeout=10,
            allow_redirects=False,
        )
        assert resp.status_code == 303
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith("__Host-membership_admin=") and "Secure" in cookie and "Path=/" in cookie
        # Without a configured origin, any name but loopback gets Secure cookies too.
        with serve(members_db_url, admin_settings()) as plain:
            resp = requests.post(
                f"{plain}/admin/login",
                data={"username": ADMIN, "password": PASSWORD},
                headers={"Host": "sync.example.org", "Origin": "http://sync.example.org"},
                timeout=10,
                allow_redirects=False,
            )
            assert resp.status_code == 303 and "Secure" in resp.headers["set-cookie"]
            assert resp.headers["set-cookie"].startswith("__Host-membership_admin=")
        # Behind its public name, a form posted from the service's internal address is refused.
        resp = requests.post(
            f"{base}/admin/login",
            data={"username": ADMIN, "password": PASSWORD},
            headers={"Origin": base},
            timeout=10,
        )
        assert resp.status_code == 403


def test_wrong_passwords_are_refused_then_rate_limited(site, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(5):
        resp = requests.post(
            f"{site}/admin/login",
            data={"username": ADMIN, "password": "not the password"},
            headers={"Origin": site},
            timeout=10,
        )
        assert resp.status_code == 401 and "Wrong name or password" in resp.text
    resp = requests.post(
        f"{site}/admin/login",
        data={"username": ADMIN, "password": PASSWORD},
        headers={"Origin": site},
        timeout=10,
    )
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) > 0
    assert "not the password" not in caplog.text and PASSWORD not in caplog.text
    resp = requests.post(  # this address is blocked for every name
        f"{site}/admin/login",
        data={"username": OTHER, "password": OTHER_PASSWORD},
        headers={"Origin": site},
        timeout=10,
    )
    assert resp.status_code == 429


def test_a_session_ends_when_it_expires(members_db_url, store):
    with serve(members_db_url, admin_settings(session_seconds=1)) as base:
        http = sign_in(base)
        assert http.get(f"{base}/admin/", timeout=10).status_code == 200
        time.sleep(2.1)
        resp = http.get(f"{base}/admin/", timeout=10, allow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"] == "/admin/login"


def test_forms_need_the_sessions_token_and_the_same_origin(site, store):
    http = sign_in(site)
    token = csrf_of(http.get(f"{site}/admin/sync", timeout=10).text)
    other = sign_in(site, OTHER, OTHER_PASSWORD)
    other_token = csrf_of(other.get(f"{site}/admin/sync", timeout=10).text)
    attempts = [
        ({"preview_id": "x"}, {"Origin": site}),  # no token
        ({"preview_id": "x", "csrf": other_token}, {"Origin": site}),  # another session's token
        ({"preview_id": "x", "csrf": token}, {"Origin": "https://evil.example"}),
        ({"preview_id": "x", "csrf": token}, {"Origin": "null"}),
        ({"preview_id": "x", "csrf": token}, {}),  # neither Origin nor Referer
        ({"preview_id": "x", "csrf": token}, {"Referer": "https://evil.example/page"}),
    ]
    for data, headers in attempts:
        resp = http.post(
            f"{site}/admin/sync/now", data=data, headers=headers, timeout=10, allow_redirects=False
        )
        assert resp.status_code == 403, (data, headers)
    resp = http.post(
        f"{site}/admin/sync/now",
        data={"preview_id": "x", "csrf": token},
        headers={"Referer": f"{site}/admin/sync"},
        timeout=10,
        allow_redirects=False,
    )
    assert resp.status_code == 303  # accepted as a form; refused as a sync (no such preview)
    assert resp.headers["location"] == "/admin/sync?notice=preview_unknown"
    assert sync_requests(store) == []


# -- the pages --------------------------------------------------------------------------------


def test_status_shows_the_roll_and_its_freshness(site):
    http = sign_in(site)
    page = http.get(f"{site}/admin/", timeout=10).text
    assert '<p class="figure" id="eligible-count">30</p>' in page
    assert "30 minutes ago" in page and "Up to date" in page and "admin anna" in page
    assert "Latest attempt" in page and "removal_count" in page  # the failed sync after it
    assert PERSONAL not in page


def test_an_empty_roll_and_a_stale_one_say_so(members_db_url, store):
    with serve(members_db_url, admin_settings()) as base:
        http = sign_in(base)
        assert "No sync has been applied yet" in http.get(f"{base}/admin/", timeout=10).text
        seed_history(store)
        with store.engine.begin() as conn:
            conn.execute(sync_log.update().values(sync_time=datetime(2020, 1, 1, tzinfo=timezone.utc)))
        page = http.get(f"{base}/admin/", timeout=10).text
    assert "Stale: older than 2 hours" in page and "2020-01-01" in page


def test_history_names_who_started_each_sync_and_counts_reinstatements(site):
    page = sign_in(site).get(f"{site}/admin/history", timeout=10).text
    for who in ("hourly schedule", "Django webhook", "admin anna", "sync API"):
        assert who in page
    rows = table_rows(page, "history")
    by_who = {r["Started by"]: r for r in rows}
    assert (by_who["admin anna"]["Reinstated"], by_who["admin anna"]["Added"]) == ("10", "0")
    assert by_who["Django webhook"]["Removed"] == "10"
    assert (by_who["hourly schedule"]["Added"], by_who["hourly schedule"]["Quarantined"]) == ("30", "1")
    assert by_who["sync API"]["Remarks"] == "Failed in membership_sync (Failure): stopped by removal_count"
    assert by_who["hourly schedule"]["Remarks"] == "1 row quarantined"
    assert PERSONAL not in page and "Jón" not in page


def test_a_syncs_changes_name_the_members_to_signed_in_admins_only(site, seeded):
    http = sign_in(site)
    page = http.get(f"{site}/admin/syncs/{seeded['reinstatement']}", timeout=10).text
    assert page.count('<span class="pill reinstated">reinstated</span>') == 10
    assert "Félagi 0" in page and "removed → active" in page
    assert "1000000000" not in page and "••••••0000" in page  # kennitala: last four digits only
    removed = http.get(f"{site}/admin/syncs/{seeded['removal']}?kind=added", timeout=10).text
    assert "No member was changed this way" in removed
    failed = http.get(f"{site}/admin/syncs/{seeded['failed']}", timeout=10).text
    assert "Nothing was applied" in failed and PERSONAL not in failed
    assert http.get(f"{site}/admin/syncs/nope", timeout=10).status_code == 404
    assert http.get(f"{site}/admin/syncs/{seeded['removal']}?kind=deleted", timeout=10).status_code == 400
    signed_out = requests.get(f"{site}/admin/syncs/{seeded['reinstatement']}", timeout=10)
    assert "Félagi" not in signed_out.text


def test_quarantine_says_what_to_fix_in_django(site):
    page = sign_in(site).get(f"{site}/admin/quarantine", timeout=10).text
    assert "Guðrún Quarantined" in page and "0101302988" in page
    assert reason_fix("kennitala_invalid_checksum") in page.replace("&#39;", "'")
    assert reason_fix("email_control_characters") in page


def test_pending_events_are_listed(site, members_db_url):
    events = ChangeEventStore.from_url(members_db_url)
    events.record(event_id=str(uuid.uuid4()), event="member.saved", source="webhook", member_id=4242)
    page = sign_in(site).get(f"{site}/admin/events", timeout=10).text
    assert '<strong id="pending-count">1</strong>' in page and "4242" in page and "member.saved" in page
    events.engine.dispose()


# -- preview, then sync now -------------------------------------------------------------------


def wait_for_preview(http, base) -> str:
    deadline = time.time() + 60
    while time.time() < deadline:
        page = http.get(f"{base}/admin/sync", timeout=10).text
        if "Preview running" not in page:
            return page
        time.sleep(0.2)
    raise AssertionError("the preview did not finish")


def test_preview_then_sync_now_requests_a_sync_in_the_admins_name(
    members_db_url, store, django_sim, monkeypatch
):
    with serve(members_db_url, admin_settings(planner_for(django_sim))) as base:
        http = sign_in(base)
        assert 'id="sync-now"' not in http.get(f"{base}/admin/sync", timeout=10).text  # preview first
        post_form(http, base, "/admin/sync/preview")
        page = wait_for_preview(http, base)
        valid = len(django_sim.data.truth.valid_kennitalas)
        assert f'<td id="would-add">{valid}</td>' in page and "The guards accept this sync" in page
        assert sync_requests(store) == []  # a preview writes nothing
        preview_id = page.split('name="preview_id" value="')[1].split('"')[0]
        resp = post_form(http, base, "/admin/sync/now", {"preview_id": preview_id})
        assert resp.url.endswith("notice=requested") and "Sync requested" in resp.text
        assert "waiting for Dagster" in resp.text
        assert sync_requests(store) == [{"source": "admin", "requested_by": ADMIN, "dry_run": False}]
        assert 'id="sync-now"' not in resp.text  # one preview, one sync
        again = post_form(http, base, "/admin/sync/now", {"preview_id": preview_id})
        assert again.url.endswith("notice=preview_used") and len(sync_requests(store)) == 1
        post_form(http, base, "/admin/sync/preview")  # a new preview while the request still waits
        fresh = wait_for_preview(http, base).split('name="preview_id" value="')[1].split('"')[0]
        again = post_form(http, base, "/admin/sync/now", {"preview_id": fresh})
        assert again.url.endswith("notice=already_requested") and len(sync_requests(store)) == 1
    monkeypatch.setenv("REGISTRY_EVENTS_QUIET_SECONDS", "0")
    with dg.DagsterInstance.ephemeral() as instance:
        [request] = tick(instance, members_db_url)
    assert (
        request.tags["membership/source"] == f"admin:{ADMIN}"
        and request.tags["membership/trigger"] == "admin"
    )
    assert request.run_config == {}  # a real sync, guarded by the run itself


def test_sync_now_is_not_offered_when_the_guards_would_stop_it(members_db_url, store, django_sim):
    with serve(members_db_url, admin_settings(planner_for(django_sim, max_reject_fraction=0.001))) as base:
        http = sign_in(base)
        post_form(http, base, "/admin/sync/preview")
        page = wait_for_preview(http, base)
        assert "The guards would stop this sync" in page and "reject_rate" in page
        assert 'id="sync-now"' not in page
        preview_id = http.get(f"{base}/admin/sync", timeout=10).text.count("preview_id")  # none in the page
        assert preview_id == 0
        latest = post_form(http, base, "/admin/sync/now", {"preview_id": "guess"})
        assert latest.url.endswith("notice=preview_unknown")
    assert sync_requests(store) == []


def test_sync_now_needs_a_new_preview_after_another_sync(members_db_url, store, seeded, django_sim):
    with serve(
        members_db_url, admin_settings(planner_for(django_sim, max_removals=10_000, max_removal_fraction=1))
    ) as base:
        http = sign_in(base)
        post_form(http, base, "/admin/sync/preview")
        page = wait_for_preview(http, base)
        preview_id = page.split('name="preview_id" value="')[1].split('"')[0]
        from membership_assets_tests.admin_site import _apply

        _apply(store, members(5), "sync-0005", pd.Timestamp.now(tz="UTC").to_pydatetime(), "scheduled")
        resp = post_form(http, base, "/admin/sync/now", {"preview_id": preview_id})
        assert resp.url.endswith("notice=roll_changed") and "Preview again" in resp.text
    assert sync_requests(store) == []


def test_a_failed_preview_says_so_without_the_error_text(members_db_url, store):
    def broken(_store):
        raise RuntimeError(f"registry row {PERSONAL} unreadable")

    with serve(members_db_url, admin_settings(broken)) as base:
        http = sign_in(base)
        post_form(http, base, "/admin/sync/preview")
        page = wait_for_preview(http, base)
    assert "Preview failed" in page and "RuntimeError" in page and PERSONAL not in page


# -- bad input, outages, privacy --------------------------------------------------------------


def test_no_input_gets_a_500(site, seeded, caplog):
    caplog.set_level(logging.INFO)
    http = sign_in(site)
    token = csrf_of(http.get(f"{site}/admin/sync", timeout=10).text)
    gets = [
        "/admin/history?page=0",
        "/admin/history?page=99999999999999",
        "/admin/history?page=-1",
        "/admin/syncs/" + "a" * 5000,
        "/admin/syncs/%00%ff",
        "/admin/syncs/x'%20OR%201=1",
        f"/admin/syncs/{seeded['first']}?page=abc",
        "/admin/nothing-here",
        "/admin/static/../../etc/passwd",
    ]
    for path in gets:
        resp = http.get(f"{site}{path}", timeout=10)
        assert 400 <= resp.status_code < 500, path
    posts = [
        ({"data": b"csrf=" + token.encode() + b"&x=" + b"y" * 10_000}, 413),
        ({"data": b"\xff\xfe", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 400),
        ({"data": b'{"csrf": "x"}', "headers": {"Content-Type": "application/json"}}, 415),
        (
            {
                "data": "&".join(f"k{i}=v" for i in range(100)),
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            400,
        ),
    ]
    for kw, status in posts:
        headers = {"Origin": site, **kw.pop("headers", {})}
        resp = http.post(f"{site}/admin/sync/now", headers=headers, timeout=10, **kw)
        assert resp.status_code == status, kw
    resp = requests.get(
        f"{site}/admin/", cookies={"membership_admin": "x" * 5000}, timeout=10, allow_redirects=False
    )
    assert resp.status_code == 303
    assert "Félagi" not in caplog.text and "Guðrún" not in caplog.text and PASSWORD not in caplog.text


def test_pages_say_unavailable_when_the_database_is_gone(site, store):
    http = sign_in(site)
    store.drop_schema()
    resp = http.get(f"{site}/admin/history", timeout=10)
    assert resp.status_code == 503 and "Not available right now" in resp.text
    assert "Traceback" not in resp.text


def test_every_page_sends_protective_headers(site):
    http = sign_in(site)
    for path in PAGES:
        resp = http.get(f"{site}{path}", timeout=10)
        assert resp.status_code == 200, path
        assert "default-src 'none'" in resp.headers["content-security-policy"]
        assert resp.headers["x-frame-options"] == "DENY" and resp.headers["cache-control"] == "no-store"


# -- the sync API's corrected fields ----------------------------------------------------------


def test_the_api_counts_a_reinstatement_of_2000_as_reinstated(members_db_url, store):
    from membership_assets_tests.admin_site import _apply

    everyone = members(2000)
    t = pd.Timestamp.now(tz="UTC").to_pydatetime()
    _apply(store, everyone, "s1", t - pd.Timedelta(hours=2), "scheduled")
    _apply(store, everyone.iloc[:0], "s2", t - pd.Timedelta(hours=1), "rollback")
    _apply(store, everyone, "s3", t, "scheduled")
    with serve(members_db_url, admin_settings()) as base:
        logs = requests.get(f"{base}/api/sync/logs", headers={"X-Api-Key": API_KEY}, timeout=10).json()[
            "syncs"
        ]
        status = requests.get(f"{base}/api/sync/status", headers={"X-Api-Key": API_KEY}, timeout=10).json()
    counts = {s["id"]: (s["members_added"], s["members_reinstated"], s["members_removed"]) for s in logs}
    assert counts == {"s1": (2000, 0, 0), "s2": (0, 0, 2000), "s3": (0, 2000, 0)}
    assert status["last_applied_sync"]["members_reinstated"] == 2000
    assert status["last_applied_sync"]["members_added"] == 0


def test_the_api_shows_no_empty_error_for_a_partial_sync(site):
    logs = requests.get(f"{site}/api/sync/logs", headers={"X-Api-Key": API_KEY}, timeout=10).json()["syncs"]
    by_id = {s["id"]: s for s in logs}
    partial = by_id["sync-0001"]
    assert partial["status"] == "partial" and partial["error"] is None
    assert partial["notes"] == {"rejected_rows": 1}
    failed = by_id["sync-0004"]
    assert failed["error"] == {"step": "membership_sync", "type": "Failure", "guards": ["removal_count"]}
    assert all(s["error"] is None for s in logs if s["status"] != "failed")


# -- configuration ----------------------------------------------------------------------------


def test_admin_hash_prints_a_hash_that_signs_in(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin-hash", "anna"]) == 0
    line = capsys.readouterr().out.strip()
    assert PASSWORD not in line and authenticate(parse_users(line), "anna", PASSWORD) == "anna"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["admin-hash"]) == 2


def test_the_service_refuses_to_start_with_malformed_accounts_or_no_session_secret(
    monkeypatch, tmp_path, capsys
):
    from membership_assets.registry.settings import admin_settings as from_environment

    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SYNC_ADMIN_USERS_PASSWORD", "anna:plaintext")
    assert main(["sync-api", "--port", "0"]) == 2
    assert "admin password hash" in capsys.readouterr().err
    monkeypatch.setenv("SYNC_ADMIN_USERS_PASSWORD", f"anna:{hash_password(PASSWORD)}")
    monkeypatch.delenv("SYNC_ADMIN_SESSION_SECRET_PASSWORD", raising=False)
    with pytest.raises(AdminConfigError, match="SESSION_SECRET"):
        from_environment("production")
    monkeypatch.delenv("SYNC_ADMIN_USERS_PASSWORD")
    for hours in ("eight", "0", "1000"):
        monkeypatch.setenv("SYNC_ADMIN_SESSION_HOURS", hours)
        with pytest.raises(AdminConfigError, match="SYNC_ADMIN_SESSION_HOURS"):
            from_environment("local")
    monkeypatch.setenv("SYNC_ADMIN_SESSION_HOURS", "0.5")
    local = from_environment("local")  # the documented local account
    assert local.session_seconds == 1800
    assert authenticate(local.users, "admin", "simulated-admin-password") == "admin"


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=700), codes=st.text(max_size=200))
def test_no_cookie_form_token_or_reason_text_makes_the_page_fail(text, codes):
    signer = SessionSigner("s" * 40, 3600)
    assert signer.read(text) is None  # never a session, never an exception
    session, _ = signer.issue("anna")
    assert not signer.csrf_ok(session, text)
    assert all(isinstance(reason_fix(c), str) for c in reason_codes(codes))
    with contextlib.suppress(AdminConfigError):
        parse_users(text)


def test_two_replicas_share_previews_sync_requests_and_sign_outs(members_db_url, store, django_sim):
    admin = admin_settings(planner_for(django_sim))
    with serve(members_db_url, admin) as one, serve(members_db_url, admin) as two:
        http = sign_in(one)
        post_form(http, one, "/admin/sync/preview")
        page = wait_for_preview(http, two)  # the preview runs on one, the page is served by two
        preview_id = page.split('name="preview_id" value="')[1].split('"')[0]
        resp = post_form(http, two, "/admin/sync/now", {"preview_id": preview_id}, headers={"Origin": two})
        assert resp.url.endswith("notice=requested")
        again = post_form(http, one, "/admin/sync/now", {"preview_id": preview_id})
        assert again.url.endswith("notice=preview_used") and len(sync_requests(store)) == 1
        other_session = sign_in(two)
        post_form(http, one, "/admin/logout")
        for base in (one, two):  # signing out ends every session of that admin, on every replica
            resp = other_session.get(f"{base}/admin/", timeout=10, allow_redirects=False)
            assert resp.status_code == 303
        assert sign_in(two).get(f"{one}/admin/", timeout=10).status_code == 200  # a new sign-in works


def test_a_reinstatement_reads_as_reinstated_in_dagster_too(registry_defs, instance, django_sim):
    from membership_assets_tests.test_registry_job import run_sync

    everyone = list(django_sim.data.members)
    valid = set(django_sim.data.truth.valid_kennitalas)
    gone = {k for k in (str(m["kennitala"]).replace("-", "") for m in everyone) if k in valid}
    gone = set(sorted(gone)[:15])
    assert run_sync(registry_defs, instance).success
    django_sim.set_members([m for m in everyone if str(m["kennitala"]).replace("-", "") not in gone])
    assert run_sync(registry_defs, instance).success
    django_sim.set_members(everyone)
    result = run_sync(registry_defs, instance)
    [mat] = [m for m in result.asset_materializations_for_node("membership_sync")]
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert (meta["added"], meta["reinstated"], meta["removed"]) == (0, 15, 0)
