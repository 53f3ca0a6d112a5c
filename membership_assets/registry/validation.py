"""Validate the Django registry's member rows before they may change anyone's voting eligibility.

Invalid rows are quarantined with reasons, never dropped silently, and never cause a removal:
every kennitala we can recognise in a rejected row is *protected*, so an existing member whose
row came back malformed keeps their current standing until the row is fixed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stdnum import exceptions as stdnum_errors
from stdnum.is_ import kennitala as stdnum_kennitala

from ..privacy import pseudonym
from .records import FIELD_LIMITS

ACTIVE, SUSPENDED, REMOVED = "active", "suspended", "removed"

# Registry status -> local membership status. "removed" means "listed, but not a member":
# treated like absence (the member is soft-deleted), yet explicit rather than inferred.
DEFAULT_STATUS_MAP: dict[str, str] = {
    "active": ACTIVE,
    "suspended": SUSPENDED,
    "unpaid": SUSPENDED,  # Ekklesia: still a member, but not in good standing to vote
    "inactive": REMOVED,
    "deleted": REMOVED,
}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# How a listing without any status field is read (REGISTRY_MISSING_STATUS). Ekklesia's
# /felagar/api/full/ has no status and lists soft-deleted comrades too, so "every listed row is
# active" must be chosen on purpose, never assumed.
MISSING_STATUS_REJECT, MISSING_STATUS_ACTIVE = "reject", "active"
MISSING_STATUS_RULES = (MISSING_STATUS_REJECT, MISSING_STATUS_ACTIVE)

# Control characters (C0/C1, NUL and ANSI escapes included) and the bidi controls that can make a
# name display as something else. A name carrying one is rejected with a reason (and its member
# protected), never silently rewritten: a voting roll shows names exactly as the registry has them.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def has_control_characters(text: str) -> bool:
    return _CONTROL.search(text) is not None


def printable(value: Any, limit: int) -> str | None:
    """A raw value made safe to store in a column of ``limit`` characters: control and bidi
    characters escaped (Postgres text cannot hold NUL), then cut to ``limit`` with a marker."""
    if value is None:
        return None
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value)[: limit * 4])
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def kennitala_text(value: Any) -> str | None:
    """The registry's kennitala as text. A JSON number (DRF IntegerField) has lost the leading
    zero of days 1-9, so a 9-digit integral number gets it back; the checksum still decides."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, float):
        if value != value:  # NaN: pandas' missing value
            return None
        if not value.is_integer():
            return repr(value)
        value = int(value)
    if isinstance(value, int) or type(value).__name__.startswith(("int", "uint")):
        return _zero_lost(str(int(value)))
    return str(value)


def _zero_lost(digits: str) -> str:
    # A kennitala starts with its day (01-31, or 41-71 for organisations): at most one zero lost.
    return "0" + digits if len(digits) == 9 and digits.isdigit() else digits


@dataclass(frozen=True)
class Member:
    kennitala: str
    name: str
    email: str | None
    status: str


@dataclass(frozen=True)
class Reject:
    row_number: int
    kennitala_raw: str | None
    kennitala: str | None  # normalized, when the raw value could be read as 10 digits
    name: str | None
    email: str | None
    status: str | None
    reasons: tuple[str, ...]


@dataclass
class ValidationResult:
    members: list[Member] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    duplicates_merged: int = 0

    @property
    def protected(self) -> set[str]:
        """Kennitalas that appear in rejected rows: never removed on the strength of this list."""
        return {r.kennitala for r in self.rejects if r.kennitala}


def kennitala_key(value: Any) -> str | None:
    """The 10 digits a raw kennitala stands for (hyphens, spaces and a lost leading zero
    forgiven), or None: cheap, for telling who a listing names before validating it."""
    if isinstance(value, str) and len(value) == 10 and value.isdigit():
        return value  # the common case, a million times per sync
    text = kennitala_text(value)
    if text is None:
        return None
    digits = _zero_lost(re.sub(r"[\s-]", "", text))
    return digits if re.fullmatch(r"\d{10}", digits) else None


def kennitala_problem(value: str) -> tuple[str | None, str | None]:
    """(normalized kennitala, None) when valid for a person, else (best guess, reason).

    The guess ties a malformed row to the member it most likely is (its 10 digits, or 9 digits
    that lost their leading zero), so that member is protected, not removed.
    """
    digits = re.sub(r"[\s-]", "", value)
    guess = kennitala_key(digits)
    try:
        compact = stdnum_kennitala.validate(digits)
    except stdnum_errors.InvalidChecksum:
        return guess, "kennitala_invalid_checksum"
    except stdnum_errors.InvalidComponent:
        return guess, "kennitala_invalid_date"
    except stdnum_errors.ValidationError:
        return guess, "kennitala_invalid_format"
    if int(compact[:2]) > 31:
        # Organisations add 40 to the day; members are people.
        return compact, "kennitala_is_organisation"
    return compact, None


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def field_limits() -> dict[str, int]:
    """Longest value each field may have: the members database's column sizes (one source)."""
    return dict(FIELD_LIMITS)


