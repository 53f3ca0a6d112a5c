"""The registry webhook receiver and sync API (`python -m membership_assets sync-api`).

Django POSTs a signed event on every member save/delete (/work/shared contract: HMAC-SHA256 of
``f"{timestamp}." + body`` with ``REGISTRY_WEBHOOK_SECRET_PASSWORD``); the event is recorded in
the members database and the ``registry_change_events`` sensor turns pending events into one
debounced ``registry_sync`` run. Admins read ``/api/sync/status`` and ``/api/sync/logs`` and ask
for a sync with ``POST /api/sync/trigger``.

Every request passes, in order: the IP allowlist (403), the per-client rate limit (429), the body
size cap (413), authentication (401), then parsing (400); only then is anything written, with
bound parameters. Logs carry reason codes and ids this service generated, never what a sender
wrote, and no personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from .admin import admin_page
from .events import SOURCE_API, SOURCE_WEBHOOK, SYNC_REQUESTED, WEBHOOK_EVENTS, ChangeEventStore
from .history import LOG_COLUMNS, sync_rows  # noqa: F401  (LOG_COLUMNS: the API's fields)
from .store import MembersStore

log = logging.getLogger("membership_assets.sync_api")

WEBHOOK_PATH = "/api/webhooks/registry"
TIMESTAMP_HEADER = "x-membership-timestamp"
SIGNATURE_HEADER = "x-membership-signature"
API_KEY_HEADER = "x-api-key"
SIGNATURE_PREFIX = "sha256="
LOCAL_WEBHOOK_SECRET = "simulated-webhook-secret"  # documented, not a secret: the local default
LOCAL_API_KEY = "simulated-sync-api-key"


@dataclass(frozen=True)
class SyncApiSettings:
    members_db_url: str
    webhook_secret: str
    api_key: str = ""  # empty: the sync API accepts signed requests only
    allowed_networks: tuple[str, ...] = ()  # empty: any client
    replay_window_seconds: int = 300
    max_body_bytes: int = 16 * 1024
    rate_per_second: float = 50.0  # per client address; a Django bulk save sends bursts
    rate_burst: int = 600
    host: str = "127.0.0.1"
    port: int = 8767
    auto_migrate: bool = True  # production: `python -m membership_assets migrate` first


# -- pure pieces ------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The contract's signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def api_message(method: str, path_qs: str, body: bytes) -> bytes:
    """What a signed sync-API request signs: method and path bound in, so a captured signed GET
    cannot be replayed as a trigger."""
    return f"{method.upper()} {path_qs}\n".encode() + body


def verify_signature(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float, window: int
) -> str | None:
    """None when authentic and fresh, else the reason (never echoing what the sender wrote)."""
    if not timestamp or not signature:
        return "unsigned"
    if not timestamp.isdigit() or len(timestamp) > 12:
        return "bad_timestamp"
    if abs(now - int(timestamp)) > window:
        return "stale_timestamp"
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.strip().encode()):
        return "bad_signature"
    return None


@dataclass(frozen=True)
class WebhookEvent:
    event_id: str
    event: str
    member_id: int
    occurred_at: datetime


def parse_event(body: bytes) -> WebhookEvent | str:
    """The contract's body, or the reason it is malformed."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "body_not_json"
    if not isinstance(data, dict):
        return "body_not_object"
    try:
        event_id = str(uuid.UUID(str(data.get("event_id", ""))))
    except ValueError:
        return "event_id_not_uuid"
    if data.get("event") not in WEBHOOK_EVENTS:
        return "event_unknown"
    member_id = data.get("member_id")
    if not isinstance(member_id, int) or isinstance(member_id, bool) or not 0 < member_id < 2**63:
        return "member_id_invalid"
    occurred = data.get("occurred_at")
    try:
        occurred_at = datetime.fromisoformat(str(occurred).replace("Z", "+00:00"))
    except ValueError:
        return "occurred_at_invalid"
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=timezone.utc)
    return WebhookEvent(event_id, data["event"], member_id, occurred_at)


