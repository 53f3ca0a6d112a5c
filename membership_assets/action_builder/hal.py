"""Reading Action Builder's HAL+JSON resources: native ids and links (pure, no I/O).

Below both the client (which pages through listings) and the records (which normalize what it
read), so neither has to import the other.
"""

from __future__ import annotations

from typing import Any

NATIVE_PREFIX = "action_builder:"


def native_id(resource: dict[str, Any]) -> str | None:
    """The Action Builder uuid; custom identifiers (dwid:, custom_id:...) may come first."""
    for ident in resource.get("identifiers") or []:
        if isinstance(ident, str) and ident.startswith(NATIVE_PREFIX):
            return ident[len(NATIVE_PREFIX) :]
    return None


def link(resource: dict[str, Any], rel: str) -> str | None:
    value = (resource.get("_links") or {}).get(rel)
    if isinstance(value, dict):
        return value.get("href")
    return None


def last_segment(href: str | None) -> str | None:
    if not href:
        return None
    return href.rstrip("/").rsplit("/", 1)[-1] or None
