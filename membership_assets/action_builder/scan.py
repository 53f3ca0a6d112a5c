"""Read a campaign's people, unit connections, units and membership taggings, fast and safely.

The reference script made 5+ sequential calls per person with fixed sleeps (~8 h for 14K people).
Here every request counts and the rate limit is the only brake:

* people are listed 25 per page, pages fetched concurrently;
* units come free with a full listing (the people endpoint lists every entity type) and are
  fetched once each otherwise;
* unit connections are listed per unit on full scans (a unit's listing holds all its members'
  connections, 25 per page), per person on incremental ones;
* many short listings (one per unit, one per tag) are read together: all first pages, then all
  remaining pages, so the rate budget never idles on one listing's first page;
* membership taggings are read either per person (person + source connection) or per tag
  (``/tags/{id}/taggings`` for the handful of unit/type/status tags), whichever costs fewer
  requests for this scan; both give the same snapshot;
* only people with a unit connection have their taggings read: nobody else is judged.

A person whose data cannot be fetched or read is quarantined (never judged, never cleaned);
too many quarantines abort the scan, since that points at a systemic problem.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from ..connectors.errors import ApiError, AuthError, NotFoundError, RateLimitedError
from .checkpoint import MemoryPageCache, ScanCheckpoint
from .client import ActionBuilderClient, Page, PageCache, native_id
from .evidence import (
    CatalogNames,
    NameCheck,
    connection_type_names,
    entity_type_names,
    missing_catalog,
    read_catalog,
)
from .records import (
    Connection,
    Entity,
    RecordError,
    Tagging,
    Unit,
    connection_from_api,
    entity_from_api,
    tagging_from_api,
    unit_from_api,
)
from .rules import FieldNames

STRATEGIES = ("auto", "per_person", "per_tag")
CONNECTION_STRATEGIES = ("auto", "per_person", "per_unit")
logger = logging.getLogger(__name__)
R = TypeVar("R")


SAMPLE_SIZE = 10  # people read one by one to check per-unit connection listings
MIN_JUDGED_OF_EXPECTED = 0.5  # judged share below half the sample's share aborts the scan


class ScanAborted(RuntimeError):
    """Too much of the campaign could not be read to trust any conclusion drawn from it."""


class CatalogMismatch(ScanAborted):
    """The configured field, connection type or entity type names are not the campaign's."""


# -- what a scan returns ---------------------------------------------------------------------------


@dataclass
class CampaignSnapshot:
    """Everything one scan read: what tag hygiene judges, and how the reading went."""

    since: datetime | None
    strategy: str
    entities: list[Entity]  # people and units alike: the people listing holds every entity type
    units: dict[str, Unit]
    connections: list[Connection]
    taggings: list[Tagging]
    tags: list[dict[str, Any]]
    quarantined: dict[str, str]
    judged_person_ids: list[str]
    started_at: float
    finished_at: float
    requests: dict[str, Any] = field(default_factory=dict)
    resumed_items: int = 0
    strategy_costs: dict[str, int] = field(default_factory=dict)
    connections_strategy: str = "per_person"
    notes: list[str] = field(default_factory=list)
    cross_checked: list[str] = field(default_factory=list)  # people read one by one as a check
    name_evidence: list[str] = field(default_factory=list)  # which reads confirmed which name
    first_started_at: float | None = None  # the first attempt's start, for a resumed scan
    attempt_requests: dict[str, Any] = field(default_factory=dict)  # this attempt's alone

    @property
    def people(self) -> list[Entity]:
        return [e for e in self.entities if e.is_person]

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at


# -- what each step returns, in step order ---------------------------------------------------------


@dataclass(frozen=True)
class NameChecks:
    """The evidence for the two names the catalog endpoints only verify, gathered step by step."""

    connection_type: NameCheck
    unit_type: NameCheck


@dataclass(frozen=True)
class EntityListing:
    """Step 2: every entity the people listing holds (people and units alike), units by id."""

    entities: list[Entity]
    units: dict[str, Unit]
    quarantined: dict[str, str]  # entity id -> why it could not be read

    @property
    def people(self) -> list[Entity]:
        return [e for e in self.entities if e.is_person]


@dataclass(frozen=True)
class SharedListings(Generic[R]):
    """Records read from listings many people share (one per unit, or per tag), unless one of
    them cannot be attributed: then nobody's can be trusted, and people are read one by one."""

    records: R
    unattributable: str = ""  # the record that could not be attributed, and why

    @property
    def usable(self) -> bool:
        return not self.unattributable


