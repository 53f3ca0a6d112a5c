"""The local registry is a real Django + DRF app: Ekklesia's shapes, DRF's paging, redirects,
auth and ETags, planted hostile rows served verbatim, and faults injected by its middleware."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from membership_assets.connectors.errors import BadResponseError, ServerError, TransportError
from membership_assets.registry.client import DjangoRegistryClient
from membership_assets.simulators.django_registry import (
    DjangoRegistrySimulator,
    RegistryData,
    generate_registry,
    make_kennitala,
)

ELIGIBLE = "/api/members/eligible/"
FULL = "/felagar/api/full/"


def get(sim, path, scheme="Token", token=None, **kw) -> requests.Response:
    headers = {"Authorization": f"{scheme} {token or sim.token}", **kw.pop("headers", {})}
    return requests.get(sim.base_url + path, headers=headers, timeout=kw.pop("timeout", 10), **kw)


def client(sim, **kw) -> DjangoRegistryClient:
    kw.setdefault("page_size", 50)
    kw.setdefault("max_attempts", 2)
    kw.setdefault("sleep", lambda s: None)
    return DjangoRegistryClient.connect(base_url=sim.base_url, api_key=sim.token, rate_limit=5000, **kw)


@pytest.fixture
def small():
    with DjangoRegistrySimulator(generate_registry(120, seed=3, invalid=False)) as sim:
        yield sim


def test_eligible_rows_have_ekklesias_shape_and_derived_status(small):
    kts = small.data.truth.valid_kennitalas
    small.update(kts[0], status="active")
    small.update(kts[1], status="unpaid")
    small.update(kts[2], status="suspended")
    body = get(small, ELIGIBLE + "?page_size=5").json()
    assert set(body) == {"count", "next", "previous", "results"}
    rows = body["results"]
    assert [set(r) for r in rows] == [{"id", "ssn", "name", "contact_info", "status"}] * 5
    assert set(rows[0]["contact_info"]) == {"email"}
    assert [r["status"] for r in rows[:3]] == ["active", "unpaid", "suspended"]


def test_full_listing_has_every_comrade_soft_deleted_too_and_no_status(small):
    leaver = small.data.truth.valid_kennitalas[0]
    small.remove(leaver)
    eligible = get(small, ELIGIBLE + "?page_size=500").json()
    full = get(small, FULL + "?page_size=500").json()
    assert eligible["count"] == 119 and full["count"] == 120
    assert leaver not in {r["ssn"].replace("-", "") for r in eligible["results"]}
    assert leaver in {r["ssn"].replace("-", "") for r in full["results"]}
    assert all("status" not in r for r in full["results"])
    assert {"id", "name", "ssn", "birthday", "date_joined", "contact_info", "unions"} <= set(
        full["results"][0]
    )
    assert set(full["results"][0]["contact_info"]) == {"pk", "phone", "email", "facebook"}


def test_drf_page_number_pagination(small):
    assert len(get(small, ELIGIBLE).json()["results"]) == 100  # page_size = 100
    body = get(small, ELIGIBLE + "?page_size=1000").json()
    assert len(body["results"]) == 120 and body["next"] is None  # max_page_size = 500
    first = get(small, ELIGIBLE + "?page_size=50").json()
    assert first["next"] == f"{small.base_url}{ELIGIBLE}?page=2&page_size=50"  # absolute, as DRF builds it
    last = get(small, ELIGIBLE + "?page=3&page_size=50").json()
    assert len(last["results"]) == 20 and last["previous"].endswith("page=2&page_size=50")
    past = get(small, ELIGIBLE + "?page=4&page_size=50")
    assert past.status_code == 404 and past.json() == {"detail": "Invalid page."}


def test_a_missing_trailing_slash_is_a_permanent_redirect(small):
    resp = get(small, "/api/members/eligible?page_size=2", allow_redirects=False)
    assert resp.status_code == 301 and resp.headers["Location"].endswith(f"{ELIGIBLE}?page_size=2")
    assert small.requests.by_route["redirect"] == 1


def test_token_auth_and_the_bearer_variant():
    data = generate_registry(3, invalid=False)
    with DjangoRegistrySimulator(data) as sim:
        bad = get(sim, ELIGIBLE, token="expired")
        assert bad.status_code == 401 and bad.json() == {"detail": "Invalid token."}
        assert bad.headers["WWW-Authenticate"] == "Token"
        assert get(sim, ELIGIBLE, scheme="Bearer").status_code == 401
    with DjangoRegistrySimulator(data, auth_scheme="Bearer") as sim:
        assert get(sim, ELIGIBLE, scheme="Bearer").status_code == 200
        assert get(sim, ELIGIBLE, scheme="Token").status_code == 401


def test_plain_members_shape():
    data = generate_registry(4, invalid=False)
    with DjangoRegistrySimulator(data, shape="plain") as sim:
        body = get(sim, ELIGIBLE).json()
    assert body == {"members": data.members}


HOSTILE = [
    {"kennitala": 403855259, "name": "Kennitala as an integer", "email": None, "status": "active"},
    {"kennitala": 403855259.0, "name": "Kennitala as a float", "email": None, "status": "active"},
    {"kennitala": "0101302989", "name": "Blank status", "email": None, "status": ""},
    {"kennitala": "0101302989", "name": "Null status", "email": None, "status": None},
    {"kennitala": "0101302989", "name": "No status field", "email": None},
    {"kennitala": "0101302989", "name": "N" * 400, "email": None, "status": "active"},
    {"kennitala": "0101302989", "name": "Nul\x00byte", "email": "a\x00@example.is", "status": "active"},
    {"kennitala": "0101302989", "name": "\u202eevil\x1b[31m red\x07", "email": None, "status": "active"},
    {"kennitala": "0101302989", "name": "Long status", "email": None, "status": "s" * 60},
    {"kennitala": "1" * 70, "name": "Long raw kennitala", "email": None, "status": "active"},
    {"kennitala": None, "name": None, "email": 12, "status": 3},
    {"name": "Only a name"},
    {"kennitala": "0101302989", "name": "Raw extras", "ssn": "planted", "_raw": {"contact_info": "x"}},
]


def test_hostile_rows_are_served_verbatim_and_kept_as_planted():
    with DjangoRegistrySimulator(RegistryData(members=[dict(r) for r in HOSTILE])) as sim:
        assert sim.data.members == HOSTILE
        served = get(sim, ELIGIBLE + "?page_size=500").json()["results"]
        plain = [
            {k: v for k, v in r.items() if k != "_raw"}
            for r in DjangoRegistryClient.connect(base_url=sim.base_url, api_key=sim.token)
            .fetch_members()
            .rows
        ]
    assert [r["ssn"] for r in served[:3]] == [403855259, 403855259.0, "0101302989"]
    assert isinstance(served[0]["ssn"], int) and isinstance(served[1]["ssn"], float)
    assert [r.get("status", "MISSING") for r in served[2:5]] == ["", None, "MISSING"]
    assert served[5]["name"] == "N" * 400 and served[6]["name"] == "Nul\x00byte"
    assert served[6]["contact_info"] == {"email": "a\x00@example.is"}
    assert served[7]["name"] == "\u202eevil\x1b[31m red\x07"
    assert served[8]["status"] == "s" * 60 and served[9]["ssn"] == "1" * 70
    assert served[10] | {"id": 0} == {
        "id": 0,
        "ssn": None,
        "name": None,
        "contact_info": {"email": 12},
        "status": 3,
    }
    assert "ssn" not in served[11] and "contact_info" not in served[11] and "status" not in served[11]
    assert served[12]["ssn"] == "planted" and served[12]["contact_info"] == "x"
    # What the sync's client makes of them: the raw values, for validation to judge.
    assert [r["kennitala"] for r in plain[:2]] == [403855259, 403855259.0]
    assert plain[3]["status"] is None and plain[4]["status"] is None


def test_a_ten_megabyte_name_is_served():
    big = "x" * 10_000_000
    with DjangoRegistrySimulator(RegistryData(members=[{"kennitala": "0101302989", "name": big}])) as sim:
        rows = client(sim).fetch_members().rows
    assert len(rows[0]["name"]) == 10_000_000


def test_listing_etag_sees_every_change_and_answers_304(small):
    first = get(small, ELIGIBLE + "?page_size=1")
    etag = first.headers["ETag"]
    again = get(small, ELIGIBLE + "?page_size=1", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag
    small.update(small.data.truth.valid_kennitalas[-1], email="moved@example.is")  # not on page 1
    assert get(small, ELIGIBLE + "?page_size=1", headers={"If-None-Match": etag}).status_code == 200


def test_conditional_get_middleware_etags_each_page_as_django_does():
    with DjangoRegistrySimulator(generate_registry(120, seed=3, invalid=False), etag="middleware") as sim:
        first = get(sim, ELIGIBLE + "?page_size=1")
        etag = first.headers["ETag"]
        assert get(sim, ELIGIBLE + "?page_size=1", headers={"If-None-Match": etag}).status_code == 304
        # Django hashes the page it serves: a change outside page 1 keeps the same ETag.
        sim.update(sim.data.truth.valid_kennitalas[-1], email="moved@example.is")
        assert get(sim, ELIGIBLE + "?page_size=1", headers={"If-None-Match": etag}).status_code == 304
        sim.add(
            {"kennitala": make_kennitala(__import__("random").Random(1)), "name": "New", "status": "active"}
        )
        assert get(sim, ELIGIBLE + "?page_size=1", headers={"If-None-Match": etag}).status_code == 200
    with DjangoRegistrySimulator(generate_registry(3, invalid=False), etag=False) as sim:
        assert "ETag" not in get(sim, ELIGIBLE).headers


def test_server_errors_and_html_pages_from_the_middleware(small):
    small.faults.add(path_pattern="eligible", status=500, times=None)
    with pytest.raises(ServerError, match="HTTP 500"):
        client(small).fetch_members()
    small.faults.clear()
    small.faults.add(path_pattern="eligible", status=502, html=True, times=None)
    resp = get(small, ELIGIBLE)
    assert resp.status_code == 502 and resp.headers["Content-Type"].startswith("text/html")
    assert b"502 Bad Gateway" in resp.content
    small.faults.clear()
    small.faults.add(path_pattern="eligible", html=True, times=None)  # 200 with a login page
    resp = get(small, ELIGIBLE)
    assert resp.status_code == 200 and resp.text.startswith("<!DOCTYPE html>")
    with pytest.raises(BadResponseError, match="not valid JSON"):
        client(small).fetch_members()
    small.faults.clear()
    small.faults.add(path_pattern="eligible", status=502, html=True, times=1)
    assert len(client(small).fetch_members().rows) == 120  # retried past one bad gateway


def test_slow_and_hanging_pages(small):
    small.faults.add(page=2, delay=0.5, times=1)
    started = time.monotonic()
    assert len(client(small).fetch_members().rows) == 120
    assert time.monotonic() - started >= 0.5
    small.faults.add(page=2, hang=True, times=None)
    with pytest.raises(TransportError, match="timed out"):
        client(small, timeout=0.5, max_attempts=1).fetch_members()
    stopped = time.monotonic()
    small.stop()  # releases the hanging request at once
    assert time.monotonic() - stopped < 3
    small.start = lambda: small  # already stopped; the fixture's exit stops again harmlessly


def test_writes_between_page_reads_reach_the_next_page(small):
    """The page shift of issue 9: one leaves on page 1, one joins; page 2's first is never read."""
    listed = [r["kennitala"] for r in small.data.members]
    leaver, skipped = listed[0], listed[50]

    def leave_and_join() -> None:
        small.remove(leaver)
        small.add({"kennitala": "0101302989", "name": "Ný", "email": None, "status": "active"})

    small.faults.between_pages(leave_and_join, after_page=1)
    listing = client(small).fetch_members()
    read = [r["kennitala"] for r in listing.rows]
    assert listing.declared_count == len(read) == 120  # the count never changed
    assert skipped not in read and "0101302989" in read
    assert skipped in [r["kennitala"] for r in small.data.members]  # yet still a member


