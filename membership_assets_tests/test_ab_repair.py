"""Tag repair against the Action Builder simulator over HTTP: the Person Signup Helper as
documented, repairs compared with the campaign's ground truth, and the guards around them."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import requests

from membership_assets.action_builder.client import ActionBuilderClient
from membership_assets.action_builder.repair import execute_repairs, plan_repairs
from membership_assets.action_builder.rules import FieldNames, evaluate
from membership_assets.action_builder.scan import CampaignScanner
from membership_assets.connectors.errors import NotFoundError
from membership_assets.simulators.action_builder_seed import MEMBERSHIP_SECTION, TYPE_FIELD, UNIT_FIELD
from membership_assets.warehouse.queries import run_analyst_query

JOB = "action_builder_tag_sync"
NAMES = FieldNames()
# Every route the repair job may use: documented reads, the signup helper, the documented DELETE.
DOCUMENTED_ROUTES = {
    "campaigns",
    "tags_page",
    "connection_types",
    "entity_types",
    "people_page",
    "connections",
    "person_taggings",
    "connection_taggings",
    "tag_taggings_page",
    "entity",
    "person_signup",
    "delete_tagging",
}


def client_for(sim) -> ActionBuilderClient:
    return ActionBuilderClient.connect(
        api_token=sim.token, base_url=sim.base_url, campaign_id=sim.data.campaign_id, rate_limit=2000
    )


def tag_id(sim, field_name: str, value: str) -> str:
    return next(t for t, tag in sim.data.tags.items() if (tag["field"], tag["name"]) == (field_name, value))


def values(sim, pid: str) -> dict[str, set[str]]:
    """A person's own membership values, as the simulator holds them."""
    out: dict[str, set[str]] = {f: set() for f in NAMES.tag_fields}
    for t in sim.taggings_of("person", pid):
        tag = sim.data.tags[t["tag_id"]]
        if tag["field"] in out:
            out[tag["field"]].add(tag["name"])
    return out


def post(sim, body) -> requests.Response:
    return requests.post(
        f"{sim.base_url}/campaigns/{sim.data.campaign_id}/people",
        data=json.dumps(body),
        headers={"OSDI-API-Token": sim.token, "Content-Type": "application/json"},
        timeout=10,
    )


# -- the Person Signup Helper in the simulator ---------------------------------------------------------


def test_signup_helper_adds_existing_responses_and_ignores_unknown_fields_and_values(ab_sim):
    client = client_for(ab_sim)
    pid = ab_sim.data.person_ids()[0]
    local = next(t["name"] for t in ab_sim.data.tags.values() if t["field"] == UNIT_FIELD)
    tags_before, people_before = dict(ab_sim.data.tags), len(ab_sim.data.entities)
    add = {"action_builder:section": MEMBERSHIP_SECTION, "action_builder:field": UNIT_FIELD, "name": local}

    person = client.add_person_tags(pid, [add])
    assert f"action_builder:{pid}" in person["identifiers"]
    assert local in values(ab_sim, pid)[UNIT_FIELD]
    held = len(ab_sim.taggings_of("person", pid))
    client.add_person_tags(pid, [add])  # a response the person carries: no second tagging
    assert len(ab_sim.taggings_of("person", pid)) == held

    unknown = [
        {**add, "name": "Local 999 Nowhere"},  # unknown value
        {**add, "action_builder:field": "Shoe Size"},  # unknown field
        {**add, "action_builder:section": "Personal Info"},  # field in another section
    ]
    client.add_person_tags(pid, unknown)  # documented: ignored, no error
    assert len(ab_sim.taggings_of("person", pid)) == held
    assert ab_sim.data.tags == tags_before and len(ab_sim.data.entities) == people_before

    # Documented: action_builder:create_tag makes the response first.
    created = post(
        ab_sim,
        {
            "person": {"identifiers": [f"action_builder:{pid}"]},
            "add_tags": [{**unknown[0], "action_builder:create_tag": True}],
        },
    )
    assert created.status_code == 200
    assert "Local 999 Nowhere" in values(ab_sim, pid)[UNIT_FIELD]


