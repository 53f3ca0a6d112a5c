"""Whether a campaign uses the configured connection type and unit entity type names, by evidence.

The catalog endpoints (``connection_types``, ``entity_types``) only verify: when one answers 404
or reads in a shape not known here, that is evidence missing, not evidence against. The names are
then confirmed from what the scan reads anyway (people's own connections, the unit connection
listings, the people listing's entity types), at no extra request. Only evidence that
contradicts a configured name refuses a scan, and the refusal names what the campaign has.

connection_types.html documents only "``connection.types``: the plural name of the entity type
... Two will always be present", so ``types`` is read as a string per entry or as a list, with a
``name`` of its own or none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

NAME_KEYS = ("name", "action_builder:name", "title")
# entity_types.html spells the singular name field "singular_nane".
ENTITY_NAME_KEYS = (*NAME_KEYS, "singular_name", "singular_nane", "plural_name")


@dataclass(frozen=True)
class CatalogNames:
    """What one catalog endpoint said: the names it lists, or why it is no evidence."""

    names: frozenset[str] = frozenset()
    complete: bool = False  # every entry read in a known shape: a name absent here is absent
    missing_because: str | None = None  # e.g. "404", "an entry in an unknown shape"

    @property
    def usable(self) -> bool:
        return self.missing_because is None


def connection_type_names(raw: Any) -> set[str] | None:
    """A connection type's names: its own name, and "<A> + <B>" (either order) from its two
    entity types. None when the entry says neither in a known shape."""
    if not isinstance(raw, dict):
        return None
    names = {v.strip() for k in NAME_KEYS if isinstance(v := raw.get(k), str) and v.strip()}
    parts = _type_parts(raw.get("connection"))
    if parts is not None and len(parts) == 2:
        names |= {f"{parts[0]} + {parts[1]}", f"{parts[1]} + {parts[0]}"}
    return names or None


def _type_parts(connection: Any) -> list[str] | None:
    """The entity type names under ``connection``: ``[{types: "A"}, {types: "B"}]``,
    ``[{types: ["A", "B"]}]`` or one object; None for any other shape."""
    entries = [connection] if isinstance(connection, dict) else connection
    if not isinstance(entries, list):
        return None
    parts: list[str] = []
    for entry in entries:
        types = entry.get("types") if isinstance(entry, dict) else None
        values = [types] if isinstance(types, str) else types
        if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
            return None
        parts.extend(v.strip() for v in values)
    return parts


def entity_type_names(raw: Any) -> set[str] | None:
    if not isinstance(raw, dict):
        return None
    names = {v.strip() for k in ENTITY_NAME_KEYS if isinstance(v := raw.get(k), str) and v.strip()}
    return names or None


def read_catalog(entries: list[Any], namer: Callable[[Any], set[str] | None]) -> CatalogNames:
    """Names from a catalog listing; an entry in an unknown shape makes it incomplete."""
    names: set[str] = set()
    unknown = 0
    for entry in entries:
        got = namer(entry)
        if got is None:
            unknown += 1
        else:
            names |= got
    if not names:
        why = "it lists nothing" if not entries else "its entries are in a shape not known here"
        return CatalogNames(missing_because=why)
    return CatalogNames(frozenset(names), complete=unknown == 0)


def missing_catalog(reason: str) -> CatalogNames:
    return CatalogNames(missing_because=reason)


@dataclass
class NameCheck:
    """One configured name and the evidence about it gathered during a scan."""

    what: str  # "connection type", "unit entity type"
    configured: str
    variable: str  # the environment variable that sets it
    casefold: bool = False
    # A connection type's catalog names are partly inferred ("A + B" from its entity types), so
    # a catalog without the name defers to the connections read; entity type names are direct.
    catalog_decisive: bool = True
    confirmed_by: str | None = None
    catalog_disagrees: tuple[str, frozenset[str]] | None = None  # (endpoint, what it lists)
    catalog_missing: str | None = None  # why the catalog gave no evidence
    # names seen in the scan's own reads, by where they were seen (in reading order)
    seen: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.what} {self.configured!r}"

    def _same(self, name: str) -> bool:
        if self.casefold:
            return name.strip().lower() == self.configured.strip().lower()
        return name == self.configured

    def against_catalog(self, catalog: CatalogNames, endpoint: str) -> str | None:
        """Confirm from the catalog; return a contradiction when a complete catalog lacks it."""
        if not catalog.usable:
            self.catalog_missing = f"{endpoint} gave no evidence ({catalog.missing_because})"
            return None
        if any(self._same(n) for n in catalog.names):
            self.confirmed_by = f"the {endpoint} catalog"
            return None
        if catalog.complete and self.catalog_decisive:
            return self.contradiction(catalog.names, f"the {endpoint} catalog")
        if catalog.complete:
            self.catalog_disagrees = (endpoint, catalog.names)
            self.catalog_missing = f"the {endpoint} catalog lists only {_shown(catalog.names)}"
            return None
        self.catalog_missing = f"{endpoint} lists some entries in a shape not known here"
        return None

    def observe(self, source: str, names: Iterable[str]) -> None:
        self.seen.setdefault(source, Counter()).update(n for n in names if n)

    def against_reads(self, *, conclusive: bool) -> str | None:
        """After the scan's own reads: confirm from what was seen, or contradict when the reads
        were ``conclusive`` (enough of the campaign) and showed only other names."""
        if self.confirmed_by:
            return None
        for source, names in self.seen.items():
            matching = sum(n for name, n in names.items() if self._same(name))
            if matching:
                self.confirmed_by = f"{source} ({matching} seen)"
                return None
        others = {name for names in self.seen.values() for name in names}
        sources = list(self.seen)
        if self.catalog_disagrees:
            endpoint, listed = self.catalog_disagrees
            others |= listed
            sources.append(f"the {endpoint} catalog")
        if conclusive and others:
            return self.contradiction(others, " and ".join(sources))
        return None

    def contradiction(self, existing: Iterable[str], source: str) -> str:
        return f"{self.label} not found (the campaign has: {_shown(existing)}; seen in {source}); set {self.variable}"

    def evidence(self) -> str:
        """One line for the log, the ab_scan metadata and the email."""
        if self.confirmed_by:
            return f"{self.label} confirmed by {self.confirmed_by}"
        return f"{self.label} not confirmed ({self.catalog_missing or 'nothing read shows it'})"


def _shown(names: Iterable[str]) -> str:
    return ", ".join(repr(x) for x in sorted(names)[:20]) or "none"