@dataclass(frozen=True)
class SampleCheck:
    """Step 3's cross-check: a fixed sample of people read one by one, compared with what the
    per-unit listings said of them."""

    person_ids: list[str]
    with_unit_connection: int  # of the sample, per their own listings
    differing: int  # of the sample, where the per-unit listings said otherwise

    @property
    def share_with_unit_connection(self) -> float:
        return self.with_unit_connection / len(self.person_ids)


@dataclass(frozen=True)
class UnitConnections:
    """Step 3: each readable person's unit connections, and how they were read."""

    by_person: dict[str, list[Connection]]
    mode: str  # "per_unit" | "per_person"
    sample: SampleCheck | None  # taken only when the per-unit listings were read and readable
    quarantined: dict[str, str]
    resumed: int  # reads taken from the checkpoint
    notes: list[str]


@dataclass(frozen=True)
class FetchedUnits:
    """Step 4: the units an incremental listing did not include, read one by one."""

    units: dict[str, Unit]
    resumed: int


@dataclass(frozen=True)
class TaggingRead:
    """Step 5: membership taggings, and which way (and at what cost) they were read."""

    taggings: list[Tagging]
    strategy: str  # "per_tag" | "per_person"
    costs: dict[str, int]
    quarantined: dict[str, str]
    resumed: int


@dataclass(frozen=True)
class NameEvidence:
    """Step 7: which reads confirmed each name (a line each), and notes where a catalog gave none."""

    lines: list[str]
    notes: list[str]


@dataclass(frozen=True)
class Fetched:
    """One concurrent read per key (see ``CampaignScanner._fetch_each``)."""

    values: dict[str, Any]  # None for a key that answered 404
    failures: dict[str, ApiError]  # in the order they happened
    resumed: int  # values taken from the checkpoint


class Progress:
    """Logs "x/y done, rate, ETA" at most every ``every`` seconds and at 100%."""

    def __init__(self, log: Any, label: str, total: int = 0, every: float = 15.0):
        self.log, self.label, self.total, self.every = log, label, total, every
        self.known_total = total > 0  # else it grows as listings reveal page counts
        self.done = 0
        self.start = self.last = time.monotonic()
        self._lock = threading.Lock()

    def expect(self, more: int) -> None:
        """Listings learn their page counts as they go."""
        with self._lock:
            self.total += more

    def tick(self) -> None:
        with self._lock:
            self.done += 1
            now = time.monotonic()
            final = self.known_total and self.done == self.total
            if not final and now - self.last < self.every:
                return
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0
        self.log.info(
            f"{self.label}: {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%), "
            f"{rate:.1f}/s, ETA {eta:.0f}s"
        )


