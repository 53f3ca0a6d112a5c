"""A realistic Action Builder campaign with planted membership drift and its ground truth.

The ground truth is written down by the generator as it plants each anomaly ("this person moved
from unit A to B and still carries the A tag"), never computed by the pipeline's own rules, so
tests that compare the pipeline against it are honest.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

UNIT_FIELD = "Bargaining Unit"
TYPE_FIELD = "Membership Type"
STATUS_FIELD = "Membership Status"
MEMBERSHIP_SECTION = "Membership"
PEOPLE_UNITS = "People + Units"
PEOPLE_WORKSITES = "People + Worksites"

MEMBERSHIP_TYPES = ["Full", "Associate", "Probationary", "Retired"]
TYPE_WEIGHTS = [70, 10, 15, 5]
DEPARTMENTS = [
    "Newsroom",
    "Advertising",
    "Circulation",
    "Digital",
    "Press Room",
    "Photo",
    "Copy Desk",
    "Sports",
    "Features",
    "Graphics",
    "Library",
    "Maintenance",
    "Customer Service",
    "Finance",
]
GIVEN = [
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Eli",
    "Fatima",
    "Gus",
    "Hana",
    "Ivan",
    "Jo",
    "Kai",
    "Lena",
    "Mo",
    "Nia",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
    "Uma",
    "Vic",
    "Wen",
    "Xavi",
    "Yara",
    "Zoe",
]
FAMILY = [
    "Adams",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Moreau",
    "Nguyen",
    "Okafor",
    "Patel",
    "Quist",
    "Rossi",
    "Silva",
    "Tanaka",
    "Ueda",
    "Vargas",
    "Weber",
    "Xu",
    "Young",
    "Zimmer",
]
DISTRACTORS = {
    ("Personal Info", "Pronouns"): ["She/Her", "He/Him", "They/Them"],
    ("Organizing", "Top Issue"): ["Pay", "Safety", "Remote work", "Staffing"],
    ("Organizing", "Shift"): ["Day", "Night", "Weekend"],
}

# scenario -> weight; every scenario documents the truth it plants.
SCENARIOS = {
    "consistent": 62,
    "unit_transfer": 5,  # moved units, still tagged with the old one
    "type_changed": 5,  # e.g. Probationary -> Full, person still tagged Probationary
    "unit_and_type": 2,
    "unit_missing": 3,
    "type_missing": 2,
    "stale_duplicate_unit": 2,  # right unit tag plus a stale one
    "status_outdated": 2,
    "former_member_consistent": 5,  # only an inactive connection, tags agree with it
    "former_member_stale": 2,  # only an inactive connection, stale status tag
    "no_unit_connection": 5,  # never judged
    "no_type_on_connection": 5,  # connection says nothing about type: type not compared
    "two_active_units": 1,  # works in two units, tagged with both: not judged
    "former_member_of_two_units": 1,  # left two units; judged against the first listed one
}


@dataclass(frozen=True)
class SeedConfig:
    people: int = 3000
    units: int = 30
    worksites: int = 10
    seed: int = 7
    recent_fraction: float = 0.1  # share of people modified in the last 24 hours
    status_on_connection: float = 0.6  # share of unit connections carrying a status tagging
    many_connections_fraction: float = 0.003  # people with > 25 connections (paging)
    many_taggings_fraction: float = 0.005  # people with > 25 taggings (paging)


@dataclass
class TruthRow:
    person_id: str
    reasons: list[str]
    outdated_tagging_ids: list[str]
    inactive: bool
    unit_name: str | None
    membership_type: str | None
    membership_status: str | None
    scenario: str


@dataclass
class CampaignData:
    """Everything the simulator serves, in plain dicts so it round-trips through JSON."""

    campaign_id: str
    campaign_name: str
    subdomain: str
    entities: dict[str, dict[str, Any]] = field(default_factory=dict)
    entity_order: list[str] = field(default_factory=list)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    tag_order: list[str] = field(default_factory=list)
    taggings: dict[str, dict[str, Any]] = field(default_factory=dict)
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)
    scenario_of: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> CampaignData:
        return cls(**json.loads(path.read_text()))

    # -- ground truth ----------------------------------------------------------------------

    def person_ids(self) -> list[str]:
        return [e for e in self.entity_order if self.entities[e]["entity_type"].lower() == "person"]

    def modified_since(self, since: datetime | None) -> set[str]:
        ids = set(self.person_ids())
        if since is None:
            return ids
        return {p for p in ids if parse_ts(self.entities[p]["modified"]) > since}

    def expected_mismatches(self, since: datetime | None = None) -> dict[str, TruthRow]:
        scope = self.modified_since(since)
        return {pid: TruthRow(**row) for pid, row in self.truth.items() if pid in scope}


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class _Builder:
    def __init__(self, cfg: SeedConfig, now: datetime):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.now = now
        self._browser_n = 20000
        self.data = CampaignData(
            campaign_id=self.uid(), campaign_name="Guild Membership 2026", subdomain="simulated"
        )
        self.tag_by_key: dict[tuple[str, str], str] = {}

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def stamp(self, recent: bool = False) -> str:
        if recent:
            ago = timedelta(seconds=self.rng.uniform(60, 23 * 3600))
        else:
            ago = timedelta(days=self.rng.uniform(2, 400))
        return iso(self.now - ago)

    def entity(self, entity_type: str, **fields: Any) -> str:
        eid = self.uid()
        self._browser_n += 1
        created = self.stamp()
        self.data.entities[eid] = {
            "id": eid,
            "entity_type": entity_type,
            "created": created,
            "modified": created,
            "browser_n": self._browser_n,
            "custom_ids": [],
            **fields,
        }
        self.data.entity_order.append(eid)
        return eid

    def tag(self, section: str, field_name: str, value: str) -> str:
        key = (field_name, value)
        if key not in self.tag_by_key:
            tid = self.uid()
            self.data.tags[tid] = {
                "id": tid,
                "section": section,
                "field": field_name,
                "name": value,
                "field_type": "standard",
                "created": self.stamp(),
            }
            self.data.tag_order.append(tid)
            self.tag_by_key[key] = tid
        return self.tag_by_key[key]

    def tagging(self, item_type: str, item_id: str, section: str, field_name: str, value: str) -> str:
        tgid = self.uid()
        self.data.taggings[tgid] = {
            "id": tgid,
            "tag_id": self.tag(section, field_name, value),
            "item_type": item_type,
            "item_id": item_id,
            "created": self.stamp(),
        }
        return tgid

    def connect(self, person: str, other: str, ctype: str, inactive: bool = False) -> str:
        cid = self.uid()
        self.data.connections[cid] = {
            "id": cid,
            "a": person,
            "b": other,
            "type": ctype,
            "inactive": inactive,
            "created": self.stamp(),
        }
        return cid


def generate_campaign(cfg: SeedConfig = SeedConfig(), now: datetime | None = None) -> CampaignData:
    """Build a campaign of ``cfg.people`` people across ``cfg.units`` units, with planted drift."""
    b = _Builder(cfg, now or datetime.now(UTC))
    rng = b.rng
    depts = rng.sample(DEPARTMENTS * (cfg.units // len(DEPARTMENTS) + 1), cfg.units)
    units = {
        b.entity("Unit", name=f"Local {101 + i} {dept}"): f"Local {101 + i} {dept}"
        for i, dept in enumerate(depts)
    }
    unit_ids = list(units)
    worksites = [b.entity("Worksite", name=f"Site {i + 1}") for i in range(cfg.worksites)]
    # Register the catalog up front (real campaigns have every response defined).
    for name in units.values():
        b.tag(MEMBERSHIP_SECTION, UNIT_FIELD, name)
    for t in MEMBERSHIP_TYPES:
        b.tag(MEMBERSHIP_SECTION, TYPE_FIELD, t)
    for s in ("Active", "Inactive"):
        b.tag(MEMBERSHIP_SECTION, STATUS_FIELD, s)

    names = list(SCENARIOS)
    weights = list(SCENARIOS.values())
    for _ in range(cfg.people):
        scenario = rng.choices(names, weights)[0]
        _plant_person(b, scenario, units, unit_ids, worksites)
    return b.data


def _plant_person(
    b: _Builder, scenario: str, units: dict[str, str], unit_ids: list[str], worksites: list[str]
) -> None:
    rng = b.rng
    cfg = b.cfg
    pid = b.entity(
        "Person" if rng.random() < 0.7 else "person",
        given_name=rng.choice(GIVEN),
        family_name=rng.choice(FAMILY),
    )
    if rng.random() < 0.1:  # a custom identifier listed before the native one
        b.data.entities[pid]["custom_ids"] = [f"custom_id:{rng.randint(1000, 99999)}"]
    b.data.scenario_of[pid] = scenario

    unit = rng.choice(unit_ids)
    other_unit = rng.choice([u for u in unit_ids if u != unit])
    mtype = rng.choices(MEMBERSHIP_TYPES, TYPE_WEIGHTS)[0]
    other_type = rng.choice([t for t in MEMBERSHIP_TYPES if t != mtype])
    with_status = rng.random() < cfg.status_on_connection or scenario in (
        "status_outdated",
        "former_member_consistent",
        "former_member_stale",
    )

    M = MEMBERSHIP_SECTION

    def person_tag(field_name: str, value: str) -> str:
        return b.tagging("person", pid, M, field_name, value)

    def unit_connection(unit_id: str, inactive: bool, type_value: str | None, status: str | None) -> str:
        cid = b.connect(pid, unit_id, PEOPLE_UNITS, inactive)
        if type_value is not None:
            b.tagging("connection", cid, M, TYPE_FIELD, type_value)
        if status is not None:
            b.tagging("connection", cid, M, STATUS_FIELD, status)
        return cid

    reasons: list[str] = []
    outdated: list[str] = []
    inactive = False
    expected_type: str | None = mtype
    expected_status: str | None = "Active" if with_status else None
    judged = True

    if scenario == "no_unit_connection":
        judged = False
        if rng.random() < 0.5:
            person_tag(UNIT_FIELD, units[unit])  # a prospect tagged by hand; no truth to judge by
        if rng.random() < 0.5:
            b.connect(pid, rng.choice(worksites), PEOPLE_WORKSITES)
    elif scenario in ("former_member_consistent", "former_member_stale"):
        inactive = True
        expected_status = "Inactive"
        unit_connection(unit, True, mtype, "Inactive")
        person_tag(UNIT_FIELD, units[unit])
        person_tag(TYPE_FIELD, mtype)
        if scenario == "former_member_stale":
            outdated.append(person_tag(STATUS_FIELD, "Active"))
            reasons.append("status_outdated")
        else:
            person_tag(STATUS_FIELD, "Inactive")
    elif scenario == "two_active_units":
        unit_connection(unit, False, mtype, expected_status)
        unit_connection(other_unit, False, other_type, expected_status)
        person_tag(UNIT_FIELD, units[unit])
        person_tag(UNIT_FIELD, units[other_unit])
        judged = False
    elif scenario == "former_member_of_two_units":
        # Order matters here: only the person's own connection listing says which comes first.
        inactive = True
        expected_status = "Inactive"
        unit_connection(unit, True, mtype, "Inactive")
        unit_connection(other_unit, True, other_type, "Inactive")
        outdated.append(person_tag(UNIT_FIELD, units[other_unit]))
        reasons.append("unit_outdated")
        person_tag(TYPE_FIELD, mtype)
        person_tag(STATUS_FIELD, "Inactive")
    elif scenario == "no_type_on_connection":
        expected_type = None
        unit_connection(unit, False, None, expected_status)
        person_tag(UNIT_FIELD, units[unit])
        person_tag(TYPE_FIELD, rng.choice(MEMBERSHIP_TYPES))  # unjudgeable, left alone
        if with_status:
            person_tag(STATUS_FIELD, "Active")
    else:
        if scenario == "unit_transfer":
            # The old, inactive connection comes first: the rule must pick the first *active* one.
            unit_connection(other_unit, True, other_type, "Inactive" if with_status else None)
        unit_connection(unit, False, mtype, expected_status)
        if scenario in ("unit_transfer", "unit_and_type"):
            outdated.append(person_tag(UNIT_FIELD, units[other_unit]))
            reasons.append("unit_outdated")
        elif scenario == "stale_duplicate_unit":
            person_tag(UNIT_FIELD, units[unit])
            outdated.append(person_tag(UNIT_FIELD, units[other_unit]))
            reasons.append("unit_outdated")
        elif scenario == "unit_missing":
            reasons.append("unit_missing")
        else:
            person_tag(UNIT_FIELD, units[unit])

        if scenario in ("type_changed", "unit_and_type"):
            outdated.append(person_tag(TYPE_FIELD, other_type))
            reasons.append("type_outdated")
        elif scenario == "type_missing":
            reasons.append("type_missing")
        else:
            person_tag(TYPE_FIELD, mtype)

        if with_status:
            if scenario == "status_outdated":
                outdated.append(person_tag(STATUS_FIELD, "Inactive"))
                reasons.append("status_outdated")
            else:
                person_tag(STATUS_FIELD, "Active")

    # Distractors that a correct scan must page through or ignore.
    if rng.random() < 0.2:
        b.connect(pid, rng.choice(worksites), PEOPLE_WORKSITES)
    if rng.random() < cfg.many_connections_fraction:
        for _ in range(rng.randint(26, 40)):
            b.connect(pid, rng.choice(worksites), PEOPLE_WORKSITES, inactive=rng.random() < 0.5)
    extra = rng.randint(26, 35) if rng.random() < cfg.many_taggings_fraction else rng.randint(0, 3)
    keys = list(DISTRACTORS)
    for _ in range(extra):
        section, field_name = rng.choice(keys)
        b.tagging("person", pid, section, field_name, rng.choice(DISTRACTORS[(section, field_name)]))

    recent = rng.random() < cfg.recent_fraction
    b.data.entities[pid]["modified"] = b.stamp(recent=recent)

    if judged and reasons:
        b.data.truth[pid] = asdict(
            TruthRow(
                person_id=pid,
                reasons=reasons,
                outdated_tagging_ids=sorted(outdated),
                inactive=inactive,
                unit_name=units[unit],
                membership_type=expected_type,
                membership_status=expected_status,
                scenario=scenario,
            )
        )
