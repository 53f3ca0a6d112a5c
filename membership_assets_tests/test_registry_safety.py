"""Nobody loses eligibility by accident (issue 9): page shifts, status flips, numeric and hostile
rows, blank statuses, empty registries, dry runs, rollback previews and re-executions.

Writes between page reads are made by a client-side hook (``PageReads``) in front of every
listing request, so the tests need nothing from the registry stand-in but its normal interface.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import dagster as dg
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membership_assets.connectors.errors import BadResponseError, IncompleteListingError
from membership_assets.connectors.http import JsonApiClient
from membership_assets.definitions import build_definitions
from membership_assets.registry.client import DjangoRegistryClient
from membership_assets.registry.delta import compute_delta
from membership_assets.registry.planning import protected_by_rejects, read_registry
from membership_assets.registry.resources import DjangoRegistryResource, RegistrySyncPolicy
from membership_assets.registry.store import (
    FIELD_LIMITS,
    MembersStore,
    SyncLogEntry,
    changes,
    rejects,
    sync_log,
)
from membership_assets.registry.store import members as members_table
from membership_assets.registry.validation import validate_members
from membership_assets.simulators.django_registry import DjangoRegistrySimulator, generate_registry

from .test_registry_job import dry_run_report, failure_message, run_sync, store_for


def kt_of(row: dict) -> str:
    return str(row["kennitala"]).replace("-", "")


class PageReads:
    """Runs chosen writes just before chosen listing requests (1-based, counted over the sync)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.requests = 0
        self.before: dict[int, list[Callable[[], None]]] = {}
        original = JsonApiClient.request_json
        reads = self

        def request_json(api, method, path, **kw):
            if kw.get("kind") == "members_page":
                reads.requests += 1
                for action in reads.before.pop(reads.requests, []):
                    action()
            return original(api, method, path, **kw)

        monkeypatch.setattr(JsonApiClient, "request_json", request_json)

    def at(self, request: int, action: Callable[[], None]) -> None:
        self.before.setdefault(request, []).append(action)


@pytest.fixture
def page_reads(monkeypatch) -> PageReads:
    return PageReads(monkeypatch)


def state(url: str) -> dict[str, str]:
    s = MembersStore.from_url(url)
    try:
        table = s.current_members()
    finally:
        s.engine.dispose()
    return dict(zip(table["kennitala"], table["status"], strict=True))


def listings_read(result) -> int:
    [mat] = result.asset_materializations_for_node("django_members")
    return mat.metadata["listings"].value


# -- 1. page shifts ----------------------------------------------------------------------------


def first_of_a_page(sim, valid: set[str], page_size: int = 50) -> int:
    """Index of a valid member who opens a page after the first (the one a shift would hide)."""
    for index in range(page_size, len(sim.data.members), page_size):
        if kt_of(sim.data.members[index]) in valid:
            return index
    raise AssertionError("no valid member opens a page")


def test_a_page_shift_never_removes_a_current_member(
    registry_defs, instance, django_sim, members_db_url, page_reads
):
    assert run_sync(registry_defs, instance).success
    valid = set(django_sim.data.truth.valid_kennitalas)
    index = first_of_a_page(django_sim, valid)
    hidden = kt_of(django_sim.data.members[index])
    before = state(members_db_url)
    leaver = next(kt_of(m) for m in django_sim.data.members[:index] if kt_of(m) in valid)
    page = index // 50 + 1
    reads_before = page_reads.requests

    def leave_and_join() -> None:  # count unchanged: one leaves before, one joins after
        django_sim.remove(leaver)
        django_sim.add(
            {"kennitala": "120174-3399", "name": "Ný Manneskja", "email": None, "status": "active"}
        )

    page_reads.at(reads_before + page, leave_and_join)
    result = run_sync(registry_defs, instance)
    assert result.success
    after = state(members_db_url)
    assert after[hidden] == before[hidden] != "removed"  # in the registry throughout: never removed
    assert after[leaver] == "removed" and after["1201743399"] == "active"
    assert listings_read(result) == 3  # the shifted one, then two that agree


