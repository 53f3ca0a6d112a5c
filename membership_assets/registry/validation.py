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


def kennitala_problem(value: str) -> tuple[str | None, str | None]:
    """(normalized kennitala, None) when valid for a person, else (best guess, reason)."""
    digits = re.sub(r"[\s-]", "", value)
    guess = digits if re.fullmatch(r"\d{10}", digits) else None
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
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def validate_members(
    rows: Iterable[Mapping[str, Any]], status_map: Mapping[str, str] = DEFAULT_STATUS_MAP
) -> ValidationResult:
    """Split raw rows (row_number, kennitala, name, email, status) into members and rejects."""
    result = ValidationResult()
    candidates: list[tuple[Mapping[str, Any], Member]] = []
    for row in rows:
        raw_kt = _text(row.get("kennitala"))
        name = _text(row.get("name"))
        email = _text(row.get("email"))
        status_raw = _text(row.get("status"))
        reasons: list[str] = []
        kt: str | None = None
        if raw_kt is None:
            reasons.append("kennitala_missing")
        else:
            kt, problem = kennitala_problem(raw_kt)
            if problem:
                reasons.append(problem)
        if name is None:
            reasons.append("name_missing")
        if email is not None:
            email = email.lower()
            if not _EMAIL.match(email):
                reasons.append("email_invalid")
        # The eligible-members endpoint lists members; a row without a status is an active one.
        status = status_map.get((status_raw or ACTIVE).lower())
        if status is None:
            reasons.append(f"status_unknown:{status_raw}")
        if reasons:
            result.rejects.append(_reject(row, kt, reasons))
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
                result.rejects.append(_reject(row, kt, ["duplicate_kennitala_conflict"]))
    result.rejects.sort(key=lambda r: r.row_number)
    return result


def _reject(row: Mapping[str, Any], kt: str | None, reasons: list[str]) -> Reject:
    return Reject(
        row_number=int(row.get("row_number", -1)),
        kennitala_raw=_text(row.get("kennitala")),
        kennitala=kt,
        name=_text(row.get("name")),
        email=_text(row.get("email")),
        status=_text(row.get("status")),
        reasons=tuple(reasons),
    )


def mask(kennitala: str | None) -> str:
    """For logs and metadata: the member's keyed pseudonym, which reveals not even the birth date."""
    return pseudonym(kennitala)