def test_a_callback_before_a_page_is_built_is_seen_by_that_page(small):
    last = small.data.members[-1]["kennitala"]
    seen = threading.Event()
    small.faults.add(page=3, before=lambda: (small.update(last, name="Changed"), seen.set()), times=1)
    rows = client(small).fetch_members().rows
    assert seen.is_set() and rows[-1]["name"] == "Changed"


def test_stand_ins_in_one_process_are_isolated():
    with (
        DjangoRegistrySimulator(generate_registry(5, seed=1, invalid=False)) as a,
        DjangoRegistrySimulator(generate_registry(7, seed=2, invalid=False)) as b,
    ):
        a.remove(a.data.truth.valid_kennitalas[0])
        assert get(a, ELIGIBLE).json()["count"] == 4 and get(b, ELIGIBLE).json()["count"] == 7
        assert len(a.data.members) == 4 and len(b.data.members) == 7


def test_state_round_trips_through_save_and_load(tmp_path, small):
    small.update(small.data.truth.valid_kennitalas[0], status="suspended")
    small.save(tmp_path / "registry.json")
    loaded = RegistryData.load(tmp_path / "registry.json")
    with DjangoRegistrySimulator(loaded) as again:
        assert again.data.members == small.data.members
        assert again.data.truth == small.data.truth
        assert again.data.version == small.data.version