def test_a_quiet_registry_costs_one_listing_and_a_removal_two(
    registry_defs, instance, django_sim, page_reads
):
    assert run_sync(registry_defs, instance).success
    quiet = run_sync(registry_defs, instance)
    assert quiet.success and listings_read(quiet) == 1
    django_sim.remove(django_sim.data.truth.valid_kennitalas[3])
    pages = len(django_sim.data.members) // 50 + 1
    joiner = {"kennitala": "120174-3399", "name": "Ný Manneskja", "email": None, "status": "active"}
    # Someone joining between the two listings comes last and hides nobody: no third listing.
    page_reads.at(page_reads.requests + pages + 1, lambda: django_sim.add(joiner))
    one_gone = run_sync(registry_defs, instance)
    assert one_gone.success and listings_read(one_gone) == 2
    log = one_gone.output_for_node("membership_sync").log
    assert (log.members_removed, log.members_added) == (1, 1)


def test_a_registry_that_never_holds_still_fails_clearly(
    registry_defs, instance, django_sim, members_db_url, page_reads
):
    assert run_sync(registry_defs, instance).success
    before = state(members_db_url)
    valid = set(django_sim.data.truth.valid_kennitalas)
    index = first_of_a_page(django_sim, valid)
    start = page_reads.requests
    pages = len(django_sim.data.members) // 50 + 1
    counter = iter(range(10_000))

    def shift() -> None:  # someone before the page leaves, someone new joins: every listing
        victim = next(kt_of(m) for m in django_sim.data.members[:index] if kt_of(m) in valid)
        django_sim.remove(victim)
        valid.discard(victim)
        django_sim.add({"kennitala": f"x{next(counter)}", "name": "N", "email": None, "status": "active"})

    for listing in range(6):
        page_reads.at(start + listing * pages + index // 50 + 1, shift)
    result = run_sync(registry_defs, instance)
    assert not result.success and "changed between each of" in failure_message(result)
    assert state(members_db_url) == before


# Hypothesis: arbitrary writes (leave, join, rejoin, edit) between any page reads. Members marked
# stable are in the registry throughout and must never be removed; the sync may fail instead.
STABLE_EVERY = 3  # every third member may churn; the others stay throughout
ACTION = st.one_of(
    st.tuples(st.just("shift"), st.integers(0, 7)),  # one leaves and one joins: count unchanged
    st.tuples(st.just("leave"), st.integers(0, 7)),
    st.tuples(st.just("rejoin"), st.integers(0, 7)),
    st.tuples(st.just("join"), st.integers(0, 999)),
    st.tuples(st.just("edit"), st.integers(0, 23)),
)


def reset(store: MembersStore) -> None:
    with store.write() as conn:
        for table in (changes, rejects, sync_log, members_table):
            conn.execute(table.delete())


def sync_once(store: MembersStore, client: DjangoRegistryClient) -> None:
    """The registry sync's steps, as the assets chain them (read, validate, protect, delta, apply)."""
    current = store.current_members()
    listing = read_registry(client, current)
    result = validate_members(listing.rows)
    valid = pd.DataFrame([vars(m) for m in result.members], columns=["kennitala", "name", "email", "status"])
    rejected = pd.DataFrame([vars(r) for r in result.rejects], columns=["kennitala", "email"])
    delta = compute_delta(valid, current, protected_by_rejects(rejected, current))
    base = store.last_applied_sync()
    entry = SyncLogEntry(id=str(uuid.uuid4()), source="test", status="success")
    store.apply(delta, entry, base_sync_id=base["id"] if base else None)


@pytest.fixture(scope="module")
def small_registry():
    data = generate_registry(24, seed=44, invalid=False)
    with DjangoRegistrySimulator(data, default_page_size=4) as sim:
        yield sim, [dict(m) for m in data.members]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.tuples(st.integers(1, 24), ACTION), max_size=12))
