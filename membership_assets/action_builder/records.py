"""Normalized Action Builder records: the raw HAL JSON reduced to what tag hygiene needs.

A record that cannot be read raises RecordError; the scan then quarantines that *person* (no
mismatch, no deletion) instead of guessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import pandas as pd

from .hal import NATIVE_PREFIX, last_segment, link, native_id


class RecordError(ValueError):
    """An API record lacks something tag hygiene cannot do without."""


@dataclass(frozen=True)
class Entity:
    """A person or a unit: Action Builder lists both as entities, with the same fields."""

    person_id: str  # the entity's id (the column keeps the name the stored tables know)
    entity_type: str
    given_name: str | None
    family_name: str | None
    modified_date: str | None
    browser_url: str | None

    @property
    def is_person(self) -> bool:
        # The docs send "Person" and answer "person"; compare case-insensitively.
        return self.entity_type.strip().lower() == "person"


@dataclass(frozen=True)
class Unit:
    unit_id: str
    name: str | None


@dataclass(frozen=True)
class Connection:
    connection_id: str
    person_id: str
    other_id: str | None
    connection_type: str
    inactive: bool
    position: int


@dataclass(frozen=True)
class Tagging:
    tagging_id: str
    tag_id: str | None
    item_type: str  # "person" | "connection"
    item_id: str
    section: str | None
    field: str | None
    value: str | None


# What each column of the Action Builder tables means, for their column schemas in the UI.
COLUMN_DESCRIPTIONS = {
    "person_id": "Action Builder id of the person",
    "entity_type": "Person or Unit (both are entities in Action Builder)",
    "given_name": "First name (personal data: never in previews)",
    "family_name": "Last name (personal data: never in previews)",
    "modified_date": "When the entity last changed in Action Builder",
    "browser_url": "The entity's page in Action Builder",
    "quarantine_reason": "Why the person could not be read (then never judged); blank when read",
    "unit_id": "Action Builder id of the unit entity",
    "name": "The unit's name: the value its members' unit tags should carry",
    "connection_id": "Action Builder id of the connection",
    "other_id": "The connected entity (a unit for unit connections)",
    "connection_type": "Kind of connection; unit connections are the truth for tags",
    "inactive": "True when the connection (or the member) is inactive",
    "position": "Order of the connection as Action Builder lists it",
    "tagging_id": "Action Builder id of the tagging (one tag applied to one person or connection)",
    "tag_id": "Action Builder id of the tag",
    "item_type": "person: the person's own tag; connection: a tag on their unit connection",
    "item_id": "The tagged person or connection",
    "section": "The tag's section in Action Builder",
    "field": "The tag's field (unit, membership type or status)",
    "value": "The tag's value",
    "expected_value": "The value the unit connection says",
    "action": "deleted | already_gone | dry_run | blocked_cap | failed | not_attempted; "
    "pending (intent, not sent) | sending (DELETE may have been sent) after a crash",
    "error": "Why the deletion failed or was blocked",
    "acted_at": "When the outcome was recorded",
}

R = TypeVar("R")


def to_frame(records: list[Any], cls: type) -> pd.DataFrame:
    """Records as a DataFrame with exactly the dataclass's columns (even when empty)."""
    return pd.DataFrame([asdict(r) for r in records], columns=[f.name for f in fields(cls)])


def from_frame(cls: type[R], frame: pd.DataFrame) -> list[R]:
    names = [f.name for f in fields(cls)]
    out = []
    for row in frame[names].itertuples(index=False):
        out.append(cls(**{k: (None if _is_missing(v) else v) for k, v in zip(names, row, strict=True)}))
    return out


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"{key} is not a string ({type(value).__name__})")  # never the value
    return value


def _strip_prefix(value: str) -> str:
    return value[len(NATIVE_PREFIX) :] if value.startswith(NATIVE_PREFIX) else value


def entity_from_api(raw: dict[str, Any]) -> Entity:
    pid = native_id(raw)
    if not pid:
        raise RecordError("entity has no action_builder: identifier")
    return Entity(
        person_id=pid,
        entity_type=_str(raw, "action_builder:entity_type") or "",
        given_name=_str(raw, "given_name"),
        family_name=_str(raw, "family_name"),
        modified_date=_str(raw, "modified_date"),
        browser_url=_str(raw, "browser_url"),
    )


def unit_from_api(raw: dict[str, Any]) -> Unit:
    uid = native_id(raw)
    if not uid:
        raise RecordError("unit entity has no action_builder: identifier")
    # Single-name entities use action_builder:name (Parsons PR #887); older ones used name.
    return Unit(unit_id=uid, name=_str(raw, "action_builder:name") or _str(raw, "name"))


def connection_from_api(raw: dict[str, Any], person_id: str, position: int) -> Connection:
    cid = native_id(raw)
    if not cid:
        raise RecordError(f"a connection of {person_id} has no action_builder: identifier")
    inactive = raw.get("inactive", False)
    if not isinstance(inactive, bool):
        raise RecordError(f"connection {cid}: inactive is not a boolean ({type(inactive).__name__})")
    other = raw.get("person_id")
    if other is not None and not isinstance(other, str):
        raise RecordError(f"connection {cid}: person_id is not a string")
    other = _strip_prefix(other) if other else last_segment(link(raw, "osdi:person"))
    return Connection(
        connection_id=cid,
        person_id=person_id,
        other_id=other,
        connection_type=_str(raw, "connection_type") or "",
        inactive=inactive,
        position=position,
    )


def tagging_from_api(
    raw: dict[str, Any],
    *,
    item_type: str | None = None,
    item_id: str | None = None,
    tag_id: str | None = None,
) -> Tagging:
    tid = native_id(raw)
    if not tid:
        raise RecordError("tagging has no action_builder: identifier")
    if item_type is None:
        item_type, item_id = _tagged_item(raw)
    if not item_id:
        raise RecordError(f"tagging {tid}: cannot tell which person or connection it belongs to")
    # Tag values were renamed to `name` in 2023; `action_builder:name` is still what taggings carry.
    value = _str(raw, "action_builder:name")
    if value is None:
        value = _str(raw, "name")
    return Tagging(
        tagging_id=tid,
        tag_id=tag_id or _str(raw, "action_builder:tag_id") or last_segment(link(raw, "osdi:tag")),
        item_type=item_type,
        item_id=item_id,
        section=_str(raw, "action_builder:section"),
        field=_str(raw, "action_builder:field"),
        value=value,
    )


def _tagged_item(raw: dict[str, Any]) -> tuple[str, str | None]:
    kind = str(raw.get("item_type") or "").lower()
    conn_href = link(raw, "action_builder:connection")
    person_href = link(raw, "osdi:person")
    if "connection" in kind or (not kind and conn_href):
        return "connection", last_segment(conn_href)
    if "person" in kind or person_href:
        return "person", last_segment(person_href)
    raise RecordError(f"tagging {native_id(raw)}: unknown item_type {raw.get('item_type')!r}")
