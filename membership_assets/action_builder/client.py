"""Action Builder REST API v1 client (OSDI / HAL+JSON), read paths, tagging deletion and the
Person Signup Helper's ``add_tags``.

Facts this relies on (shared/reference/action-builder-api.md §1): base URL
``https://{subdomain}.actionbuilder.org/api/rest/v1``, header ``OSDI-API-Token``, at most 25 items
per page, page count in ``total_pages``, OSDI resources embedded under ``osdi:`` keys and
Action Builder resources under ``action_builder:`` keys, and ``_embedded`` omitted entirely on an
empty result.

Paging is strict: a listing is either provably complete or an error is raised. A wrong embedded
key, a short non-final page or a page count that shrinks mid-listing never yields a silently
shorter list, because downstream steps delete tags on the strength of these listings.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..connectors.errors import BadResponseError, IncompleteListingError, NotFoundError
from ..connectors.http import JsonApiClient
from ..connectors.ratelimit import RateLimiter
from .hal import NATIVE_PREFIX, native_id

PER_PAGE_MAX = 25
# Requests per second per API key (shared/reference/action-builder-api.md §1.5).
DOCUMENTED_RATE_LIMIT = 4.0
# Pace just under the documented limit: a strict sliding-window limiter counts arrival times,
# which jitter by milliseconds, so requests spaced exactly 1/rate apart would draw a 429 now and
# then. 0.3% keeps >= 99% of the rate where the limiter is lenient (the limiter adapts further).
PACING_SHARE = 0.997
START_SHARE = 0.95  # the first 10 s ramp up from 95% while connections are opened

# Embedded keys: OSDI-defined resources use "osdi:", Action Builder's own use "action_builder:".
KEY_PEOPLE = "osdi:people"
KEY_TAGS = "osdi:tags"
KEY_TAGGINGS = "osdi:taggings"
KEY_CONNECTIONS = "action_builder:connections"
KEY_CAMPAIGNS = "action_builder:campaigns"
KEY_CONNECTION_TYPES = "action_builder:connection_types"
KEY_ENTITY_TYPES = "action_builder:entity_types"


@dataclass(frozen=True)
class ActionBuilderCredentials:
    api_token: str
    subdomain: str

    @classmethod
    def from_json(cls, raw: str, *, source: str = "ACTION_BUILDER_CREDENTIALS_PASSWORD"):
        """Parse the ``{NAME}_PASSWORD`` JSON (``{"api_token": ..., "subdomain": ...}``)."""
        try:
            data = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source} must be JSON with api_token and subdomain") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{source} must be a JSON object with api_token and subdomain")
        missing = [k for k in ("api_token", "subdomain") if not str(data.get(k) or "").strip()]
        if missing:
            raise ValueError(f"{source} is missing {', '.join(missing)}")
        return cls(api_token=str(data["api_token"]).strip(), subdomain=str(data["subdomain"]).strip())

    @property
    def base_url(self) -> str:
        return f"https://{self.subdomain}.actionbuilder.org/api/rest/v1"


@dataclass(frozen=True)
class Page:
    number: int
    total_pages: int | None
    per_page: int
    items: list[dict[str, Any]]
    next_href: str | None


class PageCache(Protocol):
    """Where fetched pages of one listing are checkpointed, so a crashed scan can resume."""

    def get(self, page: int) -> Page | None: ...

    def put(self, page: Page) -> None: ...


def parse_page(body: Any, key: str, page: int, per_page: int) -> Page:
    """Validate one listing page; raises BadResponseError/IncompleteListingError on any doubt."""
    if not isinstance(body, dict):
        raise BadResponseError(f"page {page}: expected a JSON object, got {type(body).__name__}")
    total = body.get("total_pages")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
        raise BadResponseError(f"page {page}: total_pages is not a non-negative integer: {total!r}")
    echoed = body.get("page")
    if echoed is not None and echoed != page:
        raise BadResponseError(f"asked for page {page}, server answered page {echoed!r}")
    size = body.get("per_page", per_page)
    if not isinstance(size, int) or size < 1:
        raise BadResponseError(f"page {page}: per_page is not a positive integer: {size!r}")
    embedded = body.get("_embedded")
    if embedded is None:
        # Live Action Builder omits _embedded on empty results (total_pages == 0).
        if total not in (0, None) and page <= total:
            raise BadResponseError(f"page {page} of {total} has no _embedded")
        items: list[Any] = []
    elif not isinstance(embedded, dict):
        raise BadResponseError(f"page {page}: _embedded is not an object")
    elif key in embedded:
        items = embedded[key]
    elif not embedded and total in (0, None):
        items = []
    else:
        # The classic silent-empty bug: reading a key the server does not use.
        raise BadResponseError(f"page {page}: expected _embedded[{key!r}], found keys {sorted(embedded)}")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadResponseError(f"page {page}: _embedded[{key!r}] is not a list of objects")
    if len(items) > size:
        raise BadResponseError(f"page {page}: {len(items)} items on a page of {size}")
    if total is not None:
        if page < total and len(items) != size:
            raise IncompleteListingError(f"page {page} of {total} is short ({len(items)} of {size} items)")
        if page == total and not items:
            raise IncompleteListingError(f"last page {page} of {total} is empty")
    next_href = (body.get("_links") or {}).get("next", {})
    next_href = next_href.get("href") if isinstance(next_href, dict) else None
    return Page(number=page, total_pages=total, per_page=size, items=items, next_href=next_href)


def odata_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MapFn = Callable[[Callable[[Any], Page], Iterable[Any]], Iterator[Page]]


@dataclass(frozen=True)
class Listing:
    """One paged listing to read in full (e.g. a unit's connections, a tag's taggings)."""

    path: str
    key: str
    kind: str
    params: dict[str, Any] | None = None
    cache: PageCache | None = None


class PageProgress(Protocol):
    """Told how many pages are known to exist, and when each is fetched."""

    def expect(self, pages: int) -> None: ...

    def tick(self) -> None: ...


class ActionBuilderClient:
    """Campaign-scoped Action Builder calls used by the tag-hygiene scan."""

    def __init__(self, api: JsonApiClient, campaign_id: str):
        self.api = api
        self.campaign_id = campaign_id

    @classmethod
    def connect(
        cls,
        *,
        api_token: str,
        base_url: str,
        campaign_id: str,
        rate_limit: float = DOCUMENTED_RATE_LIMIT,
        max_attempts: int = 5,
        timeout: float = 30.0,
        log: Any = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] | None = None,
    ) -> ActionBuilderClient:
        kwargs: dict[str, Any] = {}
        if sleep is not None:
            kwargs["sleep"] = sleep
        api = JsonApiClient(
            name="action_builder",
            base_url=base_url,
            headers={"OSDI-API-Token": api_token, "Content-Type": "application/json"},
            limiter=RateLimiter(rate_limit * PACING_SHARE, start_share=START_SHARE),
            max_attempts=max_attempts,
            timeout=timeout,
            log=log,
            pool_size=pool_size,
            **kwargs,
        )
        return cls(api, campaign_id)

    @property
    def stats(self):
        return self.api.stats

    def _c(self, suffix: str = "") -> str:
        return f"campaigns/{self.campaign_id}{suffix}"

    # -- paging -------------------------------------------------------------------------------

    def fetch_page(
        self,
        path: str,
        key: str,
        page: int,
        params: dict[str, Any] | None,
        kind: str,
        *,
        retry_bad_shape: bool = True,
    ) -> Page:
        """One validated page. A page in the wrong shape is retried like a truncated one, unless
        ``retry_bad_shape`` is off (a verification-only read: it raises BadResponseError at once)."""
        query = {**(params or {}), "page": page, "per_page": PER_PAGE_MAX}
        holder: dict[str, Page] = {}

        def validate(body: Any) -> None:
            holder["page"] = parse_page(body, key, page, PER_PAGE_MAX)

        if retry_bad_shape:
            self.api.request_json("GET", path, params=query, kind=kind, validate=validate)
            return holder["page"]
        body = self.api.request_json("GET", path, params=query, kind=kind)
        try:
            return parse_page(body, key, page, PER_PAGE_MAX)
        except BadResponseError as exc:
            raise type(exc)(exc.detail, api=self.api.name, url=path) from None

    def fetch_all(
        self,
        path: str,
        key: str,
        *,
        params: dict[str, Any] | None = None,
        kind: str,
        map_fn: MapFn | None = None,
        cache: PageCache | None = None,
        progress: PageProgress | None = None,
    ) -> list[dict[str, Any]]:
        """Every item of a listing, provably complete, pages 2..N fetched through ``map_fn``."""
        listing = Listing(path, key, kind, params, cache)
        return self.fetch_listings([listing], map_fn=map_fn, progress=progress)[0]

    def fetch_listings(
        self,
        listings: Sequence[Listing],
        *,
        map_fn: MapFn | None = None,
        progress: PageProgress | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Every item of each listing, each provably complete.

        All first pages go out together, then every remaining page of every listing, so reading
        many short listings (one per unit or per tag) keeps the whole rate budget busy instead of
        waiting on each listing's first page in turn.
        """
        mapper = map_fn or (lambda fn, xs: map(fn, xs))

        def get(job: tuple[int, int]) -> Page:
            i, n = job
            listing = listings[i]
            page = listing.cache.get(n) if listing.cache is not None else None
            if page is None:
                page = self.fetch_page(listing.path, listing.key, n, listing.params, listing.kind)
                if listing.cache is not None:
                    listing.cache.put(page)
            if progress is not None:
                progress.tick()
            return page

        if progress is not None:
            progress.expect(len(listings))
        firsts = list(mapper(get, [(i, 1) for i in range(len(listings))]))
        pages = [[first] for first in firsts]
        expected = [first.total_pages for first in firsts]
        fetched_upto = [1] * len(listings)
        while True:
            jobs = [
                (i, n)
                for i, total in enumerate(expected)
                if total is not None
                for n in range(fetched_upto[i] + 1, total + 1)
            ]
            if not jobs:
                break
            if progress is not None:
                progress.expect(len(jobs))
            fetched: dict[int, list[Page]] = defaultdict(list)
            for (i, _), page in zip(jobs, mapper(get, jobs), strict=True):
                fetched[i].append(page)
            for i, new_pages in fetched.items():
                if any((p.total_pages or 0) < expected[i] for p in new_pages):
                    raise IncompleteListingError(
                        f"{listings[i].path}: page count shrank from {expected[i]} while paging; "
                        "the listing changed under us and cannot be proven complete",
                        api=self.api.name,
                    )
                pages[i].extend(new_pages)
                fetched_upto[i] = expected[i]
                # Items added during a long scan append pages at the end; fetch those as well.
                expected[i] = max(expected[i], *(p.total_pages or 0 for p in new_pages))
        out = []
        for i, listing in enumerate(listings):
            if expected[i] is None:
                items = self._follow_without_total(
                    firsts[i], listing.path, listing.key, listing.params, listing.kind
                )
            else:
                items = [item for p in sorted(pages[i], key=lambda p: p.number) for item in p.items]
            out.append(_dedupe(items))
        return out

    def _follow_without_total(
        self, first: Page, path: str, key: str, params: dict[str, Any] | None, kind: str
    ) -> list[dict[str, Any]]:
        # No total_pages: follow `next` links, and never trust a full page to be the last one.
        items = list(first.items)
        page = first
        while page.items and (page.next_href or len(page.items) == page.per_page):
            page = self.fetch_page(path, key, page.number + 1, params, kind)
            items.extend(page.items)
        return items

    # -- reads --------------------------------------------------------------------------------

    def list_campaigns(self) -> list[dict[str, Any]]:
        return self.fetch_all("campaigns", KEY_CAMPAIGNS, kind="campaigns_page")

    def list_people(
        self,
        modified_since: datetime | None = None,
        *,
        map_fn: MapFn | None = None,
        cache: PageCache | None = None,
        progress: PageProgress | None = None,
    ) -> list[dict[str, Any]]:
        """Every entity (people and units alike) of the campaign, optionally modified since."""
        params = None
        if modified_since is not None:
            params = {"filter": f"modified_date gt '{odata_datetime(modified_since)}'"}
        return self.fetch_all(
            self._c("/people"),
            KEY_PEOPLE,
            params=params,
            kind="people_page",
            map_fn=map_fn,
            cache=cache,
            progress=progress,
        )

    def list_connection_types(self, *, cache: PageCache | None = None) -> list[dict[str, Any]]:
        return self._read_catalog(
            self._c("/connection_types"), KEY_CONNECTION_TYPES, "connection_types", cache
        )

    def list_entity_types(self, *, cache: PageCache | None = None) -> list[dict[str, Any]]:
        return self._read_catalog(self._c("/entity_types"), KEY_ENTITY_TYPES, "entity_types", cache)

    def _read_catalog(self, path: str, key: str, kind: str, cache: PageCache | None) -> list[dict[str, Any]]:
        """A verification-only catalog: a page in an unexpected shape is no evidence either way,
        so it raises BadResponseError at once instead of being retried like a truncated page."""
        items: list[dict[str, Any]] = []
        n = 1
        while True:
            page = cache.get(n) if cache is not None else None
            if page is None:
                page = self.fetch_page(path, key, n, None, kind, retry_bad_shape=False)
                if cache is not None:
                    cache.put(page)
            items.extend(page.items)
            more = page.total_pages is not None and n < page.total_pages
            if not more and not (page.total_pages is None and page.items and page.next_href):
                return _dedupe(items)
            n += 1

    def get_entity(self, entity_id: str) -> dict[str, Any]:
        body = self.api.request_json("GET", self._c(f"/people/{entity_id}"), kind="entity")
        if isinstance(body, dict) and isinstance(body.get("person"), dict):
            body = body["person"]
        if not isinstance(body, dict):
            raise BadResponseError(f"entity {entity_id}: expected an object", api=self.api.name)
        return body

    def connections_listing(
        self, entity_id: str, *, cache: PageCache | None = None, kind: str = "connections"
    ) -> Listing:
        """Connections of a person, or of a unit (then: all its members' connections)."""
        return Listing(self._c(f"/people/{entity_id}/connections"), KEY_CONNECTIONS, kind, cache=cache)

    def list_connections(self, entity_id: str) -> list[dict[str, Any]]:
        return self.fetch_listings([self.connections_listing(entity_id)])[0]

    def list_person_taggings(self, person_id: str) -> list[dict[str, Any]]:
        return self.fetch_all(self._c(f"/people/{person_id}/taggings"), KEY_TAGGINGS, kind="person_taggings")

    def list_connection_taggings(self, connection_id: str) -> list[dict[str, Any]]:
        return self.fetch_all(
            self._c(f"/connections/{connection_id}/taggings"), KEY_TAGGINGS, kind="connection_taggings"
        )

    def list_tags(
        self, *, map_fn: MapFn | None = None, cache: PageCache | None = None
    ) -> list[dict[str, Any]]:
        return self.fetch_all(self._c("/tags"), KEY_TAGS, kind="tags_page", map_fn=map_fn, cache=cache)

    def first_tag_taggings_page(self, tag_id: str) -> Page:
        return self.fetch_page(
            self._c(f"/tags/{tag_id}/taggings"), KEY_TAGGINGS, 1, None, "tag_taggings_page"
        )

    def tag_taggings_listing(self, tag_id: str, *, cache: PageCache | None = None) -> Listing:
        """Every tagging of one tag (on people and connections alike)."""
        return Listing(self._c(f"/tags/{tag_id}/taggings"), KEY_TAGGINGS, "tag_taggings_page", cache=cache)

    # -- writes -------------------------------------------------------------------------------

    def add_person_tags(self, person_id: str, tags: Sequence[dict[str, str]]) -> dict[str, Any]:
        """Person Signup Helper: add tags (``{action_builder:section, action_builder:field, name}``)
        to an existing person, named by their Action Builder identifier.

        Action Builder ignores, without an error, tags that match no existing section, field and
        response, so a 2xx proves nothing about the tags: read the person's taggings to know.
        ``remove_tags`` is UNCERTAIN (shared/reference/action-builder-api.md §1.6) and never sent.
        A 404 (the person is not in the campaign) raises NotFoundError.
        """
        body = {
            "person": {"identifiers": [f"{NATIVE_PREFIX}{person_id}"]},
            "add_tags": [
                {k: t[k] for k in ("action_builder:section", "action_builder:field", "name")} for t in tags
            ],
        }
        answer = self.api.request_json("POST", self._c("/people"), json_body=body, kind="person_signup")
        person = answer.get("person") if isinstance(answer, dict) else None
        if not isinstance(person, dict) or native_id(person) != person_id:
            raise BadResponseError(
                f"the signup helper answered for another person than {person_id}", api=self.api.name
            )
        return person

    def delete_tagging(self, tag_id: str, tagging_id: str) -> str:
        """Remove one tagging; ``already_gone`` when Action Builder answers 404."""
        try:
            self.api.request_json(
                "DELETE",
                self._c(f"/tags/{tag_id}/taggings/{tagging_id}"),
                kind="delete_tagging",
                allow_empty=True,
            )
        except NotFoundError:
            return "already_gone"
        return "deleted"


def _dedupe(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeats that appear when records shift between pages during a long listing."""
    seen: set[str] = set()
    out = []
    for item in items:
        ident = native_id(item)
        if ident is None:
            out.append(item)
            continue
        if ident in seen:
            continue
        seen.add(ident)
        out.append(item)
    return out
