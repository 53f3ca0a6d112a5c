"""Django member-registry simulator: DRF-paginated eligible members over real HTTP.

Imitates the Ekklesia Django API (shared/reference §3c): ``Authorization: Token <key>`` (or
Bearer), ``{count, next, previous, results}`` pages with ``page``/``page_size`` (404 past the
last page, as DRF does), or the plain ``{"members": [...]}`` shape. The listing carries an ETag
derived from the data version, answering 304 to ``If-None-Match``, so a sensor can poll cheaply.

The seed plants invalid rows (bad checksums, impossible dates, organisations' kennitalas,
duplicates, unknown statuses...) and records which rows must be rejected and why.
"""

from __future__ import annotations

import json
import math
import random
import threading
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .http import Request, Response, SimulatedService, SimulatorServer, json_error

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
    plant(_person(rng, make_kennitala(rng), status="honorary"), ["status_unknown:honorary"])
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


class DjangoRegistrySimulator(SimulatedService):
    def __init__(
        self,
        data: RegistryData | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        auth_scheme: str = "Token",
        shape: str = "paginated",
        default_page_size: int = 100,
        max_page_size: int = 500,
        rate_limit: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        etag: bool = True,
    ):
        self.data = data or generate_registry()
        self.token = token
        self.auth_scheme = auth_scheme
        self.shape = shape
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.etag = etag
        self._lock = threading.RLock()
        self.server = SimulatorServer(self.handle, name="django", host=host, port=port, rate_limit=rate_limit)

    @property
    def base_url(self) -> str:
        return self.server.url

    # -- mutations (what staff do in the Django admin) ---------------------------------------------

    def set_members(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self.data.members = [dict(r) for r in rows]
            self.data.version += 1

    def remove(self, kennitala: str) -> None:
        with self._lock:
            self.data.members = [
                m for m in self.data.members if str(m["kennitala"]).replace("-", "") != kennitala
            ]
            self.data.version += 1

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.data.members.append(dict(row))
            self.data.version += 1

    def update(self, kennitala: str, **fields: Any) -> None:
        with self._lock:
            for m in self.data.members:
                if str(m["kennitala"]).replace("-", "") == kennitala:
                    m.update(fields)
            self.data.version += 1

    def churn(self, step: int, fraction: float = 0.01) -> dict[str, list[str]]:
        """One month of membership life: some leave, some join, some change email.

        Returns the kennitalas of each group, so tests can derive what a sync must do.
        """
        rng = random.Random(self.data.seed * 1000 + step)

        def kt_of(m: dict[str, Any]) -> str:
            return str(m["kennitala"]).replace("-", "")

        with self._lock:
            valid = set(self.data.truth.valid_kennitalas)
            listed = sorted({kt_of(m) for m in self.data.members} & valid)
            n = max(1, int(len(listed) * fraction))
            left = rng.sample(listed, n)
            self.data.members = [m for m in self.data.members if kt_of(m) not in set(left)]
            stay = sorted(set(listed) - set(left))
            changed = rng.sample(stay, n)
            for m in self.data.members:
                if kt_of(m) in set(changed):
                    m["email"] = m["email"].replace("@", f".{step}@")
            known = {kt_of(m) for m in self.data.members}
            joined: list[str] = []
            while len(joined) < n:
                kt = make_kennitala(rng)
                if kt in known:
                    continue
                self.data.members.append(_person(rng, kt))
                self.data.truth.valid_kennitalas.append(kt)
                known.add(kt)
                joined.append(kt)
            self.data.version += 1
        return {"left": sorted(left), "joined": sorted(joined), "changed": sorted(changed)}

    # -- HTTP -----------------------------------------------------------------------------------

    def _etag(self) -> str:
        return f'"members-v{self.data.version}-{len(self.data.members)}"'

    def handle(self, req: Request) -> Response:
        auth = req.header("authorization") or ""
        if auth != f"{self.auth_scheme} {self.token}":
            return Response(status=401, body={"detail": "Invalid token."}, route="unauthorized")
        if req.path.rstrip("/") != "/api/members/eligible":
            return Response(status=404, body={"detail": "Not found."}, route="not_found")
        if req.method not in ("GET", "HEAD"):
            return json_error(405, "Method not allowed")
        with self._lock:
            etag = self._etag()
            headers = {"ETag": etag} if self.etag else {}
            if self.etag and req.header("if-none-match") == etag:
                return Response(status=304, body=None, headers=headers, route="not_modified")
            if self.shape == "plain":
                return Response(
                    body={"members": list(self.data.members)}, headers=headers, route="members_page"
                )
            try:
                page = int(req.query.get("page", "1"))
                size = min(int(req.query.get("page_size", self.default_page_size)), self.max_page_size)
            except ValueError:
                return Response(status=404, body={"detail": "Invalid page."}, route="members_page")
            total = len(self.data.members)
            pages = max(1, math.ceil(total / size))
            if page < 1 or page > pages:
                return Response(status=404, body={"detail": "Invalid page."}, route="members_page")
            chunk = self.data.members[(page - 1) * size : page * size]

            def link(p: int) -> str | None:
                if p < 1 or p > pages:
                    return None
                return f"{self.base_url}/api/members/eligible/?page={p}&page_size={size}"

            body = {"count": total, "next": link(page + 1), "previous": link(page - 1), "results": chunk}
            return Response(body=body, headers=headers, route="members_page")
