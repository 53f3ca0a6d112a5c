"""Seed data of the local member registry: members with valid kennitalas plus planted bad rows.

The seed plants invalid rows (bad checksums, impossible dates, organisations' kennitalas,
duplicates, unknown statuses...) and records which rows must be rejected and why. Rows use the
sync's own shape ``{kennitala, name, email, status}``; the Django stand-in stores them in its
models and serves them the way Ekklesia's API does.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

DEFAULT_TOKEN = "simulated-django-token"
WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)
FIRST = [
    "Anna",
    "Jón",
    "Guðrún",
    "Sigurður",
    "Kristín",
    "Ólafur",
    "Helga",
    "Einar",
    "Sigríður",
    "Gunnar",
    "Margrét",
    "Magnús",
    "Katrín",
    "Stefán",
    "Ragnheiður",
    "Björn",
]
LAST = [
    "Jónsdóttir",
    "Jónsson",
    "Sigurðardóttir",
    "Sigurðsson",
    "Guðmundsdóttir",
    "Guðmundsson",
    "Ólafsdóttir",
    "Ólafsson",
    "Einarsdóttir",
    "Einarsson",
    "Kristjánsdóttir",
    "Magnússon",
]


def check_digit(first8: str) -> int | None:
    """Kennitala check digit (None when the remainder makes one impossible)."""
    r = sum(int(d) * w for d, w in zip(first8, WEIGHTS, strict=True)) % 11
    c = 0 if r == 0 else 11 - r
    return None if c == 10 else c


def make_kennitala(rng: random.Random, born: date | None = None, organisation: bool = False) -> str:
    while True:
        d = born or (date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 66)))
        day = d.day + (40 if organisation else 0)
        first8 = f"{day:02d}{d.month:02d}{d.year % 100:02d}{rng.randint(20, 99):02d}"
        c = check_digit(first8)
        if c is not None:
            return f"{first8}{c}{9 if d.year < 2000 else 0}"


@dataclass
class RegistryTruth:
    """Which rows the registry serves are invalid, and which members must end up eligible."""

    rejected_rows: dict[str, list[str]] = field(default_factory=dict)  # kennitala_raw -> reasons
    valid_kennitalas: list[str] = field(default_factory=list)


@dataclass
class RegistryData:
    members: list[dict[str, Any]] = field(default_factory=list)
    truth: RegistryTruth = field(default_factory=RegistryTruth)
    version: int = 1
    seed: int = 5

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), ensure_ascii=False))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RegistryData:
        raw = json.loads(path.read_text())
        raw["truth"] = RegistryTruth(**raw["truth"])
        return cls(**raw)


def _person(rng: random.Random, kennitala: str, status: str = "active") -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = f"{first}.{last}".lower().encode("ascii", "ignore").decode() or "member"
    return {
        "kennitala": kennitala,
        "name": f"{first} {last}",
        "email": f"{local}{rng.randint(1, 9999)}@example.is",
        "status": status,
    }


def generate_registry(members: int = 2000, *, seed: int = 5, invalid: bool = True) -> RegistryData:
    """``members`` valid members (some unpaid/suspended) plus, optionally, planted invalid rows."""
    rng = random.Random(seed)
    data = RegistryData(seed=seed)
    seen: set[str] = set()
    while len(data.members) < members:
        kt = make_kennitala(rng)
        if kt in seen:
            continue
        seen.add(kt)
        status = rng.choices(["active", "unpaid", "suspended"], [90, 7, 3])[0]
        row = _person(rng, kt, status)
        if rng.random() < 0.05:
            row["kennitala"] = f"{kt[:6]}-{kt[6:]}"  # written with the customary hyphen: valid
        data.members.append(row)
        data.truth.valid_kennitalas.append(kt)
    if not invalid:
        return data

    def plant(row: dict[str, Any], reasons: list[str]) -> None:
        data.members.insert(rng.randrange(len(data.members) + 1), row)
        data.truth.rejected_rows[str(row["kennitala"])] = reasons

    good = make_kennitala(rng)
    bad_sum = good[:8] + str((int(good[8]) + 1) % 10) + good[9]
    plant(_person(rng, bad_sum), ["kennitala_invalid_checksum"])
    plant(_person(rng, "3102851239"), ["kennitala_invalid_date"])  # 31 February
    plant(_person(rng, "9999123456"), ["kennitala_invalid_format"])  # Ekklesia's "fake" duplicates
    plant(_person(rng, make_kennitala(rng, organisation=True)), ["kennitala_is_organisation"])
    plant(_person(rng, make_kennitala(rng)) | {"name": "  "}, ["name_missing"])
    plant(_person(rng, make_kennitala(rng)) | {"email": "not-an-email"}, ["email_invalid"])
    plant(_person(rng, make_kennitala(rng), status="honorary"), ["status_unknown"])
    # The same person listed twice, identically: merged, not rejected.
    valid = set(data.truth.valid_kennitalas)
    twin = rng.choice([m for m in data.members if str(m["kennitala"]).replace("-", "") in valid])
    data.members.insert(rng.randrange(len(data.members) + 1), dict(twin))
    # Two different people under one kennitala: both rejected, neither trusted.
    clash = make_kennitala(rng)
    for _ in range(2):
        row = _person(rng, clash)
        data.members.insert(rng.randrange(len(data.members) + 1), row)
    data.truth.rejected_rows[clash] = ["duplicate_kennitala_conflict"]
    return data