class ClientRateLimiter:
    """Token bucket per client address (in memory: one receiver process)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, since = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - since) * self.rate)
            if len(self._buckets) > 10_000:  # a spoofed-source flood must not grow memory
                self._buckets.clear()
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return False
            self._buckets[client] = (tokens - 1, now)
            return True

    def retry_after(self) -> int:
        return max(1, int(1 / self.rate + 0.999))


# -- the app ----------------------------------------------------------------------------------


class Rejected(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        self.status, self.reason, self.headers = status, reason, headers or {}


@dataclass
class _Receiver:
    settings: SyncApiSettings
    events: ChangeEventStore
    clock: Callable[[], float] = time.time
    limiter: ClientRateLimiter = field(init=False)
    networks: list = field(init=False)

    def __post_init__(self):
        self.limiter = ClientRateLimiter(self.settings.rate_per_second, self.settings.rate_burst)
        self.networks = [
            ipaddress.ip_network(n.strip(), strict=False) for n in self.settings.allowed_networks
        ]

    # Checks that every endpoint shares, cheapest first.
    async def admit(self, request: Request) -> bytes:
        client = request.client.host if request.client else ""
        if self.networks:
            try:
                address = ipaddress.ip_address(client)
            except ValueError:
                raise Rejected(403, "client_not_allowed") from None
            if not any(address in n for n in self.networks):
                raise Rejected(403, "client_not_allowed")
        if not self.limiter.allow(client):
            raise Rejected(429, "rate_limited", {"Retry-After": str(self.limiter.retry_after())})
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise Rejected(400, "bad_length")
        if declared is not None and int(declared) > self.settings.max_body_bytes:
            raise Rejected(413, "body_too_large")
        body = bytearray()
        async for chunk in request.stream():  # chunked bodies are capped as they arrive
            body.extend(chunk)
            if len(body) > self.settings.max_body_bytes:
                raise Rejected(413, "body_too_large")
        return bytes(body)

    def authenticate_api(self, request: Request, body: bytes) -> None:
        key = request.headers.get(API_KEY_HEADER)
        if key is not None:
            if self.settings.api_key and hmac.compare_digest(key.encode(), self.settings.api_key.encode()):
                return
            raise Rejected(401, "bad_api_key")
        path_qs = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        reason = verify_signature(
            self.settings.webhook_secret,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            api_message(request.method, path_qs, body),
            self.clock(),
            self.settings.replay_window_seconds,
        )
        if reason:
            raise Rejected(401, reason)

    # Endpoints.
    async def webhook(self, request: Request) -> JSONResponse:
        body = await self.admit(request)
        reason = verify_signature(
            self.settings.webhook_secret,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            body,
            self.clock(),
            self.settings.replay_window_seconds,
        )
        if reason:
            raise Rejected(401, reason)
        event = parse_event(body)
        if isinstance(event, str):
            raise Rejected(400, event)
        recorded = self.events.record(
            event_id=event.event_id,
            event=event.event,
            source=SOURCE_WEBHOOK,
            member_id=event.member_id,
            occurred_at=event.occurred_at,
        )
        if not recorded:
            log.info("webhook duplicate event %s", event.event_id)
            return JSONResponse({"accepted": False, "duplicate": True, "event_id": event.event_id}, 200)
        log.info("webhook %s recorded (%s)", event.event_id, event.event)
        return JSONResponse({"accepted": True, "event_id": event.event_id}, 202)

    async def trigger(self, request: Request) -> JSONResponse:
        body = await self.admit(request)
        self.authenticate_api(request, body)
        options: Any = {}
        if body.strip():
            try:
                options = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise Rejected(400, "body_not_json") from None
        if not isinstance(options, dict) or not isinstance(options.get("dry_run", False), bool):
            raise Rejected(400, "dry_run_not_boolean")
        event_id = str(uuid.uuid4())
        self.events.record(
            event_id=event_id, event=SYNC_REQUESTED, source=SOURCE_API, dry_run=options.get("dry_run", False)
        )
        log.info("sync requested through the API (%s)", event_id)
        return JSONResponse(
            {
                "requested": True,
                "request_id": event_id,
                "dry_run": options.get("dry_run", False),
                "detail": "the registry_change_events sensor starts registry_sync at its next tick",
            },
            202,
        )

    async def status(self, request: Request) -> JSONResponse:
        body = await self.admit(request)
        self.authenticate_api(request, body)
        latest = self._log_rows(limit=1)
        applied = self._log_rows(limit=1, applied_only=True)
        return JSONResponse(
            {
                "last_sync": latest[0] if latest else None,
                "last_applied_sync": applied[0] if applied else None,
                **_jsonable(self.events.stats()),
            }
        )

    async def logs(self, request: Request) -> JSONResponse:
        body = await self.admit(request)
        self.authenticate_api(request, body)
        raw = request.query_params.get("limit", "20")
        if not raw.isdigit() or not 1 <= int(raw) <= 200:
            raise Rejected(400, "limit_out_of_range")
        return JSONResponse({"syncs": self._log_rows(limit=int(raw))})

    def _log_rows(self, limit: int, applied_only: bool = False) -> list[dict[str, Any]]:
        return sync_rows(self.events.engine, limit=limit, applied_only=applied_only)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            v = (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).isoformat()
        out[k] = v
    return out


def create_app(
    settings: SyncApiSettings, clock: Callable[[], float] = time.time, extra_routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """The receiver as an ASGI app (served by uvicorn; tests drive it in process). ``extra_routes``
    (the admin page, see ``serve``) are served beside the API."""
    store = MembersStore.from_url(settings.members_db_url)
    store.ensure_schema(migrate=settings.auto_migrate)
    events = ChangeEventStore(store)
    receiver = _Receiver(settings, events, clock)

    def guarded(endpoint):
        async def handle(request: Request) -> JSONResponse:
            started = time.perf_counter()
            try:
                response = await endpoint(request)
            except Rejected as exc:
                response = JSONResponse({"error": exc.reason}, exc.status, headers=exc.headers)
                log.warning("rejected %s: %s", endpoint.__name__, exc.reason)
            _access_log(endpoint.__name__, response.status_code, started)
            return response

        return handle

    routes = [
        Route(WEBHOOK_PATH, guarded(receiver.webhook), methods=["POST"]),
        Route("/api/sync/trigger", guarded(receiver.trigger), methods=["POST"]),
        Route("/api/sync/status", guarded(receiver.status), methods=["GET"]),
        Route("/api/sync/logs", guarded(receiver.logs), methods=["GET"]),
        *extra_routes,
    ]
    return Starlette(routes=routes)


def _access_log(route: str, status: int, started: float) -> None:
    # Our own access log names the route, not the requested path: a path is what a sender wrote.
    log.info("%s -> %d in %.1f ms", route, status, (time.perf_counter() - started) * 1000)


def serve(settings: SyncApiSettings) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # uvicorn's access log prints the decoded request path (a sender could forge log lines).
    uvicorn.run(
        create_app(settings, extra_routes=admin_page(settings.members_db_url)),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="info",
    )
