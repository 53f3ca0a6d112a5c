"""Shared fixtures: simulators over real HTTP, resources pointing at them, temporary state."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from membership_assets.action_builder.resources import ActionBuilderResource
from membership_assets.definitions import build_definitions
from membership_assets.notify.resources import FileOutboxEmail, Recipients
from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import CampaignData, SeedConfig, generate_campaign
from membership_assets.warehouse.resources import DuckDBWarehouse


@pytest.fixture
def ab_campaign() -> CampaignData:
    return generate_campaign(SeedConfig(people=300, seed=11))


@pytest.fixture
def ab_sim(ab_campaign):
    with ActionBuilderSimulator(ab_campaign, rate_limit=None) as sim:
        yield sim


def ab_resource_for(sim: ActionBuilderSimulator, tmp_path: Path, **overrides) -> ActionBuilderResource:
    kwargs = dict(
        credentials=sim.credentials_json,
        base_url=sim.base_url,
        campaign_id=sim.data.campaign_id,
        rate_limit=2000.0,
        checkpoint_path=str(tmp_path / "checkpoints.sqlite"),
        reports_dir=str(tmp_path / "reports"),
        max_attempts=3,
    )
    kwargs.update(overrides)
    return ActionBuilderResource(**kwargs)


@pytest.fixture
def ab_resource(ab_sim, tmp_path) -> ActionBuilderResource:
    return ab_resource_for(ab_sim, tmp_path)


@pytest.fixture
def outbox(tmp_path) -> Path:
    return tmp_path / "outbox"


@pytest.fixture
def warehouse(tmp_path) -> DuckDBWarehouse:
    return DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))


@pytest.fixture
def local_resources(ab_resource, outbox, warehouse) -> dict:
    return {
        "action_builder": ab_resource,
        "email": FileOutboxEmail(directory=str(outbox)),
        "recipients": Recipients(
            tag_report="organizers@example.org, steward@example.org", admins="admins@example.org"
        ),
        "warehouse": warehouse,
    }


@pytest.fixture
def defs(local_resources) -> dg.Definitions:
    return build_definitions(local_resources)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst
