"""The sync service's API reference: an OpenAPI 3 document built from a declared description of
each route (method, path, auth, parameters, responses with their reason codes).

Served without auth at ``/api/openapi.json`` (it holds no data) and written to docs/openapi.json by
``python -m membership_assets openapi``; a test keeps both equal and requires every route of the
app to be declared here. Stdlib only: webhook.py imports this module, never the other way round.
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

OPENAPI_PATH = "/api/openapi.json"
PAGE = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
API_VERSION = "1.0"  # the contract with Django and API callers, not the package's release

# Refusals any screened route may answer before its handler runs (webhook.py ``Receiver.screen``).
SCREENED = {
    400: ("bad Content-Length", ("bad_length",)),
    403: ("client address not in SYNC_API_ALLOWED_IPS", ("client_not_allowed",)),
    413: ("body over 16 KiB", ("body_too_large",)),
    414: ("path and query over 2 KiB", ("target_too_long",)),
    429: ("per-client rate limit (Retry-After)", ("rate_limited",)),
    431: ("headers over the limit", ("headers_too_large",)),
}
DATABASE = {
    503: ("the members database is busy or down (Retry-After)", ("database_busy", "database_unavailable"))
}
SIGNATURE = ("unsigned", "bad_timestamp", "stale_timestamp", "bad_signature")
API_AUTH = {401: ("missing or wrong API key or signature", (*SIGNATURE, "bad_api_key", "bad_request_id"))}
JSON_BODY = ("body_not_json", "body_too_deep", "body_not_object", "client_disconnected")


@dataclass(frozen=True)
class Operation:
    """One route as its callers see it."""

    method: str
    path: str
    summary: str
    auth: str  # "webhook" | "api" | "admin" | "none"
    responses: dict[int, tuple[str, tuple[str, ...]]]  # status -> (meaning, reason codes)
    parameters: tuple[dict, ...] = ()
    body: dict | None = None  # JSON schema of the request body
    tag: str = "sync API"
    screened: bool = True
    content_type: str = "application/json"
    extra: dict = field(default_factory=dict)


_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20},
}
_WEBHOOK_BODY = {
    "type": "object",
    "required": ["event_id", "event"],
    "properties": {
        "event_id": {"type": "string", "format": "uuid"},
        "event": {"type": "string", "enum": ["member.saved", "member.deleted", "ping"]},
        "member_id": {
            "type": "integer",
            "minimum": 1,
            "description": "Django's primary key; no personal data",
        },
        "occurred_at": {"type": "string", "format": "date-time"},
    },
}
_ADMIN_PAGE = {200: ("HTML page", ()), 303: ("redirect (to sign in when not signed in)", ())}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/api/webhooks/registry",
        "Django's signed member-change webhook: recorded as a pending event, synced after a quiet period",
        "webhook",
        {
            202: ('{"accepted": true, "event_id"}: recorded', ()),
            200: (
                '{"accepted": false, "duplicate": true} for a repeated event_id; {"ping": "ok"} for a ping',
                (),
            ),
            400: (
                "not the contract's body",
                (
                    *JSON_BODY,
                    "event_id_not_uuid",
                    "event_unknown",
                    "member_id_invalid",
                    "occurred_at_invalid",
                ),
            ),
            401: ("missing, wrong or stale signature", SIGNATURE),
            429: ("too many unconsumed events (Retry-After)", ("too_many_pending_events",)),
            **DATABASE,
        },
        body=_WEBHOOK_BODY,
        tag="webhook",
    ),
    Operation(
        "post",
        "/api/sync/trigger",
        "Ask for a sync (or with dry_run a preview) at the sensor's next tick; idempotent by request id",
        "api",
        {
            202: ('{"requested": true, "request_id", "dry_run", "detail"}', ()),
            200: ('{"requested": false, "duplicate": true, "request_id"}: the same request id again', ()),
            400: ("bad body or request id", (*JSON_BODY, "dry_run_not_boolean", "bad_request_id")),
            **API_AUTH,
            **DATABASE,
        },
        body={"type": "object", "properties": {"dry_run": {"type": "boolean", "default": False}}},
    ),
    Operation(
        "get",
        "/api/sync/status",
        "Latest sync, latest applied sync, pending events, last event received",
        "api",
        {
            200: ('{"last_sync", "last_applied_sync", "pending_events", ...}', ()),
            409: ("a signed call's request id used twice", ("request_replayed",)),
            **API_AUTH,
            **DATABASE,
        },
    ),
    Operation(
        "get",
        "/api/sync/logs",
        "The latest N syncs from membership_sync_log, newest first (counts; error type only for a failed one)",
        "api",
        {
            200: ('{"syncs": [...]}', ()),
            400: ("limit outside 1-200", ("limit_out_of_range",)),
            409: ("a signed call's request id used twice", ("request_replayed",)),
            **API_AUTH,
            **DATABASE,
        },
        parameters=(_LIMIT,),
    ),
    Operation(
        "get",
        "/healthz",
        "Liveness: 200 while the process serves (no data)",
        "none",
        {200: ('{"status": "ok"}', ())},
        tag="probes",
        screened=False,
    ),
    Operation(
        "get",
        "/readyz",
        "Readiness: the members database answers",
        "none",
        {200: ('{"ready": true}', ()), 503: ('{"ready": false}', ())},
        tag="probes",
        screened=False,
    ),
    Operation(
        "get",
        OPENAPI_PATH,
        "This document (no auth, no data)",
        "none",
        {200: ("OpenAPI 3 document", ())},
        tag="reference",
    ),
    # The admin page (registry/admin.py), mounted beside the API by `sync-api`: HTML for people.
    Operation(
        "get",
        "/",
        "Redirect to the admin page",
        "none",
        {303: ("to /admin/", ())},
        tag="admin page",
        content_type="text/html",
    ),
    Operation(
        "get",
        "/admin",
        "Redirect to the admin page",
        "none",
        {303: ("to /admin/", ())},
        tag="admin page",
        content_type="text/html",
    ),
    *(
        Operation(
            "get", f"/admin{path}", summary, "admin", _ADMIN_PAGE, tag="admin page", content_type="text/html"
        )
        for path, summary in (
            ("/", "Status: last sync, eligible count, pending events"),
            ("/history", "Sync history"),
            ("/syncs/{sync_id}", "One sync: each member it changed (kind, page)"),
            ("/quarantine", "Rows Django sent that were quarantined, with reasons"),
            ("/events", "Change events received"),
            ("/sync", "Preview & sync"),
        )
    ),
    Operation(
        "get",
        "/admin/login",
        "Sign-in form",
        "none",
        {200: ("HTML page", ())},
        tag="admin page",
        content_type="text/html",
    ),
    Operation(
        "post",
        "/admin/login",
        "Sign in (rate limited)",
        "none",
        {
            303: ("signed in", ()),
            200: ("form again with an error", ()),
            429: ("too many attempts", ("rate_limited",)),
        },
        tag="admin page",
        content_type="text/html",
    ),
    *(
        Operation(
            "post",
            f"/admin{path}",
            summary,
            "admin",
            {
                303: ("done; back to the page", ()),
                403: (
                    "no session, bad CSRF token or cross-origin",
                    ("no_session", "bad_csrf_token", "cross_origin"),
                ),
                409: ("no preview possible here", ("preview_unavailable",)),
            },
            tag="admin page",
            content_type="text/html",
        )
        for path, summary in (
            ("/logout", "Sign out"),
            ("/sync/preview", "Start a preview (reads Django now, writes nothing)"),
            ("/sync/now", "Request the sync a guard-accepted preview showed (15 minutes, once)"),
        )
    ),
    Operation(
        "get",
        "/admin/static/admin.css",
        "Stylesheet",
        "none",
        {200: ("CSS", ())},
        tag="admin page",
        content_type="text/css",
    ),
)

SECURITY = {
    "webhook": [{"webhookSignature": [], "webhookTimestamp": []}],
    "api": [{"apiKey": []}, {"signedCall": [], "webhookTimestamp": [], "requestId": []}],
    "admin": [{"adminSession": []}],
    "none": [],
}


def _operation(op: Operation) -> dict:
    responses = {**(SCREENED if op.screened else {}), **op.responses}
    out: dict = {"summary": op.summary, "tags": [op.tag], "security": SECURITY[op.auth], "responses": {}}
    for status in sorted(responses):
        meaning, reasons = responses[status]
        if status >= 400 and op.content_type == "application/json":
            schema = {"$ref": "#/components/schemas/Refusal"}
            content = {
                "application/json": {
                    "schema": schema,
                    "examples": {r: {"value": {"error": r}} for r in reasons},
                }
            }
            out["responses"][str(status)] = {
                "description": meaning + (f" ({', '.join(reasons)})" if reasons else ""),
                "content": content,
            }
        else:
            text = meaning + (f" ({', '.join(reasons)})" if reasons else "")
            out["responses"][str(status)] = {"description": text}
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.body is not None:
        out["requestBody"] = {
            "required": op.auth == "webhook",
            "content": {"application/json": {"schema": op.body}},
        }
    return out


@functools.cache
def spec() -> dict:
    """The OpenAPI 3.1 document of the sync service."""
    paths: dict = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    header = {"type": "apiKey", "in": "header"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "membership_assets sync service (webhook receiver, sync API, admin page)",
            "version": API_VERSION,
            "description": "Served by `python -m membership_assets sync-api`. Every refusal is JSON "
            '`{"error": "<reason code>"}`; the reason codes and their fixes: docs/troubleshooting.md. '
            "Signing: docs/sync-api.md and docs/django-integration.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "webhookSignature": {
                    **header,
                    "name": "X-Membership-Signature",
                    "description": 'sha256=<hex HMAC-SHA256 of "{timestamp}." + raw body>, secret REGISTRY_WEBHOOK_SECRET_PASSWORD',
                },
                "webhookTimestamp": {
                    **header,
                    "name": "X-Membership-Timestamp",
                    "description": "unix seconds; more than 300 s off is refused",
                },
                "apiKey": {**header, "name": "X-Api-Key", "description": "SYNC_API_KEY_PASSWORD"},
                "signedCall": {
                    **header,
                    "name": "X-Membership-Signature",
                    "description": 'sha256=HMAC-SHA256 of "{timestamp}.{METHOD} {path?query}\\n{request id}\\n" + body',
                },
                "requestId": {
                    **header,
                    "name": "X-Membership-Request-Id",
                    "description": "a fresh UUID, single use",
                },
                "adminSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "membership_admin",
                    "description": "the admin page's signed session (__Host- prefixed over HTTPS)",
                },
            },
            "schemas": {
                "Refusal": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
            },
        },
    }


def render() -> str:
    return json.dumps(spec(), indent=2, sort_keys=True) + "\n"


async def openapi_endpoint(request) -> object:
    """GET /api/openapi.json: the document above (no auth: it describes, it holds no data)."""
    from starlette.responses import JSONResponse

    return JSONResponse(spec())


def main(argv: list[str] | None = None) -> int:
    """Write docs/openapi.json, or with --check exit 1 when it is not current."""
    parser = argparse.ArgumentParser(prog="openapi", description=main.__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        current = PAGE.exists() and PAGE.read_text() == render()
        print(f"{PAGE} is {'current' if current else 'out of date: run python -m membership_assets openapi'}")
        return 0 if current else 1
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
    return 0