class CampaignScanner:
    """Reads one campaign for tag hygiene; each ``scan()`` is independent of any earlier one."""

    def __init__(
        self,
        client: ActionBuilderClient,
        *,
        names: FieldNames = FieldNames(),
        workers: int = 8,
        checkpoint: ScanCheckpoint | None = None,
        log: Any = None,
        max_quarantined: int = 10,
        max_quarantined_fraction: float = 0.01,
        progress_every: float = 15.0,
    ):
        self.client = client
        self.names = names
        self.workers = workers
        self.cp = checkpoint
        self.log = log or logger
        self.max_quarantined = max_quarantined
        self.max_quarantined_fraction = max_quarantined_fraction
        self.progress_every = progress_every

    def scan(
        self, *, since: datetime | None = None, strategy: str = "auto", connections: str = "auto"
    ) -> CampaignSnapshot:
        """Read what tag hygiene needs, in the numbered steps below (see the module docstring for
        why so). A person set aside (quarantined) by one step is never judged by a later one."""
        _check_options(since, strategy, connections)
        full = since is None
        started = time.time()
        # A resumed scan's data dates from its first attempt: changes are read since then.
        first_started = self.cp.first_started_at(started) if self.cp else started
        earlier_requests = self.cp.earlier_requests() if self.cp else []
        if self.cp:
            self.cp.track_requests(self.client.stats.snapshot)
        checks = self._name_checks()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ab-scan") as pool:

            def map_fn(fn, xs):
                return pool.map(fn, xs)

            # 1. The tag catalog; the configured names must be the campaign's.
            catalog = self._read_and_verify_catalog(map_fn, checks)
            # 2. Every entity: people, and the units they can be connected to.
            listing = self._read_entities(map_fn, since)
            self._confirm_unit_type(checks, listing.entities, full=full)
            people = listing.people
            # 3. Unit connections: the truth each person's tags are judged against.
            connected = self._read_unit_connections(pool, map_fn, listing, since, connections, checks)
            self._confirm_connection_type(checks, len(people))
            quarantined = _with_quarantined(listing.quarantined, connected.quarantined)
            self._check_quarantine(quarantined, len(people))
            source = _source_connections(connected.by_person)
            # 4. Units an incremental listing did not include.
            fetched_units = self._read_missing_units(pool, source, listing.units)
            # 5. Membership taggings of everyone with a unit connection still to judge.
            to_judge = [pid for pid in source if pid not in quarantined]
            tagged = self._read_taggings(pool, map_fn, strategy, catalog, to_judge, source)
            quarantined = _with_quarantined(quarantined, tagged.quarantined)
            self._check_quarantine(quarantined, len(people))

        judged = [pid for pid in to_judge if pid not in quarantined]
        # 6. A scan that judged nobody, or far too few, is not a success.
        judged_notes = self._check_judged(len(people), judged, connected)
        # 7. Which evidence confirmed each configured name.
        evidence = self._name_evidence(checks, full=full)
        return CampaignSnapshot(
            since=since,
            strategy=tagged.strategy,
            entities=listing.entities,
            units={**listing.units, **fetched_units.units},
            connections=[c for pid in sorted(connected.by_person) for c in connected.by_person[pid]],
            taggings=_membership_taggings(tagged.taggings, catalog, judged, source, self.names),
            tags=catalog,
            quarantined=quarantined,
            judged_person_ids=judged,
            started_at=started,
            finished_at=time.time(),
            # The logical scan's cost: every attempt's requests, not only this one's.
            requests=add_request_stats([*earlier_requests, self.client.stats.snapshot()]),
            attempt_requests=self.client.stats.snapshot(),
            resumed_items=connected.resumed
            + fetched_units.resumed
            + tagged.resumed
            + (self.cp.reused_pages if self.cp else 0),
            strategy_costs=tagged.costs,
            connections_strategy=connected.mode,
            notes=[*connected.notes, *judged_notes, *evidence.notes],
            cross_checked=connected.sample.person_ids if connected.sample else [],
            name_evidence=evidence.lines,
            first_started_at=first_started,
        )

    def _name_checks(self) -> NameChecks:
        """Fresh evidence for this scan's names."""
        return NameChecks(
            connection_type=NameCheck(
                "connection type",
                self.names.connection_type,
                "ACTION_BUILDER_CONNECTION_TYPE",
                catalog_decisive=False,
            ),
            # Entity types are compared case-insensitively ("Person" is sent, "person" answered).
            unit_type=NameCheck(
                "unit entity type",
                self.names.unit_entity_type,
                "ACTION_BUILDER_UNIT_ENTITY_TYPE",
                casefold=True,
            ),
        )

    # -- step 1: the campaign's catalog must know the names the rules rely on ----------------------

    def _read_and_verify_catalog(self, map_fn, checks: NameChecks) -> list[dict[str, Any]]:
        """Tag catalog (required: tag ids come from it), then the connection and entity type
        catalogs, which only verify; fail naming what exists when evidence contradicts a name.

        A misspelt connection type ("people + units") or unit entity type would otherwise make
        the scan find no unit connections and "succeed" judging nobody.
        """
        tags = self.client.list_tags(map_fn=map_fn, cache=self._page_cache("tags"))
        catalog = tag_catalog(tags)
        problems = []
        fields = {t["field"] for t in catalog if t["field"]}
        for configured in self.names.tag_fields:
            if configured and configured not in fields:
                problems.append(_missing("tag field", configured, fields))
        for check, read, namer, endpoint in (
            (
                checks.connection_type,
                self.client.list_connection_types,
                connection_type_names,
                "connection_types",
            ),
            (checks.unit_type, self.client.list_entity_types, entity_type_names, "entity_types"),
        ):
            problem = check.against_catalog(self._catalog_names(read, namer, endpoint), endpoint)
            if problem:
                problems.append(problem)
        if problems:
            raise _mismatch(problems)
        return catalog

    def _catalog_names(self, read, namer, endpoint: str) -> CatalogNames:
        """A catalog that 404s or reads in an unknown shape is evidence missing, not against."""
        try:
            entries = read(cache=self._page_cache(endpoint))
        except (AuthError, RateLimitedError):
            raise
        except ApiError as exc:
            why = f"HTTP {exc.status}" if exc.status and exc.status >= 400 else exc.detail
            self.log.info(f"{endpoint} catalog unusable ({why}); confirming names from the scan's reads")
            return missing_catalog(why)
        return read_catalog(entries, namer)

    # -- step 2: people and units (one listing holds every entity type) ----------------------------

    def _read_entities(self, map_fn, since: datetime | None) -> EntityListing:
        """Every entity listed (modified ``since``, when given); an unreadable one is set aside."""
        raw_entities = self.client.list_people(
            since,
            map_fn=map_fn,
            cache=self._page_cache("people"),
            progress=Progress(self.log, "people pages", every=self.progress_every),
        )
        self.log.info(f"listed {len(raw_entities)} entities" + (f" modified since {since}" if since else ""))
        entities: list[Entity] = []
        units: dict[str, Unit] = {}
        quarantined: dict[str, str] = {}
        for raw in raw_entities:
            try:
                entity = entity_from_api(raw)
            except RecordError as exc:
                self._quarantine(quarantined, native_id(raw) or "<no id>", f"unreadable entity: {exc}")
                continue
            entities.append(entity)
            if not entity.is_person:
                units[entity.person_id] = unit_from_api(raw)
        return EntityListing(entities, units, quarantined)

    def _confirm_unit_type(self, checks: NameChecks, entities: list[Entity], *, full: bool) -> None:
        """A full listing holds every entity: its types confirm or contradict the unit type."""
        if not full:
            return  # only full scans read per unit; an incremental listing proves nothing here
        checks.unit_type.observe("the people listing", (e.entity_type for e in entities if not e.is_person))
        problem = checks.unit_type.against_reads(conclusive=True)
        if problem:
            raise _mismatch([problem])

    # -- step 3: unit connections, per unit or per person ------------------------------------------

    def _read_unit_connections(
        self,
        pool,
        map_fn,
        listing: EntityListing,
        since: datetime | None,
        requested: str,
        checks: NameChecks,
    ) -> UnitConnections:
        """Every readable person's "People + Units" connections, read per person or per unit.

        A connection is one object seen from both ends, so a unit's connection listing holds all
        its members' connections, 25 per page, instead of one request per person. Only a full
        listing names every unit, so incremental scans read per person. Whether a unit's listing
        really shows every member's connection with the same label is not documented, so the
        per-unit result is checked against a sample of people read one by one; on disagreement
        everyone is read per person.
        """
        units = [
            e.person_id
            for e in listing.entities
            if e.entity_type.strip().lower() == self.names.unit_entity_type.lower()
        ]
        mode = requested
        if requested == "auto":
            mode = "per_unit" if since is None and units else "per_person"
        wanted = [p.person_id for p in listing.people if p.person_id not in listing.quarantined]
        reads = _PersonReads()

        def result(
            by_person: dict[str, list[Connection]],
            mode: str,
            sample: SampleCheck | None = None,
            notes: tuple[str, ...] = (),
        ) -> UnitConnections:
            return UnitConnections(by_person, mode, sample, reads.quarantined, reads.resumed, list(notes))

        if mode == "per_person":
            return result(self._connections_per_person(pool, wanted, checks, reads), mode)
        per_unit = self._connections_per_unit(map_fn, units, set(wanted), checks)
        if not per_unit.usable:
            return result(self._connections_per_person(pool, wanted, checks, reads), "per_person")
        found = per_unit.records
        sample = self._cross_check_sample(pool, found, wanted, checks, reads)
        if sample.differing:
            note = self._note(
                f"per-unit connection listings disagree with per-person reads ({sample.differing} of "
                f"{len(sample.person_ids)} sampled people); reading every person's connections one by one instead"
            )
            everyone = self._connections_per_person(pool, wanted, checks, reads)
            return result(everyone, "per_person", sample, (note,))
        # The person's own listing order decides between several inactive unit connections.
        ordered = [pid for pid, cs in found.items() if len(cs) > 1 and all(c.inactive for c in cs)]
        if ordered:
            found.update(self._connections_per_person(pool, ordered, checks, reads))
        return result(found, mode, sample)

    def _connections_per_unit(
        self, map_fn, units: list[str], person_ids: set[str], checks: NameChecks
    ) -> SharedListings[dict[str, list[Connection]]]:
        """The members' connections as the units' listings show them (a connection that cannot
        be read names no member, so it makes the listings unusable)."""
        listings = [
            self.client.connections_listing(
                uid,
                cache=self._page_cache(f"unit_connections:{uid}"),
                kind="unit_connections_page",
            )
            for uid in units
        ]
        progress = Progress(self.log, "unit connection pages", every=self.progress_every)
        listed = self.client.fetch_listings(listings, map_fn=map_fn, progress=progress)
        found: dict[str, list[Connection]] = defaultdict(list)
        for uid, raws in zip(units, listed, strict=True):
            labels = (raw.get("connection_type") for raw in raws)
            checks.connection_type.observe(
                "the unit connection listings", (x for x in labels if isinstance(x, str))
            )
            for raw in raws:
                if raw.get("connection_type") != self.names.connection_type:
                    continue
                try:
                    seen = connection_from_api(raw, uid, 0)
                except RecordError as exc:
                    self.log.warning(f"unit {uid} lists an unreadable connection ({exc}); reading per person")
                    return SharedListings({}, f"unit {uid} lists an unreadable connection ({exc})")
                member = seen.other_id
                if member in person_ids:
                    found[member].append(
                        Connection(
                            seen.connection_id,
                            member,
                            uid,
                            seen.connection_type,
                            seen.inactive,
                            len(found[member]),
                        )
                    )
        return SharedListings(dict(found))

    def _cross_check_sample(
        self,
        pool,
        found: dict[str, list[Connection]],
        wanted: list[str],
        checks: NameChecks,
        reads: _PersonReads,
    ) -> SampleCheck:
        """Read a fixed sample of people per person and compare with ``found``."""
        sample = sorted(wanted, key=sample_order)[:SAMPLE_SIZE]
        if not sample:
            return SampleCheck([], 0, 0)
        own = self._connections_per_person(pool, sample, checks, reads, "the sample's own connections")
        differing = [
            pid
            for pid in sample
            if pid in own or pid in found
            if {c.connection_id for c in own.get(pid, [])} != {c.connection_id for c in found.get(pid, [])}
        ]
        return SampleCheck(sample, sum(1 for pid in sample if own.get(pid)), len(differing))

    def _connections_per_person(
        self,
        pool,
        person_ids: list[str],
        checks: NameChecks,
        reads: _PersonReads,
        source: str = "people's own connections",
    ) -> dict[str, list[Connection]]:
        """The unit connections in each person's own listing; a person read earlier in this
        step is not read again, one whose listing cannot be read is set aside."""
        todo = [pid for pid in person_ids if pid not in reads.connections]
        fetched = self._fetch_each(pool, "connections", todo, self.client.list_connections)
        reads.resumed += fetched.resumed
        for pid, exc in fetched.failures.items():
            self._quarantine(reads.quarantined, pid, f"connections failed: {exc}")
        for pid in todo:
            if pid in reads.quarantined or fetched.values.get(pid) is None:
                continue
            try:
                conns = [connection_from_api(c, pid, i) for i, c in enumerate(fetched.values[pid])]
            except RecordError as exc:
                self._quarantine(reads.quarantined, pid, f"unreadable connection: {exc}")
                continue
            checks.connection_type.observe(source, (c.connection_type for c in conns))
            reads.connections[pid] = [c for c in conns if c.connection_type == self.names.connection_type]
        return {
            pid: reads.connections[pid]
            for pid in person_ids
            if reads.connections.get(pid) and pid not in reads.quarantined
        }

    def _confirm_connection_type(self, checks: NameChecks, people: int) -> None:
        """The labels on the connections read confirm the connection type, or (when enough
        people were read and none shows it) contradict it, naming the labels seen."""
        problem = checks.connection_type.against_reads(conclusive=people >= SAMPLE_SIZE)
        if problem:
            raise _mismatch([problem])

    def _check_quarantine(self, quarantined: dict[str, str], population: int) -> None:
        """Too many people set aside points at a systemic problem, not at a few bad records."""
        limit = max(self.max_quarantined, math.floor(self.max_quarantined_fraction * population))
        if len(quarantined) > limit:
            sample = "; ".join(f"{k}: {v}" for k, v in list(quarantined.items())[:5])
            raise ScanAborted(
                f"{len(quarantined)} of {population} people could not be read (limit {limit}); "
                f"refusing to judge the campaign on partial data. First: {sample}"
            )

    # -- step 4: units an incremental listing did not include --------------------------------------

    def _read_missing_units(
        self, pool, source: dict[str, Connection], listed: dict[str, Unit]
    ) -> FetchedUnits:
        """The units people are connected to that the listing lacked; an unreadable one only
        means its members' unit is not compared."""
        missing = sorted({c.other_id for c in source.values() if c.other_id and c.other_id not in listed})
        fetched = self._fetch_each(pool, "units", missing, self.client.get_entity)
        for uid, exc in fetched.failures.items():
            self.log.warning(f"units {uid} failed: {exc}")
        units: dict[str, Unit] = {}
        for uid, raw in fetched.values.items():
            if raw is None:
                continue
            try:
                units[uid] = unit_from_api(raw)
            except RecordError as exc:
                self.log.warning(f"unit {uid} unreadable ({exc}); its members' unit is not compared")
        return FetchedUnits(units, fetched.resumed)

    # -- step 5: membership taggings, per tag or per person ----------------------------------------

    def _read_taggings(
        self,
        pool,
        map_fn,
        strategy: str,
        catalog: list[dict[str, Any]],
        to_judge: list[str],
        source: dict[str, Connection],
    ) -> TaggingRead:
        """The taggings of the people to judge, read whichever way costs fewer requests."""
        relevant_tags = [t["tag_id"] for t in catalog if t["field"] in self.names.tag_fields]
        caches = {tid: self._page_cache(f"tag:{tid}") or MemoryPageCache() for tid in relevant_tags}
        chosen, costs = self._choose_strategy(strategy, relevant_tags, len(to_judge), map_fn, caches)
        if chosen == "per_tag":
            per_tag = self._taggings_per_tag(relevant_tags, map_fn, caches)
            if per_tag.usable:
                return TaggingRead(per_tag.records, chosen, costs, {}, 0)
        return self._taggings_per_person(pool, to_judge, source, costs)

    def _choose_strategy(
        self, requested: str, relevant_tags: list[str], people: int, map_fn, caches: dict[str, PageCache]
    ) -> tuple[str, dict[str, int]]:
        """Which way to read taggings ("per_tag" or "per_person"), and the costs that decided it."""
        per_person_cost = 2 * people  # person taggings + source-connection taggings
        costs = {"per_person_estimate": per_person_cost}
        if requested == "per_person" or (requested == "auto" and len(relevant_tags) >= per_person_cost):
            return "per_person", costs
        if requested == "per_tag":
            return "per_tag", costs

        # Probe page 1 of each relevant tag: it tells the page count, and is reused if chosen.
        def probe(tid: str) -> Page:
            first = caches[tid].get(1)
            if first is None:
                first = self.client.first_tag_taggings_page(tid)
                caches[tid].put(first)
            return first

        total = sum(first.total_pages or 1 for first in map_fn(probe, relevant_tags))
        costs["per_tag_pages"] = total
        chosen = "per_tag" if total - len(relevant_tags) <= per_person_cost else "per_person"
        self.log.info(
            f"tagging strategy: {chosen} (per tag {total} pages, per person ~{per_person_cost} requests)"
        )
        return chosen, costs

    def _taggings_per_tag(
        self, relevant_tags: list[str], map_fn, caches: dict[str, PageCache]
    ) -> SharedListings[list[Tagging]]:
        """Every tagging of each relevant tag (one that names no person or connection makes the
        listings unusable: per-person reads are then the only way to know whose it is)."""
        listings = [self.client.tag_taggings_listing(tid, cache=caches[tid]) for tid in relevant_tags]
        progress = Progress(self.log, "tag tagging pages", every=self.progress_every)
        out: list[Tagging] = []
        listed = self.client.fetch_listings(listings, map_fn=map_fn, progress=progress)
        for tid, raws in zip(relevant_tags, listed, strict=True):
            for raw in raws:
                try:
                    out.append(tagging_from_api(raw, tag_id=tid))
                except RecordError as exc:
                    self.log.warning(
                        f"per-tag listing cannot attribute a tagging ({exc}); falling back to per-person reads"
                    )
                    return SharedListings([], f"per-tag listing cannot attribute a tagging ({exc})")
        return SharedListings(out)

    def _taggings_per_person(
        self,
        pool: ThreadPoolExecutor,
        to_judge: list[str],
        source: dict[str, Connection],
        costs: dict[str, int],
    ) -> TaggingRead:
        """Each to_judge person's own taggings and their source connection's."""
        conn_owner = {source[pid].connection_id: pid for pid in to_judge}
        by_person = self._fetch_each(pool, "person_taggings", to_judge, self.client.list_person_taggings)
        by_conn = self._fetch_each(
            pool, "connection_taggings", list(conn_owner), self.client.list_connection_taggings
        )
        quarantined: dict[str, str] = {}
        for pid, exc in by_person.failures.items():
            self._quarantine(quarantined, pid, f"person_taggings failed: {exc}")
        for cid, exc in by_conn.failures.items():
            self._quarantine(quarantined, conn_owner[cid], f"connection_taggings failed: {exc}")
        out: list[Tagging] = []
        for pid in to_judge:
            cid = source[pid].connection_id
            if pid in quarantined or by_person.values.get(pid) is None or by_conn.values.get(cid) is None:
                continue
            try:
                out.extend(
                    tagging_from_api(r, item_type="person", item_id=pid) for r in by_person.values[pid]
                )
                out.extend(
                    tagging_from_api(r, item_type="connection", item_id=cid) for r in by_conn.values[cid]
                )
            except RecordError as exc:
                self._quarantine(quarantined, pid, f"unreadable tagging: {exc}")
        return TaggingRead(out, "per_person", costs, quarantined, by_person.resumed + by_conn.resumed)

    # -- step 6: a scan that judged nobody (or far too few) is not a success -----------------------

    def _check_judged(self, people: int, judged: list[str], connected: UnitConnections) -> list[str]:
        """Abort a scan that compared nothing or far too few; the notes the summary must carry."""
        notes = []
        if people and not judged and people < SAMPLE_SIZE:
            # A handful of recently modified people may well all be non-members: say so.
            notes.append(self._note(f"none of the {people} people read has a unit connection; nobody judged"))
        elif people and not judged:
            raise ScanAborted(
                f"read {people} people but judged none: no unit connections of type "
                f"{self.names.connection_type!r} were found (connections read {connected.mode}). "
                "Refusing to report success on a scan that compared nothing."
            )
        sample = connected.sample
        if sample is not None and sample.person_ids and people >= SAMPLE_SIZE:
            share = sample.share_with_unit_connection
            if len(judged) < people * share * MIN_JUDGED_OF_EXPECTED:
                raise ScanAborted(
                    f"judged {len(judged)} of {people} people, far fewer than the "
                    f"{share:.0%} with a unit connection among {len(sample.person_ids)} people read one by one"
                )
        return notes

    # -- step 7: say which evidence confirmed each name --------------------------------------------

    def _name_evidence(self, checks: NameChecks, *, full: bool) -> NameEvidence:
        """Which evidence confirmed each name; a note whenever a catalog gave none."""
        notes = []
        for check in [checks.connection_type, *([checks.unit_type] if full else [])]:
            if check.catalog_missing:
                notes.append(self._note(f"{check.catalog_missing}: {check.evidence()}"))
            else:
                self.log.info(check.evidence())
        return NameEvidence([c.evidence() for c in (checks.connection_type, checks.unit_type)], notes)

    # -- shared by the steps -----------------------------------------------------------------------

    def _quarantine(self, quarantined: dict[str, str], person_id: str, reason: str) -> None:
        """Set a person aside (never judged, never cleaned); the first reason stands."""
        quarantined.setdefault(person_id, reason)
        self.log.warning(f"quarantined person {person_id}: {reason}")

    def _note(self, message: str) -> str:
        """Something the run's summary must say (e.g. a fallback), not only the log."""
        self.log.warning(message)
        return message

    def _page_cache(self, listing: str) -> PageCache | None:
        return self.cp.page_cache(listing) if self.cp else None

    def _fetch_each(
        self, pool: ThreadPoolExecutor, kind: str, keys: Iterable[str], fetch: Callable[[str], Any]
    ) -> Fetched:
        """Fetch one result per key concurrently, checkpointing each; the caller decides what a
        failure means (an auth failure stops the scan at once)."""
        results: dict[str, Any] = self.cp.load(kind) if self.cp else {}
        keys = list(dict.fromkeys(keys))
        wanted = set(keys)
        results = {k: v for k, v in results.items() if k in wanted}
        resumed = len(results)
        todo = [k for k in keys if k not in results]
        if results:
            self.log.info(f"{kind}: resuming, {len(results)} of {len(keys)} already fetched")
        failures: dict[str, ApiError] = {}
        progress = Progress(self.log, kind, len(todo), self.progress_every)
        futures = {pool.submit(fetch, k): k for k in todo}
        try:
            for fut in as_completed(futures):
                key = futures[fut]
                try:
                    value = fut.result()
                except AuthError:
                    raise
                except ApiError as exc:
                    if isinstance(exc, NotFoundError):
                        results[key] = None
                    failures[key] = exc
                    continue
                finally:
                    progress.tick()
                results[key] = value
                if self.cp:
                    self.cp.save(kind, key, value)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            if self.cp:
                self.cp.flush()
        return Fetched(results, failures, resumed)


