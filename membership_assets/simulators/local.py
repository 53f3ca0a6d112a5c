"""The embedded default's upstream services: simulators on fixed loopback ports, state on disk.

Used by ``python -m membership_assets demo`` (in-process) and ``python -m membership_assets
simulators`` (long-running, for ``dagster dev``). State is saved on stop, so tags deleted in one
demo run stay deleted in the next, like the real service.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from ..action_builder.settings import ActionBuilderSettings
from ..settings import (
    ACTION_BUILDER_SIM_PORT,
    DJANGO_SIM_PORT,
    SIMULATED_AB_TOKEN,
    SIMULATED_DJANGO_TOKEN,
    state_dir,
)
from .action_builder import ActionBuilderSimulator
from .action_builder_seed import CampaignData, SeedConfig, generate_campaign
from .django_registry import DjangoRegistrySimulator, RegistryData, generate_registry


def _serving(url: str, headers: dict[str, str]) -> bool:
    try:
        return requests.get(url, headers=headers, timeout=1).ok
    except requests.RequestException:
        return False


class LocalSimulators:
    def __init__(
        self,
        root: Path | None = None,
        *,
        ab_port: int = ACTION_BUILDER_SIM_PORT,
        django_port: int = DJANGO_SIM_PORT,
        advance_registry: bool = False,
    ):
        self.root = (root or state_dir()) / "simulators"
        self.ab_port = ab_port
        self.django_port = django_port
        self.advance_registry = advance_registry
        self.action_builder: ActionBuilderSimulator | None = None
        self.django: DjangoRegistrySimulator | None = None
        self.reused: list[str] = []
        self.registry_churn: dict[str, list[str]] | None = None

    @property
    def django_state(self) -> Path:
        return self.root / "django_registry.json"

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
                self.ab_data(),
                token=SIMULATED_AB_TOKEN,
                rate_limit=ActionBuilderSettings.load("local").rate_limit,
                port=self.ab_port,
            ).start()
        if _serving(
            f"http://127.0.0.1:{self.django_port}/api/members/eligible",
            {"Authorization": f"Token {SIMULATED_DJANGO_TOKEN}"},
        ):
            self.reused.append("django")
        else:
            existed = self.django_state.exists()
            data = (
                RegistryData.load(self.django_state)
                if existed
                else generate_registry(int(os.getenv("DJANGO_SIM_MEMBERS", "2000")))
            )
            self.django = DjangoRegistrySimulator(
                data,
                token=SIMULATED_DJANGO_TOKEN,
                port=self.django_port,
                # The sync service's webhook receiver, when one runs (see docs/sync-api.md).
                webhook_url=os.getenv("REGISTRY_WEBHOOK_URL"),
            )
            if existed and self.advance_registry:
                # Each demo run after the first sees a month of membership life upstream.
                self.registry_churn = self.django.churn(step=data.version)
            self.django.start()
        return self

    def stop(self) -> None:
        if self.action_builder is not None:
            self.action_builder.save(self.ab_state)
            self.action_builder.stop()
        if self.django is not None:
            self.django.save(self.django_state)
            self.django.stop()

    def __enter__(self) -> LocalSimulators:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
