import dagster as dg

from .assets import action_builder_history, registry_history

defs = dg.Definitions(assets=[*action_builder_history, *registry_history])
