"""Registry preflight: auth, listing shape, count, paging, statuses, validation share, ETags.

Reads the listing once (as a sync would, without writing anything) plus one request for the
shape and one conditional request for ETag support. Reports counts and reject categories only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..connectors.errors import AuthError, NotFoundError, TransportError
from ..registry.validation import MISSING_STATUS_ACTIVE, validate_members
from .core import Check, fail, ok, safe_error

SYSTEM = "Registry"
KEY_FIX = (
    "set DJANGO_API_KEY_PASSWORD (or DJANGO_API_PASSWORD; and DJANGO_AUTH_SCHEME: Token or Bearer) "
    "to a staff API token"
)


def check_registry(django: Any, policy: Any) -> list[Check]:
    try:
        client = django.open_client()
    except AuthError:  # no token configured: nothing to send
        return [fail(SYSTEM, "auth", "no API token configured", KEY_FIX)]
    try:
        checks, resp = _first_page(client, django)
        if resp is None:
            return checks
        listing = client.fetch_members()
        checks.append(ok(SYSTEM, "count", _count_seen(listing)))
        checks += status_and_validation(listing.rows, policy)
        checks.append(etag_check(client, django, resp))
        return checks
    finally:
        client.api.close()


def _first_page(client: Any, django: Any) -> tuple[list[Check], Any]:
    """Auth, shape and page size from page 1; the response is None when later checks can't run."""
    try:
        resp = client.api.request(
            "GET", client.members_path, params={"page_size": client.page_size}, kind="preflight"
        )
    except AuthError as exc:
        return [fail(SYSTEM, "auth", f"credentials rejected (HTTP {exc.status})", KEY_FIX)], None
    except TransportError as exc:
        return [
            fail(SYSTEM, "auth", f"registry unreachable: {safe_error(exc)}", "check DJANGO_API_URL")
        ], None
    if resp.status_code == 404:
        return [
            fail(SYSTEM, "auth", f"{client.members_path} not found (404)", "set DJANGO_MEMBERS_PATH")
        ], None
    if resp.status_code >= 400:
        return [
            fail(SYSTEM, "auth", f"HTTP {resp.status_code}", "check DJANGO_API_URL and the registry")
        ], None
    try:
        body = resp.json()
    except ValueError:
        return [
            fail(
                SYSTEM, "listing shape", "the answer is not JSON", "set DJANGO_API_URL / DJANGO_MEMBERS_PATH"
            )
        ], None
    checks = [ok(SYSTEM, "auth", f"{django.auth_scheme} token accepted")]
    shape = listing_shape(body, client.members_path)
    if shape is None:
        keys = sorted(body)[:10] if isinstance(body, dict) else type(body).__name__
        checks.append(
            fail(
                SYSTEM,
                "listing shape",
                f"neither DRF pages (count/next/results) nor {{members: [...]}}: {keys}",
                "point DJANGO_MEMBERS_PATH at the eligible-members listing",
            )
        )
        return checks, None
    checks.append(ok(SYSTEM, "listing shape", shape))
    checks.append(page_size_check(body, client.page_size))
    return checks, resp


def listing_shape(body: Any, path: str) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("results"), list) and "count" in body:
        if "felagar/api/full" in path:
            return "Ekklesia's /felagar/api/full/ (DRF pages)"
        return "DRF pages (count, next, results)"
    if isinstance(body, dict) and isinstance(body.get("members"), list):
        return "plain list {members: [...]}"
    return None


