"""The membership delta: property tests over random before/after memberships, plus guards."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from membership_assets.registry.delta import apply_in_memory, compute_delta, counts
from membership_assets.registry.guards import GuardPolicy, SyncFigures, blocking, evaluate_guards

KTS = [f"{i:010d}" for i in range(40)]  # delta logic is indifferent to checksums
COLS = ["kennitala", "name", "email", "status"]

member = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["Anna", "Jón", "Helga"]),
        "email": st.sampled_from([None, "a@x.is", "b@x.is"]),
        "status": st.sampled_from(["active", "suspended"]),
    }
)
membership = st.dictionaries(st.sampled_from(KTS), member, max_size=30)
stored = st.dictionaries(
    st.sampled_from(KTS),
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["Anna", "Jón", "Helga"]),
            "email": st.sampled_from([None, "a@x.is", "b@x.is"]),
            "status": st.sampled_from(["active", "suspended", "removed"]),
        }
    ),
    max_size=30,
)


def frame(d: dict) -> pd.DataFrame:
    return pd.DataFrame([{"kennitala": k, **v} for k, v in d.items()], columns=COLS)


def listed(table: pd.DataFrame) -> dict:
    live = table[table["status"] != "removed"]
    return {
        r.kennitala: {"name": r.name, "email": r.email, "status": r.status}
        for r in live.itertuples(index=False)
    }


@settings(max_examples=150, deadline=None)
@given(before=stored, upstream=membership)
def test_applying_the_delta_yields_exactly_the_upstream_membership(before, upstream):
    delta = compute_delta(frame(upstream), frame(before))
    assert listed(apply_in_memory(frame(before), delta)) == upstream


@settings(max_examples=150, deadline=None)
@given(before=stored, upstream=membership)
def test_removals_never_include_members_present_upstream(before, upstream):
    delta = compute_delta(frame(upstream), frame(before))
    removed = set(delta.loc[delta["change_kind"] == "removed", "kennitala"])
    assert not removed & set(upstream)
    # ... and only ever touch members who were live.
    assert all(before[k]["status"] != "removed" for k in removed)


@settings(max_examples=100, deadline=None)
@given(before=stored, upstream=membership, protected=st.sets(st.sampled_from(KTS)))
def test_protected_members_are_never_removed(before, upstream, protected):
    delta = compute_delta(frame(upstream), frame(before), protected)
    assert not set(delta.loc[delta["change_kind"] == "removed", "kennitala"]) & protected


@settings(max_examples=100, deadline=None)
@given(before=stored, upstream=membership)
def test_a_second_sync_of_the_same_list_changes_nothing(before, upstream):
    after = apply_in_memory(frame(before), compute_delta(frame(upstream), frame(before)))
    assert compute_delta(frame(upstream), after).empty


@settings(max_examples=100, deadline=None)
@given(before=stored, upstream=membership)
def test_changed_means_a_real_field_change(before, upstream):
    delta = compute_delta(frame(upstream), frame(before))
    for r in delta[delta["change_kind"] == "changed"].itertuples(index=False):
        assert (r.old_name, r.old_email, r.old_status) != (r.new_name, r.new_email, r.new_status)
    unchanged = [k for k, v in upstream.items() if before.get(k) == v]
    assert not set(delta["kennitala"]) & set(unchanged)


def test_kinds_on_a_worked_example():
    before = {
        "a": {"name": "A", "email": None, "status": "active"},
        "b": {"name": "B", "email": None, "status": "active"},
        "c": {"name": "C", "email": None, "status": "removed"},
        "d": {"name": "D", "email": None, "status": "active"},
    }
    upstream = {
        "a": {"name": "A", "email": None, "status": "active"},
        "b": {"name": "B", "email": "b@x.is", "status": "active"},
        "c": {"name": "C", "email": None, "status": "active"},
        "e": {"name": "E", "email": None, "status": "suspended"},
    }
    delta = compute_delta(frame(upstream), frame(before)).set_index("kennitala")
    assert delta["change_kind"].to_dict() == {"b": "changed", "c": "reinstated", "d": "removed", "e": "added"}
    assert delta.loc["d", "new_name"] == "D" and delta.loc["d", "new_status"] == "removed"
    assert counts(delta.reset_index()) == {"added": 1, "reinstated": 1, "changed": 1, "removed": 1}


def test_upstream_rows_marked_removed_soft_delete_live_members():
    before = {"a": {"name": "A", "email": None, "status": "active"}}
    upstream = {"a": {"name": "A", "email": None, "status": "removed"}}
    delta = compute_delta(frame(upstream), frame(before))
    assert delta["change_kind"].tolist() == ["removed"]


def figures(**kw) -> SyncFigures:
    base = dict(fetched=1000, valid=1000, rejected=0, active_before=1000, removals=0, last_fetched=1000)
    return SyncFigures(**{**base, **kw})


def test_guards_pass_a_normal_sync():
    assert evaluate_guards(figures(removals=15)) == []


def test_empty_upstream_trips_and_only_its_own_override_clears_it():
    v = evaluate_guards(figures(fetched=0, valid=0, removals=1000))
    assert {x.guard for x in v} >= {"empty_upstream", "removal_count", "removal_fraction", "upstream_shrank"}
    assert [x.guard for x in blocking(v, allow_mass_removal=True, allow_empty_upstream=False)] == [
        "empty_upstream"
    ]
    assert blocking(v, allow_mass_removal=True, allow_empty_upstream=True) == []


def test_removal_thresholds_follow_entra_and_okta_defaults():
    assert [v.guard for v in evaluate_guards(figures(removals=201))] == ["removal_fraction"]  # 20.1%
    assert evaluate_guards(figures(removals=200)) == []
    big = figures(active_before=10_000, fetched=10_000, last_fetched=10_000, removals=501)
    assert [v.guard for v in evaluate_guards(big)] == ["removal_count"]
    small = figures(active_before=50, fetched=40, last_fetched=50, removals=10)  # 20% of a small org
    assert evaluate_guards(small, GuardPolicy()) == []


def test_shrinking_list_and_reject_storm_trip():
    assert [v.guard for v in evaluate_guards(figures(fetched=790, valid=790))] == ["upstream_shrank"]
    assert [v.guard for v in evaluate_guards(figures(rejected=101))] == ["reject_rate"]