def test_generated_interleavings_never_remove_a_member_present_throughout(
    writes, store, small_registry, page_reads
):
    sim, initial = small_registry
    page_reads.before.clear()  # writes a previous example left unplayed
    reset(store)
    sim.set_members(initial)
    client = DjangoRegistryClient.connect(
        base_url=sim.base_url, api_key=sim.token, page_size=4, rate_limit=10_000, max_attempts=1
    )
    sync_once(store, client)
    stable = {kt_of(m) for i, m in enumerate(initial) if i % STABLE_EVERY}
    churners = [m for i, m in enumerate(initial) if not i % STABLE_EVERY]
    joiners = generate_registry(30, seed=45, invalid=False).members

    def do(action: tuple[str, int]) -> Callable[[], None]:
        kind, n = action
        if kind == "shift":
            return lambda: (sim.remove(kt_of(churners[n])), sim.add(joiners[n]))
        if kind == "leave":
            return lambda: sim.remove(kt_of(churners[n]))
        if kind == "rejoin":
            return lambda: (
                None
                if any(kt_of(m) == kt_of(churners[n]) for m in sim.data.members)
                else sim.add(churners[n])
            )
        if kind == "join":
            return lambda: sim.add(joiners[n % len(joiners)])
        return lambda: sim.update(sorted(stable)[n % len(stable)], email=f"edit{n}@example.is")

    start = page_reads.requests
    for request, action in writes:
        page_reads.at(start + request, do(action))
    try:
        sync_once(store, client)
    except IncompleteListingError:
        pass  # failing clearly is allowed; removing a present member is not
    finally:
        client.api.close()
    table = store.current_members()
    after = dict(zip(table["kennitala"], table["status"], strict=True))
    assert not [k for k in stable if after[k] == "removed"]
    assert {k for k, s in after.items() if s == "removed"} <= {kt_of(m) for m in churners}


# -- 2. status flips ---------------------------------------------------------------------------


def test_every_member_flipped_to_unpaid_is_blocked_and_the_dry_run_says_so(
    registry_defs, instance, django_sim, members_db_url
):
    assert run_sync(registry_defs, instance).success
    before = state(members_db_url)
    eligible = store_for(members_db_url).eligibility_counts()[1]
    assert eligible > 300
    rows = django_sim.data.members  # a copy of what the registry lists now
    for m in rows:
        if m.get("status") == "active":
            m["status"] = "unpaid"
    django_sim.set_members(rows)
    dry = run_sync(registry_defs, instance, dry_run=True)
    assert dry.success
    assert "eligibility_loss_fraction" in dry_run_report(dry)["would_block"]
    real = run_sync(registry_defs, instance)
    assert not real.success and "would lose eligibility" in failure_message(real)
    assert state(members_db_url) == before
    assert store_for(members_db_url).eligibility_counts()[1] == eligible


# -- 3. kennitala as a JSON number --------------------------------------------------------------


def test_a_kennitala_sent_as_a_number_keeps_the_member(registry_defs, instance, django_sim, members_db_url):
    assert run_sync(registry_defs, instance).success
    valid = django_sim.data.truth.valid_kennitalas
    leading_zero = next(k for k in valid if k.startswith("0"))
    as_float = next(k for k in valid if not k.startswith("0"))
    garbled = next(k for k in valid if k not in (leading_zero, as_float))
    before = state(members_db_url)
    rows = django_sim.data.members
    for m in rows:
        if kt_of(m) == leading_zero:
            m["kennitala"] = int(leading_zero)  # DRF IntegerField: 0403855259 -> 403855259
        elif kt_of(m) == as_float:
            m["kennitala"] = float(as_float)
        elif kt_of(m) == garbled:
            m["kennitala"] = float(garbled) + 0.5  # beyond repair: tied to the member by email
    django_sim.set_members(rows)
    result = run_sync(registry_defs, instance)
    assert result.success
    after = state(members_db_url)
    assert after == before  # nobody removed, nobody changed
    rejected = store_for(members_db_url).rejects_of(result.run_id)
    assert leading_zero not in set(rejected["kennitala"].dropna())
    assert any(r.startswith("kennitala_invalid_format") for r in rejected["reasons"])


# -- 4. hostile rows ---------------------------------------------------------------------------

