"""Typed settings: one parse per kind of value, secrets hidden, every problem at once."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from membership_assets.action_builder.settings import ActionBuilderSettings
from membership_assets.config import ConfigError
from membership_assets.config_reference import SETTINGS
from membership_assets.definitions import resources_for
from membership_assets.registry.settings import ReceiverSettings, RegistrySettings
from membership_assets.settings import LOCAL_RATE_LIMIT


def test_every_password_variable_is_a_secret_that_never_prints():
    for cls in SETTINGS:
        for name, field in cls.model_fields.items():
            if str(field.validation_alias).endswith("_PASSWORD"):
                assert field.annotation in (SecretStr, SecretStr | None), (cls.__name__, name)


def test_a_secret_value_is_not_in_the_settings_repr(monkeypatch):
    monkeypatch.setenv("REGISTRY_WEBHOOK_SECRET_PASSWORD", "a-webhook-secret-nobody-may-read-0123")
    monkeypatch.setenv("MEMBERS_DB_PASSWORD", "a-database-password-nobody-may-read")
    shown = repr(ReceiverSettings.load("local")) + repr(RegistrySettings.load("local"))
    assert "nobody-may-read" not in shown


@pytest.mark.parametrize(
    "value, expected", [("true", True), ("YES", True), ("1", True), ("false", False), ("0", False)]
)
def test_flags_are_parsed_one_way(monkeypatch, value, expected):
    monkeypatch.setenv("ACTION_BUILDER_APPLY_DELETIONS", value)
    monkeypatch.setenv("DJANGO_WHOLE_LIST_ETAG", value)
    assert ActionBuilderSettings.load().apply_deletions is expected
    assert RegistrySettings.load().whole_list_etag is expected


def test_a_flag_that_is_neither_is_refused_not_read_as_false(monkeypatch):
    monkeypatch.setenv("ACTION_BUILDER_APPLY_DELETIONS", "maybe")
    with pytest.raises(ConfigError, match="ACTION_BUILDER_APPLY_DELETIONS=maybe"):
        ActionBuilderSettings.load()


def test_the_embedded_default_has_its_own_defaults_and_the_environment_wins(monkeypatch):
    monkeypatch.delenv("ACTION_BUILDER_RATE_LIMIT", raising=False)
    assert ActionBuilderSettings.load("local").rate_limit == LOCAL_RATE_LIMIT
    assert ActionBuilderSettings.load("production").rate_limit == 4.0
    monkeypatch.setenv("ACTION_BUILDER_RATE_LIMIT", "2.5")
    assert ActionBuilderSettings.load("local").rate_limit == 2.5


def test_every_domain_problem_is_listed_at_once_naming_its_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("ACTION_BUILDER_RATE_LIMIT", "fast")
    monkeypatch.setenv("REGISTRY_MAX_REMOVAL_FRACTION", "1.5")
    monkeypatch.setenv("REGISTRY_MAX_REMOVALS", "\u00b2")
    with pytest.raises(ConfigError) as caught:
        resources_for("local")
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert any(p.startswith("ACTION_BUILDER_RATE_LIMIT=fast must be a number") for p in problems)
    assert any(
        p.startswith("REGISTRY_MAX_REMOVAL_FRACTION=1.5 must be a number from 0 to 1") for p in problems
    )
    assert any(p.startswith("REGISTRY_MAX_REMOVALS=(unprintable) must be an integer") for p in problems)


def test_a_malformed_number_is_named_with_its_range(monkeypatch):
    monkeypatch.setenv("SYNC_API_PORT", "80x")
    with pytest.raises(ConfigError, match=r"SYNC_API_PORT=80x must be an integer from 0 to 65535"):
        ReceiverSettings.load()


def test_guard_defaults_live_once():
    from membership_assets.registry.guards import GuardPolicy
    from membership_assets.registry.resources import RegistrySyncPolicy

    assert RegistrySyncPolicy().guard_policy == GuardPolicy()
    assert RegistrySettings.load("local").registry_policy().guard_policy == GuardPolicy()


def test_a_blank_number_or_flag_means_unset(monkeypatch):
    from membership_assets.registry.webhook import SyncApiSettings

    monkeypatch.setenv("SYNC_API_RATE_LIMIT", " ")
    monkeypatch.setenv("ACTION_BUILDER_APPLY_REPAIRS", "")
    monkeypatch.setenv("ACTION_BUILDER_RATE_LIMIT", "")
    default = SyncApiSettings(members_db_url="", webhook_secret="").rate_per_second
    assert ReceiverSettings.load().rate_per_second == default
    assert ActionBuilderSettings.load("production").apply_repairs is False
    assert ActionBuilderSettings.load("production").rate_limit == 4.0


def test_a_blank_variable_keeps_the_embedded_defaults_own_value(monkeypatch, tmp_path):
    from membership_assets.settings import DJANGO_SIM_PORT

    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("ACTION_BUILDER_RATE_LIMIT", "")
    monkeypatch.setenv("DJANGO_API_URL", " ")
    assert ActionBuilderSettings.load("local").rate_limit == LOCAL_RATE_LIMIT
    assert resources_for("local")["django"].base_url == f"http://127.0.0.1:{DJANGO_SIM_PORT}"
    # A secret set but empty stays empty: the receiver reports it instead of using the default.
    monkeypatch.setenv("SYNC_API_KEY_PASSWORD", "")
    assert ReceiverSettings.load("local").secret("api_key") == ""