def page_size_check(body: dict[str, Any], asked: int) -> Check:
    if "results" not in body:
        return ok(SYSTEM, "page_size", "one plain list, no paging")
    got, count = len(body["results"]), body.get("count") or 0
    if got >= min(asked, count):
        return ok(SYSTEM, "page_size", f"honoured ({got} rows on page 1, asked {asked})")
    pages = -(-count // max(got, 1))
    return ok(SYSTEM, "page_size", f"capped at {got} (asked {asked}): {pages} requests per listing")


def _count_seen(listing: Any) -> str:
    declared = (
        f", matches the declared count {listing.declared_count}" if listing.declared_count is not None else ""
    )
    return f"{len(listing.rows)} rows over {listing.pages} page(s){declared}"


def status_and_validation(rows: list[dict[str, Any]], policy: Any) -> list[Check]:
    """Status present and mapped; the share of rows that validate, by reject category."""
    out = []
    absent = sum(1 for r in rows if not r.get("status_given", True))
    if rows and absent == len(rows):
        if policy.missing_status == MISSING_STATUS_ACTIVE:
            out.append(
                ok(SYSTEM, "status", "no status field; REGISTRY_MISSING_STATUS=active reads all as active")
            )
        else:
            out.append(
                fail(
                    SYSTEM,
                    "status",
                    f"none of {len(rows)} rows has a status field: every row would be rejected",
                    "point DJANGO_MEMBERS_PATH at a listing with status, or set REGISTRY_MISSING_STATUS=active "
                    "only if this endpoint lists members in good standing and nobody else",
                )
            )
    else:
        seen = Counter(str(r["status"]).strip().lower() for r in rows if isinstance(r.get("status"), str))
        unmapped = sorted(s for s in seen if s and s not in policy.statuses)
        shown = ", ".join(f"{s[:30]} ({seen[s]})" for s in sorted(seen)[:10])
        if unmapped:
            out.append(
                fail(
                    SYSTEM,
                    "status",
                    f"unmapped statuses: {', '.join(s[:30] for s in unmapped[:10])}",
                    "add them to REGISTRY_STATUS_MAP (JSON: status -> active/suspended/removed)",
                )
            )
        else:
            out.append(ok(SYSTEM, "status", f"every status mapped: {shown or 'none listed'}"))
    result = validate_members(rows, policy.statuses, missing_status=policy.missing_status)
    reasons = Counter(reason.split(":", 1)[0] for r in result.rejects for reason in r.reasons)
    share = len(result.rejects) / max(len(rows), 1)
    seen_text = f"{len(result.members)} of {len(rows)} rows valid ({1 - share:.1%})" + (
        "; rejected: " + ", ".join(f"{k} {n}" for k, n in reasons.most_common()) if reasons else ""
    )
    if share > policy.max_reject_fraction:
        out.append(
            fail(
                SYSTEM,
                "validation",
                seen_text,
                f"correct those rows in the registry, or raise REGISTRY_MAX_REJECT_FRACTION "
                f"(now {policy.max_reject_fraction:g}); syncs stop above it",
            )
        )
    else:
        out.append(ok(SYSTEM, "validation", seen_text))
    return out


def etag_check(client: Any, django: Any, first: Any) -> Check:
    """Whether the registry answers a conditional GET with 304 (the change sensor's cost)."""
    etag = first.headers.get("ETag")
    if not etag:
        seen = "no ETag: the change sensor reads and hashes every page each tick"
        if django.whole_list_etag:
            return fail(SYSTEM, "ETag", seen, "unset DJANGO_WHOLE_LIST_ETAG")
        return ok(SYSTEM, "ETag", seen)
    try:
        again = client.api.request(
            "GET",
            client.members_path,
            params={"page_size": client.page_size},
            headers={"If-None-Match": etag},
            kind="preflight",
        )
    except NotFoundError:
        again = None
    if again is not None and again.status_code == 304:
        return ok(SYSTEM, "ETag", "sent and honoured (304 Not Modified): the change sensor is cheap")
    seen = "ETag sent but a conditional GET is not answered 304: the sensor hashes every page"
    if django.whole_list_etag:
        return fail(SYSTEM, "ETag", seen, "unset DJANGO_WHOLE_LIST_ETAG")
    return ok(SYSTEM, "ETag", seen)
