"""Typed settings from environment variables: the base every domain's settings class shares.

Each field names its variable, type, default and meaning once (``setting``); the reference page
(``docs/configuration.md``) is generated from these fields, and ``load`` reports every problem of
a class at once, naming each variable, instead of failing on the first.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, ClassVar

import dagster as dg
from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .settings import is_production, schedules_start_running

_NO_LOCAL_DEFAULT = object()


class ConfigError(ValueError):
    """Every configuration problem at once, each naming its variable."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def setting(
    variable: str,
    default: Any = None,
    *,
    meaning: str,
    kind: str,
    shown_default: str | None = None,
    local: Any = _NO_LOCAL_DEFAULT,
    production: bool = False,
    **constraints: Any,
) -> Any:
    """A field read from ``variable``. ``kind`` and ``shown_default`` are what the reference page
    says; ``local`` is the embedded default's own value where it differs from production's;
    ``production`` marks what a production deployment must set (deploy/ must name it)."""
    extra = {"variable": variable, "kind": kind, "production": production}
    if shown_default is not None:
        extra["shown_default"] = shown_default
    if local is not _NO_LOCAL_DEFAULT:
        extra["local"] = local
    return Field(
        default, validation_alias=variable, description=meaning, json_schema_extra=extra, **constraints
    )


_INTEGER = re.compile(r"[0-9]{1,12}")
_DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")


def _plain_number(pattern: re.Pattern) -> BeforeValidator:
    # ASCII digits only: int() accepts "²" and float() accepts "inf"; a blank value means unset.
    def check(value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise PydanticUseDefault
            if not pattern.fullmatch(value):
                raise ValueError("not a plain number")
        return value

    return BeforeValidator(check)


def _flag(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise PydanticUseDefault  # a blank flag means unset
    return value


PlainInt = Annotated[int, _plain_number(_INTEGER)]
PlainFloat = Annotated[float, _plain_number(_DECIMAL)]
# One way to read a flag: true/false, 1/0, yes/no, on/off (any case); anything else is refused.
Flag = Annotated[bool, BeforeValidator(_flag)]


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


# NoDecode: a comma-separated list, not the JSON pydantic-settings expects of a tuple.
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_csv)]


_SECRETS = (SecretStr, SecretStr | None)


def _unset(variable: str, annotation: Any) -> bool:
    """Absent, or blank where blank means unset: everything but a secret, where a set but empty
    value is itself a problem to report (the receiver refuses an empty key)."""
    value = os.environ.get(variable)
    if value is None:
        return True
    return not value.strip() and annotation not in _SECRETS


class Settings(BaseSettings):
    """Base of the domains' settings classes; ``GROUP`` is their heading on the reference page."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=True)
    GROUP: ClassVar[str] = ""

    @classmethod
    def load(cls, env: str | None = None, **given: Any):
        """The environment's values, the embedded default's own defaults when local (``given``
        wins over both); raises ``ConfigError`` listing every invalid variable of the class."""
        values = {}
        if not is_production(env):
            for name, field in cls.model_fields.items():
                extra = field.json_schema_extra or {}
                if "local" in extra and _unset(extra["variable"], field.annotation):
                    values[name] = extra["local"]
        try:
            return cls(**{**values, **given})
        except ValidationError as exc:
            raise ConfigError([cls._problem(e) for e in exc.errors()]) from None

    @classmethod
    def load_checked(cls, env: str | None = None):
        """``(settings, problems)``: the invalid variables' defaults in place, so a caller can add
        its own checks and report everything at once."""
        try:
            return cls.load(env), []
        except ConfigError as exc:
            defaults = {
                name: field.default
                for name, field in cls.model_fields.items()
                if any(p.startswith(f"{field.validation_alias}=") for p in exc.problems)
            }
            return cls.load(env, **defaults), exc.problems

    @classmethod
    def _problem(cls, error: dict) -> str:
        variable = str(error["loc"][0]) if error["loc"] else cls.__name__
        field = next((f for f in cls.model_fields.values() if f.validation_alias == variable), None)
        raw = str(error.get("input", ""))
        shown = raw if len(raw) <= 20 and raw.isascii() and raw.isprintable() else "(unprintable)"
        if field is not None and (
            field.annotation in _SECRETS or "secret" in (field.json_schema_extra or {}).get("kind", "")
        ):
            shown = "(hidden)"  # an invalid secret is still a secret
        bounds = {type(m).__name__: m for m in (field.metadata if field else [])}
        if field and ("Ge" in bounds or "Gt" in bounds) and "Le" in bounds:
            low = bounds["Ge"].ge if "Ge" in bounds else bounds["Gt"].gt
            kind = "an integer" if field.annotation is int else "a number"
            return f"{variable}={shown} must be {kind} from {low:g} to {bounds['Le'].le:g}"
        return f"{variable}={shown}: {error['msg'].removeprefix('Value error, ')}"

    @classmethod
    def variable(cls, field: str) -> str:
        return str(cls.model_fields[field].validation_alias)

    def env_var(self, field: str, fallback: Any = "") -> Any:
        """``dg.EnvVar`` of a field whose variable is set (read at launch, the UI shows its name
        only, never the value), else ``fallback``: how secrets and service URLs reach resources."""
        name = self.variable(field)
        return dg.EnvVar(name) if os.environ.get(name, "").strip() else fallback

    def launch_var(self, field: str) -> dg.EnvVar:
        """``dg.EnvVar`` of a field production requires: unset, the run fails at launch naming it."""
        return dg.EnvVar(self.variable(field))

    def secret(self, field: str) -> str:
        value = getattr(self, field)
        return value.get_secret_value() if isinstance(value, SecretStr) else (value or "")


def default_schedule_status() -> dg.DefaultScheduleStatus:
    """Every schedule's state when the code location first loads (MEMBERSHIP_SCHEDULE_STATUS)."""
    return dg.DefaultScheduleStatus.RUNNING if schedules_start_running() else dg.DefaultScheduleStatus.STOPPED
