"""Client for the Django member registry (Ekklesia Epic #43, shared/reference §3c).

Two response shapes are accepted: Django REST framework pagination ``{count, next, previous,
results}`` (what Ekklesia built) and the planned plain ``{"members": [...]}``. A paginated listing
must add up to ``count`` or it is an error: a truncated list must never look like members leaving.
Rows are reduced to ``kennitala, name, email, status``; Ekklesia's ``ssn`` and nested
``contact_info.email`` are read too.

Page-number paging is not a snapshot: if someone on page 1 leaves and someone joins before page 2
is read, the first member of page 2 slides onto page 1 and is never seen, yet ``count`` adds up.
So a listing that would leave a current member unseen is read again, until two consecutive
listings name the same rows in the same order, give or take members who joined at the end
(nothing moved while they were read), or the listing no longer leaves anyone unseen; after ``max_listings`` the sync fails. A registry that
is quiet, or where nobody is missing, costs one listing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..connectors.errors import BadResponseError, IncompleteListingError, NotFoundError
from ..connectors.http import JsonApiClient
from ..connectors.ratelimit import RateLimiter
from .changes import content_marker, marker_digest, whole_list_marker

MAX_LISTINGS = 4  # listings one sync may read to confirm who is really gone


class ListingMovedError(IncompleteListingError):
    """The registry's count changed while it was being paged through."""


@dataclass
class RegistryListing:
    rows: list[dict[str, Any]]
    shape: str  # "paginated" | "plain"
    pages: int
    declared_count: int | None
    listings: int = 1  # complete listings read to get this one (see the module docstring)

    @property
    def order(self) -> list[str | None]:
        return [r["kennitala"] for r in self.rows]


def normalize_row(raw: dict[str, Any], row_number: int) -> dict[str, Any]:
    contact = raw.get("contact_info") if isinstance(raw.get("contact_info"), dict) else {}
    return {
        "row_number": row_number,
        "kennitala": raw.get("kennitala", raw.get("ssn")),  # as sent: a number stays a number
        "name": raw.get("name"),
        "email": raw.get("email", contact.get("email")),
        "status": raw.get("status"),
        # No status field at all is not the same as a blank one (see REGISTRY_MISSING_STATUS).
        "status_given": "status" in raw,
    }


def _check_results(body: Any, page: int) -> None:
    if not isinstance(body, dict):
        raise BadResponseError(f"page {page}: expected a JSON object")
    if "results" in body:
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise BadResponseError(  # the type only: a value may quote a row
                f"page {page}: count is not a non-negative integer ({type(count).__name__})"
            )
        items = body["results"]
    elif "members" in body:
        items = body["members"]
    else:
        raise BadResponseError(f"page {page}: neither 'results' nor 'members' among {len(body)} keys")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadResponseError(f"page {page}: member list is not a list of objects")
    if "results" in body and body.get("next") and not items:
        raise IncompleteListingError(f"page {page} is empty but names a next page")


def _nothing_moved(before: list[str | None], after: list[str | None]) -> bool:
    """Two listings name the same rows in the same order, give or take rows added at the end.

    New members come last (DRF lists by id), so a join shifts nobody; only a row leaving (or
    moving) before others can hide one, and that changes what the two listings share.
    """
    shared = min(len(before), len(after))
    return before[:shared] == after[:shared]


MEMBERS_PATH = "api/members/eligible"  # Ekklesia's eligible-members listing (DJANGO_MEMBERS_PATH)
PAGE_SIZE = 500  # rows per page asked of the registry