@dataclass
class _PersonReads:
    """Step 3's own reads so far: a person read once (for the sample, say) is not read again."""

    connections: dict[str, list[Connection]] = field(default_factory=dict)
    quarantined: dict[str, str] = field(default_factory=dict)
    resumed: int = 0


# -- pure helpers, in the order the steps use them -------------------------------------------------


def _check_options(since: datetime | None, strategy: str, connections: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if connections not in CONNECTION_STRATEGIES:
        raise ValueError(f"connections must be one of {CONNECTION_STRATEGIES}, got {connections!r}")
    if connections == "per_unit" and since is not None:
        raise ValueError("per-unit connection reads need a full scan: only it lists every unit")


def tag_catalog(raw_tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The campaign's tags as rows of tag_id, section, field, name, and whether field and name
    alone name it (``unique``); shared with the repair's fresh read of the catalog."""
    rows = []
    for raw in raw_tags:
        tid = native_id(raw)
        if not tid:
            continue
        rows.append(
            {
                "tag_id": tid,
                "section": raw.get("action_builder:section"),
                "field": raw.get("action_builder:field"),
                "name": raw.get("name", raw.get("action_builder:name")),
            }
        )
    counts: dict[tuple[Any, Any], int] = {}
    for r in rows:
        counts[(r["field"], r["name"])] = counts.get((r["field"], r["name"]), 0) + 1
    for r in rows:
        r["unique"] = counts[(r["field"], r["name"])] == 1
    return rows


def _mismatch(problems: list[str]) -> CatalogMismatch:
    return CatalogMismatch(
        "the campaign does not match the configured names, so nobody could be judged: "
        + "; ".join(problems)
        + ". Set ACTION_BUILDER_UNIT_FIELD / _TYPE_FIELD / _STATUS_FIELD / _CONNECTION_TYPE / "
        "_UNIT_ENTITY_TYPE to the campaign's names."
    )


def _missing(what: str, configured: str, existing: set[str]) -> str:
    shown = ", ".join(repr(x) for x in sorted(existing)[:20]) or "none"
    return f"{what} {configured!r} not found (the campaign has: {shown})"


def sample_order(person_id: str) -> str:
    """A fixed pseudo-random order, so a resumed scan samples the same people."""
    return hashlib.sha256(person_id.encode()).hexdigest()


def _with_quarantined(quarantined: dict[str, str], more: dict[str, str]) -> dict[str, str]:
    """Both sets of people set aside, earlier first; a person's first reason stands."""
    return {**quarantined, **{pid: why for pid, why in more.items() if pid not in quarantined}}


def _source_connections(by_person: dict[str, list[Connection]]) -> dict[str, Connection]:
    """The connection each person is judged against (none for people active in two units)."""
    source: dict[str, Connection] = {}
    for pid, conns in by_person.items():
        active = [c for c in conns if not c.inactive]
        if len(active) < 2:  # active in two units: not judged, so nothing to read
            source[pid] = (active or sorted(conns, key=lambda c: c.position))[0]
    return source


def _membership_taggings(
    taggings: list[Tagging],
    catalog: list[dict[str, Any]],
    judged: list[str],
    source: dict[str, Connection],
    names: FieldNames,
) -> list[Tagging]:
    """The judged people's and their source connections' membership taggings, tag ids resolved."""
    wanted_items = {("person", pid) for pid in judged} | {
        ("connection", source[pid].connection_id) for pid in judged
    }
    kept = [
        t if t.tag_id else _with_tag_id(t, resolve_tag_id(t, catalog))
        for t in taggings
        if t.field in names.tag_fields and (t.item_type, t.item_id) in wanted_items
    ]
    kept.sort(key=lambda t: (t.item_type, t.item_id, t.tagging_id))
    return kept


def resolve_tag_id(t: Tagging, catalog: list[dict[str, Any]]) -> str | None:
    """The tag of a tagging that carries no tag link: the one catalog tag with its section,
    field and value (field and value alone when the tagging names no section).

    The same field and value may exist in two sections (e.g. on people and on connections),
    so field and value alone are not enough.
    """
    same = [c for c in catalog if c["field"] == t.field and c["name"] == t.value]
    if t.section is not None:
        same = [c for c in same if c["section"] == t.section]
    return same[0]["tag_id"] if len(same) == 1 else None


def _with_tag_id(t: Tagging, tag_id: str | None) -> Tagging:
    if tag_id is None:
        return t
    return replace(t, tag_id=tag_id)


def add_request_stats(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Several ``RequestStats.snapshot()`` added up (the attempts of one logical run)."""
    total: dict[str, Any] = {
        "requests": 0,
        "retries": 0,
        "rate_limited_429": 0,
        "by_status": {},
        "by_kind": {},
    }
    for snap in snapshots:
        for key in ("requests", "retries", "rate_limited_429"):
            total[key] += snap.get(key, 0)
        for key in ("by_status", "by_kind"):
            for name, n in snap.get(key, {}).items():
                total[key][name] = total[key].get(name, 0) + n
    total["by_status"] = dict(sorted(total["by_status"].items()))
    total["by_kind"] = dict(sorted(total["by_kind"].items()))
    return total
