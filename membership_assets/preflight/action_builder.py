"""Action Builder preflight: token, campaign, tag fields, type names, paging, per-unit listings,
rate-limit answers and the cost of a full scan, in about a dozen GET requests.

The names are confirmed the way the scan confirms them (``action_builder.evidence``): from the
connection and entity type catalogs, else from a small sample's own connections.
"""

from __future__ import annotations

import math
from typing import Any

from ..action_builder.client import (
    DOCUMENTED_RATE_LIMIT,
    PER_PAGE_MAX,
    ActionBuilderClient,
    ActionBuilderCredentials,
    native_id,
)
from ..action_builder.evidence import (
    NameCheck,
    connection_type_names,
    entity_type_names,
    missing_catalog,
    read_catalog,
)
from ..action_builder.records import RecordError, connection_from_api
from ..action_builder.rules import FieldNames
from ..action_builder.scan import SAMPLE_SIZE
from ..connectors.errors import ApiError, AuthError, NotFoundError, TransportError
from .core import Check, fail, ok, safe_error, skip

SYSTEM = "Action Builder"
PREFLIGHT_SAMPLE = 5  # people whose own connections are read (the scan itself reads 10)
CREDENTIALS_VAR = "ACTION_BUILDER_CREDENTIALS_PASSWORD"
NAME_VARS = {
    "unit": "ACTION_BUILDER_UNIT_FIELD",
    "membership_type": "ACTION_BUILDER_TYPE_FIELD",
    "membership_status": "ACTION_BUILDER_STATUS_FIELD",
}


def check_action_builder(resource: Any) -> list[Check]:
    """Every Action Builder line; stops early only where later checks would be meaningless."""
    try:
        creds = ActionBuilderCredentials.from_json(resource.credentials)
    except ValueError as exc:
        return [fail(SYSTEM, "credentials", str(exc), f"set {CREDENTIALS_VAR} to {{api_token, subdomain}}")]
    client = ActionBuilderClient.connect(
        api_token=creds.api_token,
        base_url=resource.base_url or creds.base_url,
        campaign_id=resource.campaign_id,
        rate_limit=resource.rate_limit,
        max_attempts=2,
        timeout=resource.timeout_seconds,
    )
    try:
        return _checks(client, resource.field_names, bool(resource.campaign_id))
    finally:
        client.api.close()


def _checks(client: ActionBuilderClient, names: FieldNames, configured: bool) -> list[Check]:
    out: list[Check] = []
    campaign = _token_and_campaign(client, configured, out)
    if campaign is None:
        return out
    tags = client.list_tags()
    out += tag_field_checks(tags, names)
    people = client._c("/people")
    first = client.fetch_page(people, "osdi:people", 1, None, "people_page")
    out.append(page_check(first))
    # Listings may put one entity type first: the last page samples the other end.
    pages = [first]
    if (first.total_pages or 1) > 1:
        pages.append(client.fetch_page(people, "osdi:people", first.total_pages, None, "people_page"))
    entities = [e for p in pages for e in p.items]
    persons = [e for e in entities if str(e.get("action_builder:entity_type", "")).lower() == "person"]
    sample = [native_id(p) for p in persons[:PREFLIGHT_SAMPLE] if native_id(p)]
    own = {pid: client.list_connections(pid) for pid in sample}
    out += name_checks(client, names, own, entities)
    out.append(_unit_listing_check(client, names, own))
    out.append(rate_limit_check(client.stats.snapshot()))
    out.append(estimate_check(pages, len(persons) / max(len(entities), 1), tags, names))
    return out


def _token_and_campaign(client: ActionBuilderClient, configured: bool, out: list[Check]) -> dict | None:
    try:
        campaigns = client.list_campaigns()
    except AuthError as exc:
        out.append(fail(SYSTEM, "token", safe_error(exc), f"set {CREDENTIALS_VAR} with a valid api_token"))
        return None
    except TransportError as exc:
        fix = f"check the subdomain in {CREDENTIALS_VAR} (or ACTION_BUILDER_BASE_URL) and outbound HTTPS"
        out.append(fail(SYSTEM, "token", f"API unreachable: {safe_error(exc)}", fix))
        return None
    out.append(ok(SYSTEM, "token", f"accepted; it sees {len(campaigns)} campaign(s)"))
    listed = {native_id(c): c.get("name") for c in campaigns if native_id(c)}
    shown = ", ".join(f"{n} ({i})" for i, n in list(listed.items())[:10]) or "none"
    fix = f"set ACTION_BUILDER_CAMPAIGN_ID to one of: {shown}"
    if not configured:
        if len(listed) != 1:
            out.append(fail(SYSTEM, "campaign", f"not set and the token sees {len(listed)}", fix))
            return None
        client.campaign_id = next(iter(listed))
    try:
        body = client.api.request_json("GET", client._c(), kind="campaign")
    except NotFoundError:
        out.append(fail(SYSTEM, "campaign", f"{client.campaign_id} not found", fix))
        return None
    name = body.get("name") if isinstance(body, dict) else None
    out.append(ok(SYSTEM, "campaign", f"{name!r} ({client.campaign_id})"))
    return body if isinstance(body, dict) else {}


def tag_field_checks(tags: list[dict[str, Any]], names: FieldNames) -> list[Check]:
    """Each configured tag field present in the catalog with at least one value."""
    values: dict[str, set[str]] = {}
    for t in tags:
        field, value = t.get("action_builder:field"), t.get("name", t.get("action_builder:name"))
        if isinstance(field, str):
            values.setdefault(field, set()).update([value] if isinstance(value, str) else [])
    out = []
    for key, field in (
        ("unit", names.unit),
        ("membership_type", names.membership_type),
        ("membership_status", names.membership_status),
    ):
        found = values.get(field)
        if found:
            shown = ", ".join(sorted(found)[:5]) + (", ..." if len(found) > 5 else "")
            out.append(ok(SYSTEM, f"tag field {field!r}", f"{len(found)} values ({shown})"))
        else:
            known = ", ".join(repr(f) for f in sorted(values)[:15]) or "none"
            why = "has no values" if field in values else f"not in the tag catalog (fields: {known})"
            out.append(
                fail(SYSTEM, f"tag field {field!r}", why, f"set {NAME_VARS[key]} to the campaign's field")
            )
    return out