HOSTILE = {
    "long_name": ({"name": "Á" * 350}, "name_too_long"),
    "huge_name": ({"name": "x" * 10_000_000}, "name_too_long"),
    "nul_name": ({"name": "Anna\x00Jónsdóttir"}, "name_control_characters"),
    "ansi_name": ({"name": "\x1b[31mAnna\x1b[0m"}, "name_control_characters"),
    "bidi_name": ({"name": "Anna \u202eríttódsnóJ"}, "name_control_characters"),
    "long_status": ({"status": "active" + "!" * 60}, "status_too_long"),
    "long_kennitala": ({"kennitala": "1" * 80}, "kennitala_invalid_format"),
}


def test_hostile_rows_are_quarantined_and_the_rest_of_the_sync_applies(
    registry_defs, instance, django_sim, members_db_url
):
    assert run_sync(registry_defs, instance).success
    valid = django_sim.data.truth.valid_kennitalas
    before = state(members_db_url)
    targets = dict(zip(HOSTILE, valid[10:], strict=False))
    rows = django_sim.data.members
    for m in rows:
        for case, kt in targets.items():
            if kt_of(m) == kt:
                m.update(HOSTILE[case][0])
    django_sim.set_members(rows)
    mover, leaver = valid[30], valid[31]
    django_sim.update(mover, email="moved@example.is")
    django_sim.remove(leaver)
    result = run_sync(registry_defs, instance)
    assert result.success, failure_message(result)
    after = state(members_db_url)
    assert after[leaver] == "removed"
    assert all(after[kt] == before[kt] for kt in targets.values())  # protected, unchanged
    store = store_for(members_db_url)
    names = store.current_members().set_index("kennitala")
    assert names["email"][mover] == "moved@example.is"
    assert names["name"].str.len().max() <= FIELD_LIMITS["name"]
    rejected = store.rejects_of(result.run_id)
    for case, (_, reason) in HOSTILE.items():
        assert rejected["reasons"].str.contains(reason).any(), case
    for column in ("kennitala_raw", "name", "status"):
        stored = rejected[column].dropna()
        assert (stored.str.len() <= FIELD_LIMITS[column]).all() and not stored.str.contains("\x00").any()


# -- 5. blank or absent status -----------------------------------------------------------------


def test_a_blank_or_null_status_is_rejected_and_the_member_keeps_their_standing(
    registry_defs, instance, django_sim, members_db_url
):
    assert run_sync(registry_defs, instance).success
    suspended = [m for m in django_sim.data.members if m.get("status") in ("unpaid", "suspended")]
    blank, null = kt_of(suspended[0]), kt_of(suspended[1])
    django_sim.update(blank, status="  ")
    django_sim.update(null, status=None)
    result = run_sync(registry_defs, instance)
    assert result.success
    store = store_for(members_db_url)
    assert not store.is_eligible(blank) and not store.is_eligible(null)
    assert state(members_db_url)[blank] == "suspended" == state(members_db_url)[null]
    reasons = store.rejects_of(result.run_id).set_index("kennitala")["reasons"]
    assert reasons[blank] == reasons[null] == "status_missing"


def without_status(sim) -> None:
    sim.set_members([{k: v for k, v in m.items() if k != "status"} for m in sim.data.members])


def test_a_listing_without_status_fails_clearly_unless_the_rule_says_active(
    registry_resources, ab_resource, instance, django_sim, members_db_url
):
    defs = build_definitions({**registry_resources, "action_builder": ab_resource})
    assert run_sync(defs, instance).success
    before = state(members_db_url)
    without_status(django_sim)
    result = run_sync(defs, instance)
    assert not result.success and "REGISTRY_MISSING_STATUS=active" in failure_message(result)
    assert state(members_db_url) == before
    lenient = build_definitions(
        {
            **registry_resources,
            "action_builder": ab_resource,
            "registry_policy": RegistrySyncPolicy(missing_status="active"),
        }
    )
    result = run_sync(lenient, instance)
    assert result.success, failure_message(result)
    valid = set(django_sim.data.truth.valid_kennitalas)
    assert valid <= {k for k, s in state(members_db_url).items() if s == "active"}