def test_data_is_a_snapshot_callers_may_edit(small):
    rows = small.data.members
    rows[0]["name"] = "Edited locally"
    assert small.data.members[0]["name"] != "Edited locally"
    small.set_members(rows[:10])
    assert get(small, ELIGIBLE).json()["count"] == 10
    assert small.data.members[0]["name"] == "Edited locally"


def test_churn_is_a_month_of_membership_life(small):
    before = {r["kennitala"] for r in small.data.members}
    churn = small.churn(step=1, fraction=0.05)
    after = {r["kennitala"].replace("-", ""): r for r in small.data.members}
    assert len(churn["left"]) == len(churn["joined"]) == len(churn["changed"]) == 6
    assert not set(churn["left"]) & set(after) and set(churn["joined"]) <= set(after)
    assert all(".1@" in after[k]["email"] for k in churn["changed"])
    assert len(after) == len(before)


def test_local_stand_ins_keep_their_state_between_demo_runs(tmp_path, monkeypatch):
    from membership_assets.simulators.local import LocalSimulators

    monkeypatch.setenv("DJANGO_SIM_MEMBERS", "60")
    monkeypatch.setenv("ACTION_BUILDER_SIM_PEOPLE", "20")
    with LocalSimulators(tmp_path, ab_port=0, django_port=0) as sims:
        first = sims.django.data.members
        sims.django.remove(sims.django.data.truth.valid_kennitalas[0])
    with LocalSimulators(tmp_path, ab_port=0, django_port=0, advance_registry=True) as sims:
        assert len(sims.django.data.members) == len(first) - 1  # the removal was kept
        assert sims.registry_churn and len(sims.registry_churn["joined"]) == 1
        assert get(sims.django, ELIGIBLE).json()["count"] == len(first) - 1


def test_production_code_never_imports_django():
    import subprocess
    import sys

    code = (
        "import sys, membership_assets.definitions, membership_assets.registry.assets, "
        "membership_assets.registry.migrate; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('django', 'rest_framework')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_server_side_rate_limit_answers_429_with_retry_after():
    with DjangoRegistrySimulator(generate_registry(3, invalid=False), rate_limit=1) as sim:
        statuses = [get(sim, ELIGIBLE) for _ in range(3)]
    limited = [r for r in statuses if r.status_code == 429]
    assert statuses[0].status_code == 200 and limited and limited[0].headers["Retry-After"] == "1"
    assert sim.requests.by_route["rate_limited"] == len(limited)


def test_conditional_get_can_be_switched_on_while_running(small):
    assert get(small, ELIGIBLE).headers["ETag"].startswith('"members-v')
    small.etag = "middleware"
    page_etag = get(small, ELIGIBLE).headers["ETag"]
    assert not page_etag.startswith('"members-v')
    small.etag = False
    assert "ETag" not in get(small, ELIGIBLE).headers