class DjangoRegistryClient:
    def __init__(self, api: JsonApiClient, members_path: str = MEMBERS_PATH, page_size: int = PAGE_SIZE):
        self.api = api
        self.members_path = members_path
        self.page_size = page_size

    @classmethod
    def connect(
        cls,
        *,
        base_url: str,
        api_key: str,
        auth_scheme: str = "Token",
        members_path: str = MEMBERS_PATH,
        page_size: int = PAGE_SIZE,
        rate_limit: float = 10.0,
        max_attempts: int = 5,
        timeout: float = 60.0,
        log: Any = None,
        sleep: Any = None,
    ) -> DjangoRegistryClient:
        kwargs = {"sleep": sleep} if sleep is not None else {}
        api = JsonApiClient(
            name="django_registry",
            base_url=base_url,
            headers={"Authorization": f"{auth_scheme} {api_key}"},
            limiter=RateLimiter(rate_limit),
            max_attempts=max_attempts,
            timeout=timeout,
            log=log,
            **kwargs,
        )
        return cls(api, members_path, page_size)

    @property
    def stats(self):
        return self.api.stats

    def fetch_members(self) -> RegistryListing:
        """Every listed member, proven complete against ``count`` when the API paginates."""
        page = 1
        body = self.api.request_json(
            "GET",
            self.members_path,
            params={"page_size": self.page_size},
            kind="members_page",
            validate=lambda b: _check_results(b, 1),
        )
        if "members" in body and "results" not in body:
            rows = [normalize_row(r, i) for i, r in enumerate(body["members"], start=1)]
            return RegistryListing(rows=rows, shape="plain", pages=1, declared_count=None)
        declared = body["count"]
        raw = list(body["results"])
        while body.get("next"):
            page += 1
            current = page
            try:
                body = self.api.request_json(
                    "GET",
                    body["next"],
                    kind="members_page",
                    validate=lambda b, p=current: _check_results(b, p),
                )
            except NotFoundError as exc:
                # DRF answers 404 for a page past the end: the registry shrank while being read.
                raise ListingMovedError(
                    f"page {current} vanished while paging (the registry's count changed); retry when "
                    "it is not being edited",
                    api=self.api.name,
                ) from exc
            if body["count"] != declared:
                raise ListingMovedError(
                    f"the registry's count changed from {declared} to {body['count']} while paging; "
                    "retry when it is not being edited",
                    api=self.api.name,
                )
            raw.extend(body["results"])
        if len(raw) != declared:
            raise IncompleteListingError(
                f"the registry declared {declared} members but listed {len(raw)} over {page} pages; "
                "refusing to treat the missing ones as removed",
                api=self.api.name,
            )
        rows = [normalize_row(r, i) for i, r in enumerate(raw, start=1)]
        return RegistryListing(rows=rows, shape="paginated", pages=page, declared_count=declared)

    def fetch_confirmed(
        self, unseen: Callable[[RegistryListing], set[str]], max_listings: int = MAX_LISTINGS
    ) -> RegistryListing:
        """A complete listing whose absentees are really absent.

        ``unseen(listing)`` names the current members a listing does not list. While it names
        anyone, the registry is listed again; the answer is the first listing that agrees with
        the one before it (same rows in the same order, give or take new rows at the end), or
        that leaves nobody unseen. A count that
        changes while paging also costs a listing. Fails after ``max_listings`` listings.
        """
        listing: RegistryListing | None = None
        for attempt in range(1, max_listings + 1):
            try:
                again = self.fetch_members()
            except ListingMovedError:
                if attempt == max_listings:
                    raise
                continue  # edited while paging: read it again
            again.listings = attempt
            if again.shape == "plain" or not unseen(again):
                return again
            if listing is not None and _nothing_moved(listing.order, again.order):
                return again
            listing = again
        raise IncompleteListingError(
            f"the registry changed between each of {max_listings} listings, so members missing from "
            "the last one may only have moved between pages; refusing to remove anyone on that "
            "evidence (retry when the registry is not being edited)",
            api=self.api.name,
        )

    def change_marker(self, previous: str | None, whole_list_etag: bool = False) -> tuple[str, bool]:
        """(marker, changed) since the marker ``previous`` (see registry/changes.py for the cost).

        A whole-list ETag is trusted only when the registry is known to send one
        (``whole_list_etag``); otherwise every page's synced fields are hashed, so any change to
        a member is seen, not only a change of the count or of the first page.
        """
        marker = whole_list_marker(self.api, self.members_path, previous) if whole_list_etag else None
        if marker is None:
            marker = content_marker(self.api, self.members_path, self.page_size, previous, normalize_row)
        return marker, marker_digest(marker) != marker_digest(previous)