def test_the_missing_status_rule_is_read_from_the_environment(monkeypatch):
    from membership_assets.registry.settings import RegistrySettings

    assert RegistrySettings.load().registry_policy().missing_status == "reject"
    monkeypatch.setenv("REGISTRY_MISSING_STATUS", "Active")
    assert RegistrySettings.load().registry_policy().missing_status == "active"


# -- 6. an empty registry, confirmed -----------------------------------------------------------


def test_allow_empty_upstream_alone_lets_an_empty_registry_through(
    registry_resources, ab_resource, instance, members_db_url
):
    with DjangoRegistrySimulator(generate_registry(60, seed=3, invalid=False), default_page_size=50) as sim:
        resources = {
            **registry_resources,
            "django": DjangoRegistryResource(
                base_url=sim.base_url, api_key=sim.token, rate_limit=1000, max_attempts=2
            ),
            "action_builder": ab_resource,
        }
        defs = build_definitions(resources)
        assert run_sync(defs, instance).success
        sim.set_members([])
        refused = run_sync(defs, instance)
        assert not refused.success
        result = run_sync(defs, instance, allow_empty_upstream=True)
        assert result.success, failure_message(result)
    assert set(state(members_db_url).values()) == {"removed"}


# -- 7. dry runs -------------------------------------------------------------------------------


def test_a_dry_run_materializes_nothing_and_is_tagged(
    registry_defs, instance, django_sim, members_db_url, warehouse
):
    assert run_sync(registry_defs, instance).success
    graph_before = {
        k: instance.get_latest_materialization_event(k) for k in registry_defs.resolve_all_asset_keys()
    }
    django_sim.remove(django_sim.data.truth.valid_kennitalas[0])
    dry = run_sync(registry_defs, instance, dry_run=True)
    assert dry.success
    assert dry.get_asset_materialization_events() == []
    assert planned_assets(instance, dry.run_id) == set()
    assert dry_run_report(dry)["removed"] == 1
    assert store_for(members_db_url).log_entry(dry.run_id) is None
    for table in ("registry_members_raw", "registry_rejects", "membership_deltas", "membership_sync_log"):
        ids = warehouse.query(f"SELECT DISTINCT sync_id FROM {{dataset}}.{table}")["sync_id"]
        assert dry.run_id not in set(ids), table  # no audit history from a dry run
    assert instance.get_run_by_id(dry.run_id).tags["membership/dry_run"] == "true"
    # The asset graph is as it was: same latest materialization of every asset.
    graph_after = {
        k: instance.get_latest_materialization_event(k) for k in registry_defs.resolve_all_asset_keys()
    }
    assert graph_after == graph_before


def test_the_real_sync_has_no_dry_run_switch(registry_defs, instance, members_db_url):
    """A launchpad that kept a dry-run config cannot make the next real sync a preview."""
    with pytest.raises(dg.DagsterInvalidConfigError):
        registry_defs.resolve_job_def("registry_sync").execute_in_process(
            run_config={"ops": {"membership_sync": {"config": {"dry_run": True}}}}, instance=instance
        )


def test_a_failing_dry_run_writes_nothing_and_alerts_nobody(
    registry_defs, instance, members_db_url, monkeypatch, outbox
):
    from .conftest import alert_admins_of

    assert run_sync(registry_defs, instance).success
    applied = store_for(members_db_url).last_applied_sync()["id"]

    def down(*args, **kwargs):
        raise BadResponseError("registry answered with an HTML error page")

    monkeypatch.setattr(JsonApiClient, "request_json", down)
    dry = run_sync(registry_defs, instance, dry_run=True)
    assert not dry.success
    store = store_for(members_db_url)
    assert store.log_entry(dry.run_id) is None  # a preview writes no sync log, failed or not
    assert store.last_applied_sync()["id"] == applied
    assert planned_assets(instance, dry.run_id) == set()
    alert_admins_of(instance, dry, registry_defs)
    assert not list(outbox.glob("*.eml")), "a dry run's failure emailed the admins"
    asked = registry_defs.resolve_job_def("registry_preview").execute_in_process(
        instance=instance, raise_on_error=False, tags={"membership/alert_admins": "true"}
    )
    alert_admins_of(instance, asked, registry_defs)
    assert len(list(outbox.glob("*.eml"))) == 1


