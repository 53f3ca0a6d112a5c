"""A rollback is guarded like a sync (issue 16.1): the same guards on the inverse delta, the same
per-run override, and a dry run unless the sync it undoes is confirmed. SQLite and Postgres."""

from __future__ import annotations

import pandas as pd
import pytest

from membership_assets.run_tags import ALERT_TAG, DRY_RUN_TAG
from membership_assets.simulators.django_registry import generate_registry

from .test_registry_job import failure_message, members_table, run_sync, store_for
from .test_registry_safety import rollback


@pytest.fixture
def registry_data():
    # The size of the reported incident: rolling back the first sync of 2,000 members.
    return generate_registry(2000, seed=16)


def eligible(url: str) -> int:
    return store_for(url).eligibility_counts()[1]


def test_rolling_back_the_first_sync_of_2000_members_is_blocked(registry_defs, instance, members_db_url):
    first = run_sync(registry_defs, instance)
    assert first.success
    before, voters = members_table(members_db_url), eligible(members_db_url)
    assert voters > 1500
    undo = rollback(registry_defs, instance, first.run_id)
    assert not undo.success
    message = failure_message(undo)
    for guard in ("members would be removed", "would lose eligibility", "the rollback would leave 0 members"):
        assert guard in message
    pd.testing.assert_frame_equal(members_table(members_db_url), before)
    assert eligible(members_db_url) == voters
    store = store_for(members_db_url)
    log = store.log_entry(undo.run_id)
    assert (log["status"], log["source"], log["rolled_back_sync_id"]) == ("failed", "rollback", first.run_id)
    assert {v["guard"] for v in log["errors"]["violations"]} >= {"removal_count", "membership_shrank"}
    assert store.last_applied_sync()["id"] == first.run_id
    assert undo.asset_materializations_for_node("rollback_membership_sync") == []


@pytest.mark.parametrize("confirm", [None, "some-other-sync"])
def test_an_unconfirmed_rollback_is_a_dry_run_that_changes_nothing(
    registry_defs, instance, django_sim, members_db_url, confirm
):
    assert run_sync(registry_defs, instance).success
    django_sim.remove(django_sim.data.truth.valid_kennitalas[0])
    bad = run_sync(registry_defs, instance)
    before = members_table(members_db_url)
    extra = {} if confirm is None else {"confirm_sync_id": confirm}
    preview = rollback(registry_defs, instance, bad.run_id, dry_run=True, **extra)
    assert preview.success
    shown = preview.output_for_node("rollback_membership_sync")
    assert shown["dry_run"] and shown["counts"]["reinstated"] == 1 and shown["would_block"] == []
    pd.testing.assert_frame_equal(members_table(members_db_url), before)
    store = store_for(members_db_url)
    assert store.log_entry(preview.run_id) is None
    assert store.last_applied_sync()["id"] == bad.run_id
    run = instance.get_run_by_id(preview.run_id)
    assert run.tags[DRY_RUN_TAG] == "true" and run.tags[ALERT_TAG] == "false"
    assert preview.asset_materializations_for_node("rollback_membership_sync") == []
    [seen] = preview.asset_observations_for_node("rollback_membership_sync")
    assert seen.metadata["dry_run"].value is True
    assert seen.metadata["rollback_of"].value == bad.run_id


def test_an_unconfirmed_rollback_shows_what_would_block_it(registry_defs, instance, members_db_url):
    first = run_sync(registry_defs, instance)
    preview = rollback(registry_defs, instance, first.run_id, dry_run=True)
    assert preview.success
    assert "removal_count" in preview.output_for_node("rollback_membership_sync")["would_block"]
    assert store_for(members_db_url).last_applied_sync()["id"] == first.run_id


def test_a_confirmed_rollback_within_the_guards_applies_and_reads_as_a_rollback(
    registry_defs, instance, django_sim, members_db_url
):
    assert run_sync(registry_defs, instance).success
    before = members_table(members_db_url)
    for kennitala in django_sim.data.truth.valid_kennitalas[:30]:
        django_sim.remove(kennitala)
    bad = run_sync(registry_defs, instance)
    assert bad.success
    undo = rollback(registry_defs, instance, bad.run_id)
    assert undo.success, failure_message(undo)
    pd.testing.assert_frame_equal(members_table(members_db_url), before)
    log = store_for(members_db_url).log_entry(undo.run_id)
    assert (log["status"], log["source"], log["rolled_back_sync_id"]) == ("success", "rollback", bad.run_id)
    shown = {
        m.asset_key.to_user_string(): m.metadata
        for m in undo.asset_materializations_for_node("rollback_membership_sync")
    }
    assert shown["membership_sync"]["source"].value == "rollback"
    assert shown["membership_sync"]["rollback_of"].value == bad.run_id
    assert shown["member_eligibility"]["rollback_of"].value == bad.run_id
    assert DRY_RUN_TAG not in instance.get_run_by_id(undo.run_id).tags


def test_an_override_lets_one_rollback_through_and_only_that_run(
    registry_defs, instance, django_sim, members_db_url
):
    first = run_sync(registry_defs, instance)
    undo = rollback(registry_defs, instance, first.run_id, allow_mass_removal=True)
    assert undo.success, failure_message(undo)
    assert eligible(members_db_url) == 0
    log = store_for(members_db_url).log_entry(undo.run_id)
    assert "removal_count" in log["errors"]["overridden_guards"]
    again = run_sync(registry_defs, instance)  # reinstates everyone
    assert again.success and eligible(members_db_url) > 1500
    voters = eligible(members_db_url)
    refused = rollback(registry_defs, instance, again.run_id)
    assert not refused.success and "allow_mass_removal" in failure_message(refused)
    assert eligible(members_db_url) == voters