def _text_problems(field_name: str, value: Any, limit: int) -> list[str]:
    """Reasons a name/email/status value cannot be stored as it is, on either backend."""
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"{field_name}_not_text"]
    if len(value.strip()) > limit:
        return [f"{field_name}_too_long"]
    if has_control_characters(value):
        return [f"{field_name}_control_characters"]
    return []


def _status_of(
    row: Mapping[str, Any], status_map: Mapping[str, str], missing_status: str, limit: int
) -> tuple[str | None, str | None]:
    """(local status, None) or (None, reason). A present status must be a known, non-blank word."""
    if not row.get("status_given", True):
        return (ACTIVE, None) if missing_status == MISSING_STATUS_ACTIVE else (None, "status_field_absent")
    value = row.get("status")
    if value is not None and not isinstance(value, str):
        return None, "status_not_text"
    raw = _text(value)
    if raw is None:
        # Blank or null is not "active": it would make a suspended member eligible.
        return None, "status_missing"
    status = status_map.get(raw.lower())
    if status is None:
        # A category only: the raw value (which may be a name or a kennitala in the wrong field)
        # stays in the quarantine table's status column.
        return None, "status_unknown"
    return status, None


def validate_members(
    rows: Iterable[Mapping[str, Any]],
    status_map: Mapping[str, str] = DEFAULT_STATUS_MAP,
    *,
    missing_status: str = MISSING_STATUS_REJECT,
    limits: Mapping[str, int] | None = None,
) -> ValidationResult:
    """Split raw rows (row_number, kennitala, name, email, status[, status_given]) into members
    and rejects. ``status_given`` False means the row had no status field at all (see
    ``missing_status``). Every value that could not be stored the same way on SQLite and
    Postgres (too long for its column, NUL or other control characters) is a reject reason."""
    if missing_status not in MISSING_STATUS_RULES:
        raise ValueError(f"missing_status must be one of {MISSING_STATUS_RULES}, not {missing_status!r}")
    limits = field_limits() if limits is None else limits
    result = ValidationResult()
    candidates: list[tuple[Mapping[str, Any], Member]] = []
    for row in rows:
        raw_kt = _text(kennitala_text(row.get("kennitala")))
        reasons: list[str] = []
        for f in ("name", "email", "status"):
            reasons += _text_problems(f, row.get(f), limits[f])
        name, email = _text(row.get("name")), _text(row.get("email"))
        kt: str | None = None
        if raw_kt is None:
            reasons.append("kennitala_missing")
        elif len(raw_kt) > limits["kennitala_raw"] or has_control_characters(raw_kt):
            reasons.append("kennitala_invalid_format")
        else:
            kt, problem = kennitala_problem(raw_kt)
            if problem:
                reasons.append(problem)
        if name is None:
            reasons.append("name_missing")
        if email is not None and not any(r.startswith("email_") for r in reasons):
            email = email.lower()
            if not _EMAIL.match(email):
                reasons.append("email_invalid")
        status, status_problem = _status_of(row, status_map, missing_status, limits["status"])
        if status_problem and not any(r.startswith("status_") for r in reasons):
            reasons.append(status_problem)
        if reasons:
            result.rejects.append(_reject(row, kt, reasons, limits))
            continue
        candidates.append((row, Member(kennitala=kt, name=name, email=email, status=status)))

    by_kt: dict[str, list[tuple[Mapping[str, Any], Member]]] = defaultdict(list)
    for row, member in candidates:
        by_kt[member.kennitala].append((row, member))
    for kt, group in by_kt.items():
        distinct = {m for _, m in group}
        if len(distinct) == 1:
            result.members.append(group[0][1])
            result.duplicates_merged += len(group) - 1
        else:
            # Two different people (or versions) under one kennitala: nobody can say which is right.
            for row, _ in group:
                result.rejects.append(_reject(row, kt, ["duplicate_kennitala_conflict"], limits))
    result.rejects.sort(key=lambda r: r.row_number)
    return result


def _reject(row: Mapping[str, Any], kt: str | None, reasons: list[str], limits: Mapping[str, int]) -> Reject:
    """A quarantined row whose raw values fit the rejects table (escaped, cut to column size)."""
    return Reject(
        row_number=int(row.get("row_number", -1)),
        kennitala_raw=printable(_text(kennitala_text(row.get("kennitala"))), limits["kennitala_raw"]),
        kennitala=kt,
        name=printable(_text(row.get("name")), limits["name"]),
        email=printable(_text(row.get("email")), limits["email"]),
        status=printable(_text(row.get("status")), limits["status"]),
        reasons=tuple(reasons),
    )


def mask(kennitala: str | None) -> str:
    """For logs and metadata: the member's keyed pseudonym, which reveals not even the birth date."""
    return pseudonym(kennitala)
