"""The admin page in headless Chromium, as an Ekklesia admin uses it: sign in, read the roll's
status and history, open a sync's changes, preview, sync now, see the guards' answer.

The history is made by real ``registry_sync`` runs against the Django simulator; "sync now" is
carried out the way production does it: the event sensor's run request, executed as a run.
Screenshots of each page are kept under .local/test-artifacts/screenshots/admin-*.png.
"""

from __future__ import annotations

import dagster as dg
import pytest

from membership_assets.registry.events import ChangeEventStore
from membership_assets_tests.admin_site import ADMIN, PASSWORD, admin_settings, serve
from membership_assets_tests.browser import screenshot
from membership_assets_tests.test_registry_admin import planner_for
from membership_assets_tests.test_registry_job import run_sync, store_for
from membership_assets_tests.test_registry_webhook import tick

pytestmark = pytest.mark.slow


def kt(member: dict) -> str:
    return str(member["kennitala"]).replace("-", "")


def valid_members(sim) -> list[dict]:
    valid = set(sim.data.truth.valid_kennitalas)
    return [m for m in sim.data.members if kt(m) in valid]


@pytest.fixture
def history(registry_defs, instance, django_sim):
    """Three real syncs: everyone, 20 members gone from Django, the 20 back again."""
    everyone = list(django_sim.data.members)
    gone = {kt(m) for m in valid_members(django_sim)[:20] if m["status"] == "active"}
    assert run_sync(registry_defs, instance).success
    django_sim.set_members([m for m in everyone if kt(m) not in gone])
    assert run_sync(registry_defs, instance, tags={"membership/source": "webhook"}).success
    django_sim.set_members(everyone)
    assert run_sync(registry_defs, instance, tags={"membership/source": "api"}).success
    return {"everyone": everyone, "gone": gone}


def sign_in(page, base: str) -> None:
    page.goto(f"{base}/")
    assert page.url.endswith("/admin/login")
    page.fill("#username", ADMIN)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def test_an_admin_reads_the_roll_and_syncs_after_a_preview(
    page, registry_defs, instance, django_sim, members_db_url, history, monkeypatch
):
    store = store_for(members_db_url)
    _, eligible = store.eligibility_counts()
    with serve(members_db_url, admin_settings(planner_for(django_sim))) as base:
        page.goto(f"{base}/admin/login")
        screenshot(page, "admin-login")
        page.fill("#username", ADMIN)
        page.fill("#password", "not my password")
        page.click("button[type=submit]")
        assert "Wrong name or password" in page.inner_text("main")
        sign_in(page, base)

        # Status: the roll and its freshness.
        assert page.inner_text("#eligible-count") == f"{eligible:,}"
        assert "Up to date" in page.inner_text("#freshness") and "sync API" in page.inner_text("#freshness")
        screenshot(page, "admin-status")

        # History: who started each sync; the reinstatement counted as such.
        page.click("nav >> text=History")
        rows = page.locator("#history tbody tr")
        assert rows.count() == 3
        newest = rows.nth(0).inner_text()
        assert "sync API" in newest and f"\t{len(history['gone'])}\t" in newest  # reinstated column
        assert "Django webhook" in rows.nth(1).inner_text() and "Dagster UI" in rows.nth(2).inner_text()
        screenshot(page, "admin-history")

        # A sync's changes: the members reinstated, by name.
        rows.nth(0).locator("a").first.click()
        assert page.locator("#changes .pill.reinstated").count() == len(history["gone"])
        names = {m["name"] for m in history["everyone"] if kt(m) in history["gone"]}
        shown = page.inner_text("#changes")
        assert all(name in shown for name in names)
        screenshot(page, "admin-sync-changes")

        # Quarantine: the simulator's planted bad rows, each with what to fix in Django.
        page.click("nav >> text=Quarantine")
        quarantine = page.inner_text("#quarantine")
        assert "check digit does not match" in quarantine and "organisation, not a person" in quarantine
        screenshot(page, "admin-quarantine")

        # Pending events: a webhook that arrived and waits for the sensor.
        events = ChangeEventStore(store)
        events.record(
            event_id="5d0c3f55-8f2b-4c1e-9d57-4a4d0a7b9a11",
            event="member.saved",
            source="webhook",
            member_id=77,
        )
        page.click("nav >> text=Pending events")
        assert page.inner_text("#pending-count") == "1" and "member.saved" in page.inner_text("#pending")
        screenshot(page, "admin-events")

        # Preview: three members suspended in Django since the last sync.
        suspended = [kt(m) for m in valid_members(django_sim) if m["status"] == "active"][:3]
        django_sim.set_members(
            [m | {"status": "suspended"} if kt(m) in suspended else m for m in history["everyone"]],
        )
        page.click("nav >> text=Preview & sync")
        assert page.locator("#sync-now").count() == 0  # no sync without a preview
        page.click("#preview-button")
        page.wait_for_selector("#guards", timeout=60_000)
        assert "The guards accept this sync" in page.inner_text("#guards")
        assert page.inner_text("#would-add") == "0" and page.inner_text("#would-remove") == "0"
        assert "3 of" in page.inner_text("#preview")  # would lose eligibility
        screenshot(page, "admin-preview")
        page.click("#sync-now")
        assert "Sync requested" in page.inner_text(".notice")
        assert "waiting for Dagster" in page.inner_text("#last-request")
        assert page.locator("#sync-now").count() == 0 and page.locator("#requested-from-preview").count() == 1
        screenshot(page, "admin-sync-requested")

        # Dagster's sensor picks the request up and the run applies it, in the admin's name.
        monkeypatch.setenv("REGISTRY_EVENTS_QUIET_SECONDS", "0")
        [request] = tick(instance, members_db_url)
        assert request.tags["membership/source"] == f"admin:{ADMIN}"
        assert run_sync(registry_defs, instance, tags=request.tags).success
        page.click("nav >> text=History")
        newest = page.locator("#history tbody tr").nth(0).inner_text()
        assert f"admin {ADMIN}" in newest and "\t3\t" in newest  # 3 changed
        screenshot(page, "admin-history-after-sync")
    store.engine.dispose()


def test_the_guards_answer_stops_a_sync_before_it_is_offered(
    page, django_sim, members_db_url, registry_defs, instance
):
    assert run_sync(registry_defs, instance).success
    keep = django_sim.data.members[: len(django_sim.data.members) // 2]
    django_sim.set_members(keep)  # half the registry gone: an outage, not a purge
    with serve(members_db_url, admin_settings(planner_for(django_sim))) as base:
        sign_in(page, base)
        page.click("nav >> text=Preview & sync")
        page.click("#preview-button")
        page.wait_for_selector("#guards", timeout=60_000)
        guards = page.inner_text("#guards")
        assert "The guards would stop this sync" in guards and "removal_fraction" in guards
        assert page.locator("#sync-now").count() == 0
        screenshot(page, "admin-preview-blocked")
    with dg.DagsterInstance.ephemeral():
        assert ChangeEventStore.from_url(members_db_url).pending() is None  # nothing was requested