def page_check(first: Any) -> Check:
    """Page 1 of the people listing read as documented (parse_page already refused anything else)."""
    return ok(
        SYSTEM,
        "paging",
        f"people page 1 of {first.total_pages}: {len(first.items)} items, per_page {first.per_page} "
        f"(documented max {PER_PAGE_MAX}), embedded osdi:people",
    )


def name_checks(
    client: ActionBuilderClient,
    names: FieldNames,
    own: dict[str, list[dict[str, Any]]],
    entities: list[dict[str, Any]],
) -> list[Check]:
    """Connection and unit entity type names: catalog first, else the sample's own reads."""
    conn = NameCheck(
        "connection type", names.connection_type, "ACTION_BUILDER_CONNECTION_TYPE", catalog_decisive=False
    )
    unit = NameCheck(
        "unit entity type", names.unit_entity_type, "ACTION_BUILDER_UNIT_ENTITY_TYPE", casefold=True
    )
    problems = {}
    for check, read, namer, endpoint in (
        (conn, client.list_connection_types, connection_type_names, "connection_types"),
        (unit, client.list_entity_types, entity_type_names, "entity_types"),
    ):
        try:
            catalog = read_catalog(read(), namer)
        except AuthError:
            raise
        except ApiError as exc:
            catalog = missing_catalog(f"HTTP {exc.status}" if exc.status else exc.detail)
        problems[check.what] = check.against_catalog(catalog, endpoint)
    conn.observe(
        "the sample's own connections", (c.get("connection_type", "") for cs in own.values() for c in cs)
    )
    types = (str(e.get("action_builder:entity_type", "")) for e in entities)
    unit.observe("people page 1", (t for t in types if t.lower() != "person"))
    out = []
    for check, var in ((conn, conn.variable), (unit, unit.variable)):
        # A catalog that disagrees is decisive here unless the sample shows the name.
        problem = problems[check.what] or check.against_reads(conclusive=check.catalog_disagrees is not None)
        if problem:
            out.append(fail(SYSTEM, check.what, problem, f"set {var} to the campaign's name"))
        elif check.confirmed_by:
            out.append(ok(SYSTEM, check.what, check.evidence()))
        else:
            seen = ", ".join(sorted({n for c in check.seen.values() for n in c})) or "nothing"
            # Not contradicted either: the scan confirms it from its own reads or refuses.
            out.append(skip(SYSTEM, check.what, f"{check.evidence()}; the small sample shows {seen}"))
    return out


def _unit_listing_check(client: ActionBuilderClient, names: FieldNames, own: dict[str, list[dict]]) -> Check:
    """One unit's connection listing must show the sampled members' own connections."""
    mine: dict[str, set[str]] = {}
    for pid, raws in own.items():
        for i, raw in enumerate(raws):
            try:
                c = connection_from_api(raw, pid, i)
            except RecordError:
                continue
            if c.connection_type == names.connection_type and c.other_id:
                mine.setdefault(c.other_id, set()).add(c.connection_id)
    if not mine:
        return skip(SYSTEM, "per-unit listings", "no sampled person has a unit connection to compare")
    unit_id, expected = next(iter(mine.items()))
    listed = {native_id(r) for r in client.list_connections(unit_id)}
    if expected <= listed:
        return ok(SYSTEM, "per-unit listings", "a unit's listing shows its sampled members' own connections")
    return ok(
        SYSTEM,
        "per-unit listings",
        f"a unit's listing lacks {len(expected - listed)} of {len(expected)} sampled connections: full "
        "scans will read every person's connections (about one request per person more)",
    )


def rate_limit_check(stats: dict[str, Any]) -> Check:
    n = stats.get("rate_limited_429", 0)
    seen = f"{n} answered 429 (with Retry-After, paced)" if n else "no 429"
    return ok(SYSTEM, "rate limit", f"{seen} in {stats.get('requests', 0)} requests")


def estimate_check(
    pages: list[Any], person_share: float, tags: list[dict[str, Any]], names: FieldNames
) -> Check:
    """Requests and time of a full scan at the documented 4 req/s, from the pages read."""
    first, last = pages[0], pages[-1]
    total_pages = first.total_pages or 1
    entities = (total_pages - 1) * first.per_page + len(last.items) if len(pages) > 1 else len(first.items)
    persons = round(entities * person_share)
    units = entities - persons
    relevant = [t for t in tags if t.get("action_builder:field") in names.tag_fields]
    requests = (
        total_pages
        + math.ceil(len(tags) / PER_PAGE_MAX)
        + 2  # connection and entity type catalogs
        + units
        + math.ceil(persons / PER_PAGE_MAX)  # per-unit connection listings
        + SAMPLE_SIZE
        + len(relevant)
        + math.ceil(2 * persons / PER_PAGE_MAX)  # per-tag taggings (person + connection)
    )
    minutes = requests / DOCUMENTED_RATE_LIMIT / 60
    return ok(
        SYSTEM,
        "full scan estimate",
        f"{entities} entities (~{persons} people, ~{units} units by the pages sampled): ~{requests} "
        f"requests, ~{minutes:.1f} min at {DOCUMENTED_RATE_LIMIT:g} req/s",
    )
