"""The embedded default's upstream services: simulators on fixed loopback ports, state on disk.

Used by ``python -m membership_assets demo`` (in-process) and ``python -m membership_assets
simulators`` (long-running, for ``dagster dev``). State is saved on stop, so tags deleted in one
demo run stay deleted in the next, like the real service.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from ..environment import ACTION_BUILDER_SIM_PORT, SIMULATED_AB_TOKEN, local_rate_limit, state_dir
from .action_builder import ActionBuilderSimulator
from .action_builder_seed import CampaignData, SeedConfig, generate_campaign


def _serving(url: str, headers: dict[str, str]) -> bool:
    try:
        return requests.get(url, headers=headers, timeout=1).ok
    except requests.RequestException:
        return False


class LocalSimulators:
    def __init__(self, root: Path | None = None, *, ab_port: int = ACTION_BUILDER_SIM_PORT):
        self.root = (root or state_dir()) / "simulators"
        self.ab_port = ab_port
        self.action_builder: ActionBuilderSimulator | None = None
        self.reused: list[str] = []

    @property
    def ab_state(self) -> Path:
        return self.root / "action_builder.json"

    def ab_data(self) -> CampaignData:
        if self.ab_state.exists():
            return CampaignData.load(self.ab_state)
        people = int(os.getenv("ACTION_BUILDER_SIM_PEOPLE", "3000"))
        data = generate_campaign(SeedConfig(people=people))
        data.save(self.ab_state)
        return data

    def start(self) -> LocalSimulators:
        ab_url = f"http://127.0.0.1:{self.ab_port}/api/rest/v1"
        if _serving(ab_url, {"OSDI-API-Token": SIMULATED_AB_TOKEN}):
            self.reused.append("action_builder")  # `python -m membership_assets simulators` is up
        else:
            self.action_builder = ActionBuilderSimulator(
                self.ab_data(), token=SIMULATED_AB_TOKEN, rate_limit=local_rate_limit(), port=self.ab_port
            ).start()
        return self

    def stop(self) -> None:
        if self.action_builder is not None:
            self.action_builder.save(self.ab_state)
            self.action_builder.stop()

    def __enter__(self) -> LocalSimulators:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
