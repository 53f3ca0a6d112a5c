"""What the registry side shows in the Dagster UI reads right (issue 16.5, registry side): a
column schema on every asset holding a table, a description on every sensor and schedule, and
members in previews and logs named by pseudonyms labelled as such."""

from __future__ import annotations

import dagster as dg

from membership_assets.definitions import defs as code_location
from membership_assets.registry import assets as registry_assets
from membership_assets.registry import planning
from membership_assets.registry.delta import DELTA_COLUMNS
from membership_assets.registry.store import MembersStore

from .test_registry_job import run_sync

TABLE_ASSETS = ["django_members", "valid_members", "member_rejects", "membership_delta", "member_eligibility"]


def test_every_sensor_and_schedule_says_what_it_does():
    undescribed = [
        d.name
        for d in [*code_location.sensors, *code_location.schedules]
        if not (d.description or "").strip()
    ]
    assert undescribed == []


def test_every_registry_table_asset_has_a_column_schema():
    graph = code_location.resolve_asset_graph()
    for name in TABLE_ASSETS:
        schema = graph.get(dg.AssetKey(name)).metadata.get("dagster/column_schema")
        assert isinstance(schema, dg.TableSchema), name
        assert all(c.description for c in schema.columns), name
    assert list(registry_assets.DELTA_SCHEMA) == DELTA_COLUMNS


def test_the_eligibility_schema_is_the_views_columns(tmp_path):
    store = MembersStore.from_url(f"sqlite:///{tmp_path / 'members.sqlite'}")
    store.ensure_schema()
    assert list(store.eligibility().columns) == list(registry_assets.ELIGIBILITY_SCHEMA)
    store.engine.dispose()


def test_previews_and_logs_label_pseudonyms_as_pseudonyms(registry_defs, instance, django_sim):
    assert run_sync(registry_defs, instance).success
    leaver = django_sim.data.truth.valid_kennitalas[0]
    django_sim.remove(leaver)
    result = run_sync(registry_defs, instance)
    assert result.success
    [delta] = result.asset_materializations_for_node("membership_delta")
    preview = delta.metadata["preview"].value
    header = preview.splitlines()[0]
    assert planning.PSEUDONYM in header and "kennitala" not in header.replace("_pseudonym", "")
    assert leaver not in preview
    [rejects] = [
        m
        for m in result.asset_materializations_for_node("registry_validation")
        if m.asset_key.path == ["member_rejects"]
    ]
    assert registry_assets.PSEUDONYM_OF_RAW in rejects.metadata["preview"].value.splitlines()[0]
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    rejected_logs = [m for m in messages if "rejected row" in m]
    assert rejected_logs and all("member pseudonym" in m for m in rejected_logs)
