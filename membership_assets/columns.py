"""A record's columns, read off its dataclass: the one definition its tables and frames derive from.

A field's column type comes from its annotation (str -> STRING, int -> INT64, bool -> BOOL,
float -> FLOAT64, datetime -> TIMESTAMP). ``column()`` states what an annotation cannot: another
type (an ISO string archived as a TIMESTAMP, a count of a tuple), a description, and for the
members database the longest value a column holds, its primary key and NOT NULL.
``not_a_column()`` marks a field no table or frame carries.

Stdlib only: the database tables (SQLAlchemy), the warehouse schema and the asset pages each
translate these columns into their own types.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

# Column types: BigQuery's names, plus JSON (a JSON document; the warehouse keeps it as text).
TYPES = ("STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP", "JSON")
_FROM_ANNOTATION = (("bool", "BOOL"), ("int", "INT64"), ("float", "FLOAT64"), ("str", "STRING"))
_FROM_ANNOTATION += (("datetime", "TIMESTAMP"),)
# How the asset pages (dagster/column_schema) name each type.
UI_TYPES = {
    "STRING": "string",
    "INT64": "int",
    "FLOAT64": "float",
    "BOOL": "bool",
    "TIMESTAMP": "timestamp",
    "JSON": "json",
}
_KEY = "membership_assets.column"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of TYPES
    description: str = ""
    length: int | None = None  # members DB: the longest value the column holds (None: unbounded)
    primary_key: bool = False
    required: bool = False  # members DB: NOT NULL

    @property
    def ui_type(self) -> str:
        return UI_TYPES[self.type]


@dataclass(frozen=True)
class _Spec:
    type: str | None
    description: str
    length: int | None
    primary_key: bool
    required: bool


def column(
    type: str | None = None,
    description: str = "",
    *,
    length: int | None = None,
    primary_key: bool = False,
    required: bool = False,
    default: Any = MISSING,
    default_factory: Any = MISSING,
) -> Any:
    """A record field that is a column; ``type`` only where the annotation does not say it."""
    if type is not None and type not in TYPES:
        raise ValueError(f"unknown column type {type!r}; one of {TYPES}")
    spec = _Spec(type, description, length, primary_key, required)
    return field(default=default, default_factory=default_factory, metadata={_KEY: spec})


def not_a_column(*, default: Any = MISSING, default_factory: Any = MISSING) -> Any:
    """A record field that no table or frame of the record carries."""
    return field(default=default, default_factory=default_factory, metadata={_KEY: None})


def record_columns(cls: type) -> tuple[Column, ...]:
    """The columns of record dataclass ``cls``, in field order."""
    return tuple(_column(cls, f) for f in fields(cls) if not _excluded(f))


def column_names(cls: type) -> list[str]:
    return [c.name for c in record_columns(cls)]


def column_default(cls: type, name: str) -> Any:
    """The field's plain default (MISSING when it has none or a factory)."""
    return next(f.default for f in fields(cls) if f.name == name)


def _excluded(f: Field) -> bool:
    return _KEY in f.metadata and f.metadata[_KEY] is None


def _column(cls: type, f: Field) -> Column:
    spec = f.metadata.get(_KEY) or _Spec(None, "", None, False, False)
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    kind = spec.type or _type_of(annotation)
    if kind is None:
        raise TypeError(f"{cls.__name__}.{f.name}: say its column type, column(type=...), for {f.type}")
    return Column(f.name, kind, spec.description, spec.length, spec.primary_key, spec.required)


def _type_of(annotation: str) -> str | None:
    for python, kind in _FROM_ANNOTATION:
        if annotation == python or annotation.startswith(f"{python} |"):
            return kind
    return None
