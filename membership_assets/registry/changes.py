"""Has the registry's member list changed since the last look? (the polling sensor's question)

Two ways, chosen by whether the registry's ETag describes the whole list:

* ``whole_list_etag=True`` (a registry whose listing ETag changes with any member, e.g. one
  derived from the newest ``updated_at`` and the count): one conditional GET of the first page,
  a 304 means nothing changed. Cost per tick: 1 request, no body when unchanged.
* otherwise (default, and always when no ETag is sent): every page is read and the members'
  synced fields are hashed, so an email, name or status change and a join plus a leave that
  keep the count are all seen. Django's ConditionalGetMiddleware ETags are per page (a hash
  of that page's body), so they are sent back as ``If-None-Match`` page by page: an unchanged
  page answers 304 without a body and its stored digest is reused. Cost per tick:
  ceil(members / page_size) requests (2,273 members at 500 per page: 5), with 304s carrying
  no body; the registry still renders each page to compute its ETag.

The marker (sensor cursor) is JSON: ``{"etag": ...}`` or ``{"digest": ..., "pages": [[url,
etag, page digest], ...]}``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..connectors.errors import BadResponseError
from ..connectors.http import JsonApiClient

SYNCED_FIELDS = ("kennitala", "name", "email", "status")


def _page_digest(body: Any, normalize) -> str:
    if not isinstance(body, dict):
        raise BadResponseError("change check: page is not a JSON object")
    items = body.get("results", body.get("members"))
    if not isinstance(items, list):
        raise BadResponseError("change check: page has neither 'results' nor 'members'")
    rows = [{k: normalize(r, 0).get(k) for k in SYNCED_FIELDS} if isinstance(r, dict) else r for r in items]
    canonical = json.dumps({"count": body.get("count"), "rows": rows}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _get(api: JsonApiClient, url: str, params: dict | None, etag: str | None):
    headers = {"If-None-Match": etag} if etag else None
    resp = api.request("GET", url, params=params, headers=headers, kind="change_check")
    if resp.status_code == 304 and etag:
        return resp, None
    if resp.status_code >= 400 or resp.status_code == 304:
        raise BadResponseError(
            f"change check failed: HTTP {resp.status_code}", api=api.name, status=resp.status_code
        )
    try:
        return resp, resp.json()
    except ValueError as exc:
        raise BadResponseError("change check: body is not JSON", api=api.name) from exc


def _load(previous: str | None) -> dict[str, Any]:
    if not previous:
        return {}
    try:
        state = json.loads(previous)
    except ValueError:
        return {}  # an older cursor format: treat as unknown, the first look records a new one
    return state if isinstance(state, dict) else {}


def whole_list_marker(api: JsonApiClient, members_path: str, previous: str | None) -> str | None:
    """The listing's ETag as marker (None when the registry sends none)."""
    etag = _load(previous).get("etag")
    resp, _ = _get(api, members_path, {"page_size": 1}, etag)
    if resp.status_code == 304:
        return previous
    new = resp.headers.get("ETag")
    return json.dumps({"etag": new}) if new else None


def content_marker(
    api: JsonApiClient, members_path: str, page_size: int, previous: str | None, normalize
) -> str:
    """A digest of every member's synced fields, reusing unchanged pages' digests on 304."""
    known = {url: (etag, digest, nxt) for url, etag, digest, nxt in _load(previous).get("pages", [])}
    url: str | None = api.url_for(members_path) + f"?page_size={page_size}"
    pages: list[list[Any]] = []
    seen: set[str] = set()
    while url:
        if url in seen:
            raise BadResponseError("change check: the listing's next links loop", api=api.name)
        seen.add(url)
        etag, digest, nxt = known.get(url, (None, None, None))
        resp, body = _get(api, url, None, etag if digest else None)
        if body is not None:
            etag, digest = resp.headers.get("ETag"), _page_digest(body, normalize)
            nxt = body.get("next") if "results" in body else None
        pages.append([url, etag, digest, nxt])
        url = nxt
    total = hashlib.sha256("|".join(p[2] for p in pages).encode()).hexdigest()[:32]
    return json.dumps({"digest": total, "pages": pages})


def marker_digest(marker: str | None) -> str | None:
    """What two markers are compared by: the whole-list ETag or the content digest."""
    state = _load(marker)
    return state.get("etag") or state.get("digest")