def test_signup_helper_is_strict_about_unknown_people_remove_tags_and_malformed_bodies(ab_sim):
    client = client_for(ab_sim)
    pid = ab_sim.data.person_ids()[1]
    add = {"action_builder:section": MEMBERSHIP_SECTION, "action_builder:field": TYPE_FIELD, "name": "Full"}
    before = json.dumps(ab_sim.data.taggings, sort_keys=True)
    people = len(ab_sim.data.entities)

    with pytest.raises(NotFoundError):  # an identifier naming nobody: 404, nobody created
        client.add_person_tags("00000000-0000-4000-8000-000000000000", [add])
    ab_sim.remove_person(pid)
    with pytest.raises(NotFoundError):  # removed from the campaign: 404 as well
        client.add_person_tags(pid, [add])
    assert len(ab_sim.data.entities) == people - 1
    other = ab_sim.data.person_ids()[2]
    answer = post(ab_sim, {"person": {"identifiers": [f"action_builder:{other}"]}, "remove_tags": [add]})
    assert answer.status_code == 500  # UNCERTAIN upstream (ccef saw 500): never relied upon
    for bad in (
        {"add_tags": [add]},
        {"person": {"identifiers": [f"action_builder:{other}"]}, "add_tags": [{"name": "x"}]},
    ):
        assert post(ab_sim, bad).status_code == 400
    after = {k: v for k, v in ab_sim.data.taggings.items() if v["item_id"] != pid}
    assert after == {k: v for k, v in json.loads(before).items() if v["item_id"] != pid}

    # Documented: a new entity needs a name and an entity type.
    assert post(ab_sim, {"person": {"given_name": "New"}}).status_code == 400
    made = post(ab_sim, {"person": {"given_name": "New", "action_builder:entity_type": "Person"}})
    assert made.status_code == 201 and len(ab_sim.data.entities) == people


# -- repairs against the ground truth ------------------------------------------------------------------


def run_job(defs, instance, *, repairs_dry_run=False, deletions_dry_run=False, max_repairs=10_000):
    ops = {
        "action_builder_campaign": {"config": {"mode": "full"}},
        "outdated_tagging_deletions": {"config": {"dry_run": deletions_dry_run}},
        "planned_tag_repairs": {"config": {"dry_run": repairs_dry_run, "max_repairs": max_repairs}},
    }
    return defs.resolve_job_def(JOB).execute_in_process(
        run_config={"ops": ops}, instance=instance, raise_on_error=False
    )


def check_result(result, name):
    return next(
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.asset_check_evaluation_data.check_name == name
    )


def assert_campaign_matches_ground_truth(sim, truth, before) -> None:
    """Active mismatched people carry exactly the truth; former members lost only stale tags;
    nobody else's membership tags changed."""
    for pid, t in truth.items():
        now = values(sim, pid)
        assert not set(t.outdated_tagging_ids) & set(sim.data.taggings), pid
        if t.inactive:
            continue
        assert now[NAMES.unit] == {t.unit_name}, (pid, t.scenario)
        if t.membership_type:
            assert now[NAMES.membership_type] == {t.membership_type}, (pid, t.scenario)
        if t.membership_status:
            assert now[NAMES.membership_status] == {t.membership_status}, (pid, t.scenario)
    for pid in set(sim.data.person_ids()) - set(truth):
        assert values(sim, pid) == before[pid], pid


def test_a_live_repair_run_leaves_the_campaign_as_its_ground_truth_says(defs, instance, ab_sim, warehouse):
    truth = ab_sim.data.expected_mismatches()
    before = {pid: values(ab_sim, pid) for pid in ab_sim.data.person_ids()}
    ab_sim.requests.reset()
    result = run_job(defs, instance)
    assert result.success
    assert set(ab_sim.requests.by_route) <= DOCUMENTED_ROUTES, ab_sim.requests.by_route
    assert_campaign_matches_ground_truth(ab_sim, truth, before)

    repairs = result.output_for_node("tag_repairs")
    active = {pid for pid, t in truth.items() if not t.inactive}
    verified = set(repairs.loc[repairs["action"] == "verified", "person_id"])
    assert verified == active  # every active mismatch is repairable in this campaign
    assert check_result(result, "repairs_verified").passed
    # Add first, then remove: in each person's audit, every add precedes every removal.
    for _, rows in repairs[repairs["step"].isin(["add", "remove"])].groupby("person_id"):
        steps = rows.sort_values("seq")["step"].tolist()
        assert steps == sorted(steps)  # "add" < "remove"
    # The cleanup deleted only the rest (former members' stale tags), never a repaired one.
    deletions = result.output_for_node("outdated_tagging_deletions")
    assert set(deletions["person_id"]) == set(truth) - active
    assert not set(deletions["tagging_id"]) & set(repairs["tagging_id"].dropna())
    audit = warehouse.query("select person_id, step, action from {dataset}.ab_tag_repairs")
    assert len(audit) == len(repairs) and set(audit.loc[audit["step"] == "verify", "action"]) == {"verified"}
    answer = run_analyst_query(warehouse, "tag_repairs").set_index("outcome")
    assert int(answer.loc["repaired, verified", "people"]) == len(active)
    assert int(answer.loc["left to cleanup", "people"]) == len(truth) - len(active)
    report = result.output_for_node("tag_repair_report")
    assert report["rows"] == repairs["person_id"].nunique() and "repaired and verified" in report["section"]

    # A second run finds nothing left to repair among active members.
    again = run_job(defs, instance)
    assert again.success
    assert set(again.output_for_node("tag_repairs")["step"]) <= {"hold"}


