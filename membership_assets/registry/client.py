"""Client for the Django member registry (Ekklesia Epic #43, shared/reference §3c).

Two response shapes are accepted: Django REST framework pagination ``{count, next, previous,
results}`` (what Ekklesia built) and the planned plain ``{"members": [...]}``. A paginated listing
must add up to ``count`` or it is an error: a truncated list must never look like members leaving.
Rows are reduced to ``kennitala, name, email, status``; Ekklesia's ``ssn`` and nested
``contact_info.email`` are read too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..connectors.errors import BadResponseError, IncompleteListingError
from ..connectors.http import JsonApiClient
from ..connectors.ratelimit import RateLimiter


@dataclass
class RegistryListing:
    rows: list[dict[str, Any]]
    shape: str  # "paginated" | "plain"
    pages: int
    declared_count: int | None


def normalize_row(raw: dict[str, Any], row_number: int) -> dict[str, Any]:
    contact = raw.get("contact_info") if isinstance(raw.get("contact_info"), dict) else {}
    return {
        "row_number": row_number,
        "kennitala": raw.get("kennitala", raw.get("ssn")),
        "name": raw.get("name"),
        "email": raw.get("email", contact.get("email")),
        "status": raw.get("status"),
    }


def _check_results(body: Any, page: int) -> None:
    if not isinstance(body, dict):
        raise BadResponseError(f"page {page}: expected a JSON object")
    if "results" in body:
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise BadResponseError(f"page {page}: count is not a non-negative integer: {count!r}")
        items = body["results"]
    elif "members" in body:
        items = body["members"]
    else:
        raise BadResponseError(f"page {page}: neither 'results' nor 'members' in keys {sorted(body)}")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadResponseError(f"page {page}: member list is not a list of objects")
    if "results" in body and body.get("next") and not items:
        raise IncompleteListingError(f"page {page} is empty but names a next page")


class DjangoRegistryClient:
    def __init__(self, api: JsonApiClient, members_path: str = "api/members/eligible", page_size: int = 500):
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
        members_path: str = "api/members/eligible",
        page_size: int = 500,
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
            body = self.api.request_json(
                "GET", body["next"], kind="members_page", validate=lambda b, p=current: _check_results(b, p)
            )
            if body["count"] != declared:
                raise IncompleteListingError(
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

    def change_marker(self, previous: str | None) -> tuple[str, bool]:
        """(marker, changed): a cheap conditional GET of the first page.

        The marker is the server's ETag when it sends one (a 304 means unchanged); otherwise a
        digest of the first page, which sees the count and the first member change.
        """
        headers = {"If-None-Match": previous} if previous else None
        resp = self.api.request(
            "GET", self.members_path, params={"page_size": 1}, headers=headers, kind="change_check"
        )
        if resp.status_code == 304 and previous:
            return previous, False
        if resp.status_code >= 400:
            raise BadResponseError("change check failed", api=self.api.name, status=resp.status_code)
        marker = resp.headers.get("ETag")
        if not marker:
            try:
                body = resp.json()
            except ValueError as exc:
                raise BadResponseError("change check: body is not JSON", api=self.api.name) from exc
            marker = "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
        return marker, marker != previous
