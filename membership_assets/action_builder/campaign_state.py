"""Campaign-wide mismatches across full and incremental scans, and when the report last went out.

An incremental scan re-judges only the people modified since the last scan, so its own count
("1 mismatch") says nothing about the campaign ("591 mismatches"). The campaign-wide picture is
the last full scan's findings with every person re-read since replaced by their latest judgment.
It is kept per campaign in the Dagster instance's key-value storage (the table sensor cursors
live in: Postgres in production), so it holds across runs, processes and run workers. It holds
person ids and unit names only, no names.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

_PREFIX = "membership_assets/action_builder"
NO_UNIT = ""  # a mismatch whose correct unit is unknown


@dataclass(frozen=True)
class CampaignMismatches:
    """Who mismatches campaign-wide: person id -> (correct unit, inactive)."""

    full_scan_started_at: str | None  # None: no full scan yet, so the campaign-wide count is unknown
    scan_started_at: str  # the latest scan merged in
    incremental_scans_since_full: int = 0
    people: Mapping[str, tuple[str, bool]] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return self.full_scan_started_at is not None

    @property
    def total(self) -> int:
        return len(self.people)

    @property
    def active(self) -> int:
        return sum(1 for _unit, inactive in self.people.values() if not inactive)

    def active_by_unit(self) -> dict[str, int]:
        """Active members with mismatches per correct unit, most first."""
        counts = Counter(unit for unit, inactive in self.people.values() if not inactive)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_json(self) -> str:
        return json.dumps(
            {
                "full_scan_started_at": self.full_scan_started_at,
                "scan_started_at": self.scan_started_at,
                "incremental_scans_since_full": self.incremental_scans_since_full,
                "people": {pid: [unit, inactive] for pid, (unit, inactive) in self.people.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> CampaignMismatches:
        raw = json.loads(text)
        return cls(
            full_scan_started_at=raw["full_scan_started_at"],
            scan_started_at=raw["scan_started_at"],
            incremental_scans_since_full=raw.get("incremental_scans_since_full", 0),
            people={pid: (unit, bool(inactive)) for pid, (unit, inactive) in raw["people"].items()},
        )


def merge_scan(
    previous: CampaignMismatches | None,
    *,
    mode: str,
    scan_started_at: str,
    reread: Iterable[str],
    found: Mapping[str, tuple[str | None, bool]],
) -> CampaignMismatches:
    """The campaign after one scan: a full scan replaces everything; an incremental scan replaces
    the people it re-read (``reread``: read and not quarantined) with what it ``found``.

    A scan older than the state (an old run re-executed late) leaves the state as it is.
    """
    if previous is not None and scan_started_at < previous.scan_started_at:
        return previous
    found = {pid: (unit or NO_UNIT, inactive) for pid, (unit, inactive) in found.items()}
    if mode == "full":
        return CampaignMismatches(scan_started_at, scan_started_at, 0, found)
    people = dict(previous.people) if previous is not None else {}
    for pid in reread:
        people.pop(pid, None)
    people.update(found)
    return CampaignMismatches(
        full_scan_started_at=previous.full_scan_started_at if previous is not None else None,
        scan_started_at=scan_started_at,
        incremental_scans_since_full=(previous.incremental_scans_since_full if previous else 0) + 1,
        people=people,
    )


# -- storage: the Dagster instance's key-value table ----------------------------------------------


def _get(instance: dg.DagsterInstance, key: str) -> str | None:
    return instance.run_storage.get_cursor_values({key}).get(key)


def _set(instance: dg.DagsterInstance, key: str, value: str) -> None:
    instance.run_storage.set_cursor_values({key: value})


def load_mismatches(instance: dg.DagsterInstance, campaign_id: str) -> CampaignMismatches | None:
    text = _get(instance, f"{_PREFIX}/campaign_mismatches/{campaign_id}")
    return CampaignMismatches.from_json(text) if text else None


def save_mismatches(instance: dg.DagsterInstance, campaign_id: str, state: CampaignMismatches) -> None:
    _set(instance, f"{_PREFIX}/campaign_mismatches/{campaign_id}", state.to_json())


def load_last_report(instance: dg.DagsterInstance, campaign_id: str) -> dict[str, Any] | None:
    """The organizers' last report of this campaign: {day, run_id, state: sending|sent, ...}."""
    text = _get(instance, f"{_PREFIX}/report_sent/{campaign_id}")
    return json.loads(text) if text else None


def save_last_report(instance: dg.DagsterInstance, campaign_id: str, record: dict[str, Any]) -> None:
    _set(instance, f"{_PREFIX}/report_sent/{campaign_id}", json.dumps(record))
