"""Action Builder's settings: the campaign, credentials, pacing, names and opt-ins, typed."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from ..config import Flag, PlainFloat, Settings, setting
from ..settings import ACTION_BUILDER_SIM_PORT, LOCAL_RATE_LIMIT, SIMULATED_AB_TOKEN, is_production, state_dir
from .client import DOCUMENTED_RATE_LIMIT
from .resources import ActionBuilderResource
from .rules import FieldNames

_NAMES = FieldNames()


class ActionBuilderSettings(Settings):
    GROUP = "Action Builder (tag hygiene)"

    credentials: SecretStr | None = setting(
        "ACTION_BUILDER_CREDENTIALS_PASSWORD",
        kind="JSON secret",
        shown_default="local: the simulator's token",
        meaning='`{"api_token": "...", "subdomain": "yourorg"}`',
        production=True,
    )
    base_url: str = setting(
        "ACTION_BUILDER_BASE_URL",
        "",
        kind="URL",
        shown_default="local: `http://127.0.0.1:$ACTION_BUILDER_SIM_PORT/api/rest/v1`",
        local=f"http://127.0.0.1:{ACTION_BUILDER_SIM_PORT}/api/rest/v1",
        meaning="the API root the local resources call (production builds it from the credentials' subdomain)",
    )
    campaign_id: str = setting(
        "ACTION_BUILDER_CAMPAIGN_ID",
        "",
        kind="string",
        shown_default="empty",
        meaning="campaign to scan (optional if the token sees one campaign; with several the run fails naming them)",
    )
    rate_limit: PlainFloat = setting(
        "ACTION_BUILDER_RATE_LIMIT",
        DOCUMENTED_RATE_LIMIT,
        local=LOCAL_RATE_LIMIT,
        kind="requests/second (float)",
        shown_default=f"`{DOCUMENTED_RATE_LIMIT:g}` (production), `{LOCAL_RATE_LIMIT:g}` (local simulator)",
        meaning="the shared pacing of every Action Builder request",
        gt=0,
        le=10_000,
    )
    apply_deletions: Flag = setting(
        "ACTION_BUILDER_APPLY_DELETIONS",
        False,
        kind="boolean (`true`/`1`/`yes`)",
        shown_default="false",
        meaning="lets the schedules delete outdated taggings for real (otherwise their cleanup is a dry run)",
    )
    apply_repairs: Flag = setting(
        "ACTION_BUILDER_APPLY_REPAIRS",
        False,
        kind="boolean (`true`/`1`/`yes`)",
        shown_default="false",
        meaning="lets the schedules repair tags for real (docs/tag-repair.md)",
    )
    unit_field: str = setting(
        "ACTION_BUILDER_UNIT_FIELD",
        _NAMES.unit,
        kind="string",
        meaning="the campaign's tag field naming a person's unit (checked against the tag catalog)",
    )
    membership_type_field: str = setting(
        "ACTION_BUILDER_TYPE_FIELD",
        _NAMES.membership_type,
        kind="string",
        meaning="the tag field of the membership type",
    )
    membership_status_field: str = setting(
        "ACTION_BUILDER_STATUS_FIELD",
        _NAMES.membership_status,
        kind="string",
        meaning="the tag field of the membership status (empty: status not used)",
    )
    unit_connection_type: str = setting(
        "ACTION_BUILDER_CONNECTION_TYPE",
        _NAMES.connection_type,
        kind="string",
        meaning="the unit connection type (confirmed by `connection_types` or by the connections read)",
    )
    unit_entity_type: str = setting(
        "ACTION_BUILDER_UNIT_ENTITY_TYPE",
        _NAMES.unit_entity_type,
        kind="string",
        meaning="the unit entity type (confirmed by `entity_types` or by the entities read)",
    )

    def resources(self, env: str | None = None) -> dict[str, Any]:
        state = state_dir()
        # Production: read at launch (a missing secret fails the run naming its variable).
        credentials = (
            self.launch_var("credentials")
            if is_production(env)
            else json.dumps({"api_token": SIMULATED_AB_TOKEN, "subdomain": "simulated"})
        )
        return {
            "action_builder": ActionBuilderResource(
                credentials=credentials,
                base_url=self.base_url,
                campaign_id=self.campaign_id,
                rate_limit=self.rate_limit,
                checkpoint_path=str(state / "checkpoints" / "action_builder.sqlite"),
                reports_dir=str(state / "reports"),
                unit_field=self.unit_field,
                membership_type_field=self.membership_type_field,
                membership_status_field=self.membership_status_field,
                unit_connection_type=self.unit_connection_type,
                unit_entity_type=self.unit_entity_type,
            )
        }
