"""Rows in the sync's shape ``{kennitala, name, email, status}`` <-> the stand-in's models.

What the models can hold is stored in them (status as fee payment / suspension); whatever they
cannot (a kennitala as a JSON number, a null or unknown status, NUL bytes, a missing key) is kept
in ``served_overrides`` / ``served_omit`` and served verbatim, so a row comes back exactly as
planted. Keys other than the four (``ssn``, ``contact_info``, ...) are served as given, and a
``_raw`` dict is merged into the served row as is.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from django.db.models import Exists, OuterRef
from django.utils import timezone

from .models import ACTIVE, SUSPENDED, UNPAID, Comrade, ContactInfo, MembershipFee

KEYS = ("kennitala", "name", "email", "status")
EXTRA, RAW = "_extra", "_raw"
MODEL_STATUSES = (ACTIVE, UNPAID, SUSPENDED)


def _storable(value: Any) -> bool:
    return value is None or (isinstance(value, str) and "\x00" not in value)


def plan(row: dict[str, Any]) -> dict[str, Any]:
    """How to store ``row``: model values, the fee to record, and what must be served verbatim."""
    overrides: dict[str, Any] = {}
    omit = [k for k in KEYS if k not in row]
    ssn = row.get("kennitala")
    if not _storable(ssn):
        overrides["kennitala"], ssn = ssn, None
    name = row.get("name")
    if name is None or not _storable(name):
        overrides["name"], name = name, ""
    email = row.get("email")
    if not _storable(email):
        overrides["email"], email = email, None
    status = row.get("status", ACTIVE)
    if status not in MODEL_STATUSES:
        overrides["status"], status = status, ACTIVE
    extra = {k: v for k, v in row.items() if k not in KEYS and k != RAW}
    if extra:
        overrides[EXTRA] = extra
    if isinstance(row.get(RAW), dict):
        overrides[RAW] = row[RAW]
    return {
        "ssn": ssn,
        "name": name,
        "email": email,
        "contact": "email" in row,
        "paid": status == ACTIVE,
        "suspended": status == SUSPENDED,
        "served_overrides": overrides or None,
        "served_omit": omit or None,
    }


def _fee(comrade: Comrade, paid: bool, today: date) -> MembershipFee:
    return MembershipFee(comrade=comrade, year=today.year, date_paid=today if paid else None)


def create_many(rows: list[dict[str, Any]]) -> list[Comrade]:
    """Bulk-load ``rows`` in order (no signals: a load, not a change anyone made)."""
    today = timezone.localdate()
    plans = [plan(r) for r in rows]
    comrades = Comrade.objects.bulk_create(
        [
            Comrade(
                ssn=p["ssn"],
                name=p["name"],
                suspended=p["suspended"],
                served_overrides=p["served_overrides"],
                served_omit=p["served_omit"],
            )
            for p in plans
        ],
        batch_size=500,
    )
    ContactInfo.objects.bulk_create(
        [
            ContactInfo(comrade=c, email=p["email"])
            for c, p in zip(comrades, plans, strict=True)
            if p["contact"]
        ],
        batch_size=500,
    )
    MembershipFee.objects.bulk_create(
        [_fee(c, p["paid"], today) for c, p in zip(comrades, plans, strict=True)], batch_size=500
    )
    return comrades


def save_row(comrade: Comrade | None, row: dict[str, Any]) -> Comrade:
    """Create or change one comrade as staff would in the admin (signals fire)."""
    p = plan(row)
    comrade = comrade or Comrade()
    comrade.ssn, comrade.name, comrade.suspended = p["ssn"], p["name"], p["suspended"]
    comrade.served_overrides, comrade.served_omit = p["served_overrides"], p["served_omit"]
    comrade.save()
    contact = ContactInfo.objects.filter(comrade=comrade).first()
    if p["contact"]:
        if contact is None:
            ContactInfo.objects.create(comrade=comrade, email=p["email"])
        elif contact.email != p["email"]:
            contact.email = p["email"]
            contact.save()
    elif contact is not None:
        contact.delete()
    today = timezone.localdate()
    fee = MembershipFee.objects.filter(comrade=comrade, year=today.year).first()
    wanted = today if p["paid"] else None
    if fee is None:
        _fee(comrade, p["paid"], today).save()
    elif (fee.date_paid is None) != (wanted is None):
        fee.date_paid = wanted
        fee.save()
    return comrade


def exported() -> list[tuple[int, dict[str, Any]]]:
    """(id, row as planted) of every listed comrade, in listing order: the inverse of ``plan``.

    One query of plain values: the tests read this after every change.
    """
    year = timezone.localdate().year
    paid = MembershipFee.objects.filter(comrade=OuterRef("pk"), year=year, date_paid__isnull=False)
    values = (
        Comrade.objects.filter(deleted_at__isnull=True)
        .annotate(paid=Exists(paid))
        .order_by("id")
        .values(
            "id",
            "ssn",
            "name",
            "suspended",
            "paid",
            "served_overrides",
            "served_omit",
            "contact_info__id",
            "contact_info__email",
        )
    )
    out = []
    for v in values:
        row: dict[str, Any] = {
            "kennitala": v["ssn"],
            "name": v["name"],
            "email": v["contact_info__email"],
            "status": SUSPENDED if v["suspended"] else ACTIVE if v["paid"] else UNPAID,
        }
        overrides = dict(v["served_overrides"] or {})
        row.update(overrides.pop(EXTRA, {}))
        raw = overrides.pop(RAW, None)
        row.update(overrides)
        for key in v["served_omit"] or []:
            row.pop(key, None)
        if v["contact_info__id"] is None:
            row.pop("email", None)
        if raw is not None:
            row[RAW] = raw
        out.append((v["id"], row))
    return out


def listed() -> Any:
    """The comrades an eligible-members listing shows, with what status() needs prefetched."""
    from django.db.models import Prefetch

    year = timezone.localdate().year
    return (
        Comrade.objects.filter(deleted_at__isnull=True)
        .select_related("contact_info")
        .prefetch_related(Prefetch("fees", queryset=MembershipFee.objects.filter(year=year)))
        .order_by("id")
    )