def planned_assets(instance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    return {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in records}


# -- 8. rollback preview and record ------------------------------------------------------------


def rollback(defs, instance, sync_id: str, dry_run: bool = False, **overrides):
    """registry_rollback as launched from the UI: confirmed (sync_id repeated) unless a dry run."""
    config = {"sync_id": sync_id, **({} if dry_run else {"confirm_sync_id": sync_id}), **overrides}
    return defs.resolve_job_def("registry_rollback").execute_in_process(
        run_config={"ops": {"rollback_membership_sync": {"config": config}}},
        instance=instance,
        raise_on_error=False,
    )


def test_a_rollback_preview_makes_the_real_checks_and_shows_the_changes(
    registry_defs, instance, django_sim, members_db_url, outbox
):
    from .conftest import alert_admins_of

    first = run_sync(registry_defs, instance)
    django_sim.remove(django_sim.data.truth.valid_kennitalas[0])
    django_sim.update(django_sim.data.truth.valid_kennitalas[1], email="x@example.is")
    second = run_sync(registry_defs, instance)
    assert first.success and second.success
    missing = rollback(registry_defs, instance, "00000000-0000-0000-0000-000000000000", dry_run=True)
    assert not missing.success and "never applied" in failure_message(missing)
    older = rollback(registry_defs, instance, first.run_id, dry_run=True)
    assert not older.success and "not the latest" in failure_message(older)
    alert_admins_of(instance, older, registry_defs)  # a dry run's refusal alerts nobody
    assert not list(outbox.glob("*.eml"))
    preview = rollback(registry_defs, instance, second.run_id, dry_run=True)
    shown = preview.output_for_node("rollback_membership_sync")
    assert shown["counts"] == {"added": 0, "reinstated": 1, "changed": 1, "removed": 0}
    assert set(shown["delta"]["kennitala"]) == set(django_sim.data.truth.valid_kennitalas[:2])


def test_after_a_rollback_the_view_and_the_audit_history_reflect_it(
    registry_defs, instance, django_sim, members_db_url, warehouse
):
    assert run_sync(registry_defs, instance).success
    gone = django_sim.data.truth.valid_kennitalas[0]
    django_sim.remove(gone)
    bad = run_sync(registry_defs, instance)
    undo = rollback(registry_defs, instance, bad.run_id)
    assert undo.success
    keys = {m.asset_key for m in undo.asset_materializations_for_node("rollback_membership_sync")}
    assert dg.AssetKey("member_eligibility") in keys
    deltas = warehouse.query("SELECT sync_id, kennitala, change_kind FROM {dataset}.membership_deltas")
    mine = deltas[deltas["sync_id"] == undo.run_id]
    assert mine[["kennitala", "change_kind"]].values.tolist() == [[gone, "reinstated"]]
    log = warehouse.query("SELECT sync_id, source FROM {dataset}.membership_sync_log")
    assert log.set_index("sync_id")["source"][undo.run_id] == "rollback"


# -- 9. re-executions --------------------------------------------------------------------------


def test_reexecuted_syncs_keep_the_logical_run_id_in_raw_history(tmp_path, monkeypatch):
    from . import flows
    from .test_warehouse import _warehouse, running_world

    with running_world(tmp_path, _warehouse("duckdb", tmp_path), monkeypatch) as world:
        with dg.instance_for_test() as instance:
            with dg.execute_job(dg.reconstructable(flows.registry_sync_duckdb), instance=instance) as sync:
                assert sync.success
            run_id, root = flows.reexecute(flows.registry_sync_duckdb, instance, sync.run_id)
            assert run_id != root == sync.run_id
        for table in ("registry_members_raw", "registry_rejects", "membership_deltas", "membership_sync_log"):
            ids = world.warehouse.query(f"SELECT DISTINCT sync_id FROM {{dataset}}.{table}")["sync_id"]
            assert ids.tolist() == [root], table