def test_dry_run_by_default_changes_nothing_and_leaves_the_cleanup_as_it_was(defs, instance, ab_sim):
    truth = ab_sim.data.expected_mismatches()
    ab_sim.requests.reset()
    result = defs.resolve_job_def(JOB).execute_in_process(
        run_config={"ops": {"action_builder_campaign": {"config": {"mode": "full"}}}}, instance=instance
    )
    assert result.success
    assert (
        "person_signup" not in ab_sim.requests.by_route and "delete_tagging" not in ab_sim.requests.by_route
    )
    repairs = result.output_for_node("tag_repairs")
    assert set(repairs["action"]) <= {"dry_run", "needs_human", "cleanup_only"}
    deletions = result.output_for_node("outdated_tagging_deletions")
    assert len(deletions) == sum(len(t.outdated_tagging_ids) for t in truth.values())


def test_over_the_cap_nobody_is_repaired_nor_cleaned_and_the_run_fails(defs, instance, ab_sim, warehouse):
    truth = ab_sim.data.expected_mismatches()
    active = {pid for pid, t in truth.items() if not t.inactive}
    before = {pid: values(ab_sim, pid) for pid in active}
    result = run_job(defs, instance, max_repairs=3)
    assert not result.success
    assert {pid: values(ab_sim, pid) for pid in active} == before
    audit = warehouse.query("select distinct action from {dataset}.ab_tag_repairs where step <> 'hold'")
    assert audit["action"].tolist() == ["blocked_cap"]


def scan_and_plan(sim, **kw):
    snap = CampaignScanner(client_for(sim)).scan()
    ev = evaluate(snap.people, snap.connections, snap.units, snap.taggings)
    return plan_repairs(ev, snap.taggings, snap.tags, live=True, max_repairs=10_000, **kw)


def test_a_person_gone_or_a_tag_that_vanished_is_recorded_and_not_retried(ab_sim):
    plan = scan_and_plan(ab_sim)
    adds = [s for s in plan if s.step == "add"]
    gone = adds[0].person_id
    vanished = next(s for s in adds if s.person_id != gone and s.field == TYPE_FIELD)
    hit = {s.person_id for s in adds if (s.field, s.value) == (vanished.field, vanished.value)}
    ab_sim.remove_person(gone)
    ab_sim.remove_tag(tag_id(ab_sim, vanished.field, vanished.value))
    ab_sim.requests.reset()
    outcomes = execute_repairs(client_for(ab_sim), plan, workers=4)
    by = {(o.person_id, o.seq): o.action for o in outcomes}
    assert {a for (p, _), a in by.items() if p == gone} == {"person_gone"}
    for pid in hit:
        steps = [s for s in plan if s.person_id == pid]
        assert (
            by[
                (
                    pid,
                    vanished.seq
                    if pid == vanished.person_id
                    else next(s.seq for s in steps if s.value == vanished.value),
                )
            ]
            == "tag_vanished"
        )
        for r in (s for s in steps if s.step == "remove"):  # the stale tag stays: never tagless
            assert by[(pid, r.seq)] == "kept" and r.tagging_id in ab_sim.data.taggings
        assert (pid, 1000) not in by  # not repaired, so not verified
    # One POST per person with adds, none repeated for the gone person or the vanished tag.
    assert ab_sim.requests.by_route["person_signup"] == len({s.person_id for s in adds})


