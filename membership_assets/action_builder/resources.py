"""Dagster resource for Action Builder: credentials, campaign, pacing and field names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from ..connectors.errors import BadRequestError
from ..privacy import cipher
from .checkpoint import ScanCheckpoint
from .client import DOCUMENTED_RATE_LIMIT, ActionBuilderClient, ActionBuilderCredentials, native_id
from .rules import FieldNames
from .scan import CampaignScanner


class ActionBuilderResource(dg.ConfigurableResource):
    """Access to one Action Builder campaign (production API or the local simulator)."""

    credentials: str = Field(
        description="JSON {api_token, subdomain}; from ACTION_BUILDER_CREDENTIALS_PASSWORD."
    )
    campaign_id: str = Field(
        default="", description="Campaign to scan; empty = the only campaign the token can see."
    )
    base_url: str = Field(
        default="", description="Override of https://{subdomain}.actionbuilder.org/api/rest/v1."
    )
    rate_limit: float = Field(
        default=DOCUMENTED_RATE_LIMIT, description="Requests per second for the whole scan."
    )
    workers: int = Field(default=8, description="Concurrent requests in flight (paced by rate_limit).")
    max_attempts: int = 5
    timeout_seconds: float = 30.0
    checkpoint_path: str = Field(default=".local/checkpoints/action_builder.sqlite")
    reports_dir: str = Field(default=".local/reports", description="Where mismatch CSVs are written.")
    unit_field: str = FieldNames.unit
    membership_type_field: str = FieldNames.membership_type
    membership_status_field: str = FieldNames.membership_status
    unit_connection_type: str = FieldNames.connection_type
    unit_entity_type: str = Field(
        default=FieldNames.unit_entity_type, description="Entity type of units (read per unit on full scans)."
    )

    @property
    def field_names(self) -> FieldNames:
        return FieldNames(
            unit=self.unit_field,
            membership_type=self.membership_type_field,
            membership_status=self.membership_status_field,
            connection_type=self.unit_connection_type,
            unit_entity_type=self.unit_entity_type,
        )

    def open_client(self, log: Any = None) -> ActionBuilderClient:
        creds = ActionBuilderCredentials.from_json(self.credentials)
        client = ActionBuilderClient.connect(
            api_token=creds.api_token,
            base_url=self.base_url or creds.base_url,
            campaign_id=self.campaign_id,
            rate_limit=self.rate_limit,
            max_attempts=self.max_attempts,
            timeout=self.timeout_seconds,
            log=log,
            pool_size=max(self.workers, 4),
        )
        if not self.campaign_id:
            campaigns = [c for c in client.list_campaigns() if native_id(c)]
            if len(campaigns) != 1:
                names = ", ".join(f"{c.get('name')} ({native_id(c)})" for c in campaigns[:10])
                raise BadRequestError(
                    f"set ACTION_BUILDER_CAMPAIGN_ID: the token sees {len(campaigns)} campaigns: {names}",
                    api="action_builder",
                )
            client.campaign_id = native_id(campaigns[0]) or ""
        return client

    def checkpoint(self, scan_key: str) -> ScanCheckpoint:
        return ScanCheckpoint(Path(self.checkpoint_path), scan_key, cipher=cipher())

    def scanner(
        self, client: ActionBuilderClient, checkpoint: ScanCheckpoint | None, log: Any
    ) -> CampaignScanner:
        return CampaignScanner(
            client, names=self.field_names, workers=self.workers, checkpoint=checkpoint, log=log
        )