def test_a_repair_that_did_not_hold_is_reported_by_verification(ab_sim):
    plan = scan_and_plan(ab_sim)
    liar = next(s for s in plan if s.step == "remove").person_id
    client = client_for(ab_sim)
    real_delete = client.delete_tagging

    def delete(tag: str, tagging: str) -> str:  # an API that says "deleted" but keeps the tagging
        if ab_sim.data.taggings.get(tagging, {}).get("item_id") == liar:
            return "deleted"
        return real_delete(tag, tagging)

    client.delete_tagging = delete  # type: ignore[method-assign]
    outcomes = execute_repairs(client, plan, workers=4)
    verify = {o.person_id: o for o in outcomes if o.step == "verify"}
    assert verify[liar].action == "still_mismatched"
    assert {o.action for p, o in verify.items() if p != liar} == {"verified"}


def test_the_schedules_repair_only_when_the_deployment_opts_in(defs, monkeypatch):
    from membership_assets.action_builder.schedules import action_builder_monthly_full

    ctx = dg.build_schedule_context()
    monkeypatch.delenv("ACTION_BUILDER_APPLY_REPAIRS", raising=False)
    assert (
        action_builder_monthly_full(ctx).run_config["ops"]["planned_tag_repairs"]["config"]["dry_run"] is True
    )
    monkeypatch.setenv("ACTION_BUILDER_APPLY_REPAIRS", "true")
    live = action_builder_monthly_full(ctx).run_config
    assert live["ops"]["planned_tag_repairs"]["config"]["dry_run"] is False
    assert dg.validate_run_config(defs.resolve_job_def(JOB), live)


def test_the_repair_benchmark_spends_exactly_the_designed_requests_per_person():
    from benchmarks import ab_repair
    from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign

    data = generate_campaign(SeedConfig(people=300, units=10, seed=5))
    m = ab_repair.measure(data, rate=2000, latency=0.0, workers=4)
    assert m.exact and m.repaired_people == m.planned_people > 20
    assert m.requests == m.minimum_requests and m.rate_limited_429 == 0
    assert set(m.by_kind) == {"person_signup", "person_taggings", "delete_tagging"}


def test_an_api_that_says_deleted_but_keeps_the_tag_fails_the_verification_check(defs, instance, ab_sim):
    # Every DELETE answered 200 without deleting: the re-read must catch it.
    ab_sim.faults.add(
        path_pattern="/taggings/", method="DELETE", status=200, body={"message": "ok"}, times=None
    )
    result = run_job(defs, instance, deletions_dry_run=True)
    assert result.success  # the step ran; the check says what is wrong
    check = check_result(result, "repairs_verified")
    assert not check.passed and check.metadata["still_mismatched"].value > 0
    repairs = result.output_for_node("tag_repairs")
    verify = repairs[repairs["step"] == "verify"].set_index("person_id")["action"]
    removed = set(repairs.loc[repairs["action"] == "removed", "person_id"])
    assert set(verify[list(removed)]) == {"still_mismatched"}


def test_credentials_rejected_mid_repair_stop_the_rest_and_fail_the_step(defs, instance, ab_sim, warehouse):
    for method in ("POST", "DELETE"):  # the token loses its write rights after the plan was read
        ab_sim.faults.add(path_pattern=".", method=method, status=401, times=None)
    before = dict(ab_sim.data.taggings)
    result = run_job(defs, instance)
    assert not result.success
    failure = next(
        e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == "tag_repairs"
    )
    assert "tag repair stopped" in str(failure.event_specific_data.error)
    audit = warehouse.query("select action, count(*) as n from {dataset}.ab_tag_repairs group by action")
    actions = dict(zip(audit["action"], audit["n"], strict=True))
    assert actions.get("not_attempted", 0) > 0 and not {"added", "removed"} & set(actions)
    repaired_people = set(result.output_for_node("planned_tag_repairs")["person_id"])
    # Nothing of the people planned for repair was touched (the cleanup left theirs alone too).
    assert {k for k, v in before.items() if v["item_id"] in repaired_people} <= set(ab_sim.data.taggings)


def test_an_implausible_mismatch_rate_blocks_repairs_too(defs, instance, ab_sim):
    ab_sim.requests.reset()
    ops = {
        "action_builder_campaign": {"config": {"mode": "full"}},
        "membership_mismatches": {"config": {"max_mismatch_fraction": 0.01}},
        "planned_tag_repairs": {"config": {"dry_run": False}},
    }
    result = defs.resolve_job_def(JOB).execute_in_process(
        run_config={"ops": ops}, instance=instance, raise_on_error=False
    )
    assert not result.success
    executed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert not executed & {"planned_tag_repairs", "tag_repairs"}
    assert "person_signup" not in ab_sim.requests.by_route
