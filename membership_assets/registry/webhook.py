"""The registry webhook receiver and sync API (`python -m membership_assets sync-api`).

Django POSTs a signed event on every member save/delete (/work/shared contract: HMAC-SHA256 of
``f"{timestamp}." + body`` with ``REGISTRY_WEBHOOK_SECRET_PASSWORD``); the event is recorded in
the members database and the ``registry_change_events`` sensor turns pending events into one
debounced ``registry_sync`` run. Admins read ``/api/sync/status`` and ``/api/sync/logs`` and ask
for a sync with ``POST /api/sync/trigger``. ``/healthz`` and ``/readyz`` serve probes.

Built for the open internet: every request of every route (also routes mounted later, e.g. the
admin page) passes ``Guard``: the client address from trusted proxies only, the IP allowlist
(403), a per-client rate limit (429), the body cap (413); then the endpoint authenticates (401,
in memory: never the database) and parses strictly (400). Database work runs on a bounded thread
pool with a bounded wait (503 when the database is stuck), so a locked database never stalls the
event loop. Logs carry reason codes and ids this service generated, never what a sender wrote.
Slow clients and connection floods are handled below the app, in ``sync_server.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import anyio
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from ..connectors.ratelimit import ClientRateLimiter
from .admin import AdminSettings, admin_page
from .credentials import LOCAL_API_KEY, LOCAL_WEBHOOK_SECRET, is_loopback, weakness
from .events import (
    PING,
    SOURCE_API,
    SOURCE_WEBHOOK,
    SYNC_REQUESTED,
    WEBHOOK_EVENTS,
    ChangeEventStore,
    ReceiverStore,
)
from .history import sync_rows  # its LOG_COLUMNS are the fields of /api/sync/logs
from .openapi import OPENAPI_PATH, openapi_endpoint
from .store import MembersStore
from .sync_server import run

__all__ = ["LOCAL_API_KEY", "LOCAL_WEBHOOK_SECRET"]  # re-exported: the stand-in signs with it

log = logging.getLogger("membership_assets.sync_api")

WEBHOOK_PATH = "/api/webhooks/registry"
HEALTH_PATHS = ("/healthz", "/readyz")  # probes: no auth, no allowlist, no rate limit
TIMESTAMP_HEADER = "x-membership-timestamp"
SIGNATURE_HEADER = "x-membership-signature"
REQUEST_ID_HEADER = "x-membership-request-id"
API_KEY_HEADER = "x-api-key"
SIGNATURE_PREFIX = "sha256="
MAX_TARGET_BYTES = 2048  # path and query of any request this service serves
# Refusals that mean "a sender we should trust cannot get through" (wrong secret, clock off).
AUTH_REASONS = ("unsigned", "bad_timestamp", "stale_timestamp", "bad_signature", "bad_api_key")

_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() accepts "²", int() does not
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


@dataclass(frozen=True)
class SyncApiSettings:
    """Everything the receiver needs; ``registry/settings.py`` reads it from the environment."""

    members_db_url: str
    webhook_secret: str
    api_key: str = ""  # empty: the sync API accepts signed requests only
    previous_webhook_secret: str = ""  # rotation: also accepted until removed
    previous_api_key: str = ""
    allowed_networks: tuple[str, ...] = ()  # empty: any client
    trusted_proxies: tuple[str, ...] = ()  # empty: X-Forwarded-For is never read
    replay_window_seconds: int = 300
    max_body_bytes: int = 16 * 1024
    max_header_bytes: int = 16 * 1024
    max_json_depth: int = 8  # the contract's bodies are flat objects
    rate_per_second: float = 50.0  # per client address; a Django bulk save sends bursts
    rate_burst: int = 600
    rate_clients: int = 10_000  # buckets kept (least recently used forgotten first)
    header_timeout: float = 10.0  # seconds from connection (or keep-alive reuse) to full headers
    body_timeout: float = 20.0  # seconds from the first byte of a request to its last
    keepalive_timeout: float = 5.0
    max_connections: int = 1000  # kept below the file limit; idle ones are dropped first
    db_timeout: float = 5.0  # longest wait for the members database before answering 503
    db_threads: int = 8
    max_pending_events: int = 100_000  # a leaked secret cannot fill the database
    stats_seconds: float = 30.0  # how often refusal counts reach the members database
    host: str = "127.0.0.1"
    port: int = 8767
    auto_migrate: bool = True  # production: `python -m membership_assets migrate` first

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.webhook_secret, self.previous_webhook_secret) if s)

    @property
    def api_keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.api_key, self.previous_api_key) if k)


class SyncApiConfigError(ValueError):
    """Every configuration problem at once, each naming its variable."""

    def __init__(self, problems: Sequence[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


CREDENTIAL_VARIABLES = {
    "webhook_secret": "REGISTRY_WEBHOOK_SECRET_PASSWORD",
    "previous_webhook_secret": "REGISTRY_WEBHOOK_SECRET_PREVIOUS_PASSWORD",
    "api_key": "SYNC_API_KEY_PASSWORD",
    "previous_api_key": "SYNC_API_KEY_PREVIOUS_PASSWORD",
}


def settings_problems(settings: SyncApiSettings, production: bool) -> list[str]:
    """What is wrong with ``settings`` (empty: fine to serve). Public constants and weak secrets
    are refused in production and on any address but loopback, whatever the environment says."""
    problems = []
    strict = production or not is_loopback(settings.host)
    where = "in production" if production else f"on {settings.host} (not loopback)"
    if not settings.webhook_secret.strip():
        problems.append(
            "REGISTRY_WEBHOOK_SECRET_PASSWORD is not set or empty; unsigned webhooks are never accepted"
        )
    for attr, var in CREDENTIAL_VARIABLES.items():
        value = getattr(settings, attr)
        if not value or not strict:
            continue
        why = weakness(value)
        if why:
            problems.append(f"{var} {why}; refused {where}")
    for var, networks in (
        ("SYNC_API_ALLOWED_IPS", settings.allowed_networks),
        ("SYNC_API_TRUSTED_PROXIES", settings.trusted_proxies),
    ):
        for n in networks:
            try:
                ipaddress.ip_network(n, strict=False)
            except ValueError:
                problems.append(f"{var}: {n[:60]!r} is not an IP address or CIDR network")
    return problems


# -- pure pieces ------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The contract's signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def api_message(method: str, path_qs: str, request_id: str, body: bytes) -> bytes:
    """What a signed sync-API request signs: method, path and a fresh request id bound in, so a
    captured signed call can be replayed neither as another call nor as itself."""
    return f"{method.upper()} {path_qs}\n{request_id}\n".encode() + body


def parse_uuid(value: str | None) -> str | None:
    """A canonical lowercase UUID, or None (strict: no braces, no URNs, ASCII only)."""
    if value is None or len(value) != 36:
        return None
    value = value.lower()
    return value if _UUID.fullmatch(value) else None


def verify_signature(
    secrets: Sequence[str],
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    window: int,
) -> str | None:
    """None when authentic (under any of ``secrets``) and fresh, else the reason (never echoing
    what the sender wrote)."""
    if not timestamp or not signature:
        return "unsigned"
    if not _DIGITS.fullmatch(timestamp):
        return "bad_timestamp"
    if abs(now - int(timestamp)) > window:
        return "stale_timestamp"
    signature = signature.strip().lower()
    if not _SIGNATURE.fullmatch(signature):
        return "bad_signature"
    given = signature.encode()
    if not any(hmac.compare_digest(sign(s, timestamp, body).encode(), given) for s in secrets):
        return "bad_signature"
    return None


def json_depth(body: bytes) -> int | None:
    """Deepest nesting of arrays/objects in ``body`` (strings skipped), without parsing it:
    ``json.loads`` recurses, and 2,000 ``[`` would exhaust the stack. None when a string never
    ends (not JSON). One left-to-right pass: linear in the body, whatever its quotes."""
    depth = deepest = 0
    for token in _JSON_TOKENS.finditer(body):
        t = token.group()
        if t == b'"':
            return None  # a quote whose string never closes
        if t in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif t in (b"]", b"}"):
            depth -= 1
    return deepest


# A JSON string (any escaped byte, newlines too), a bracket, or a lone quote (unterminated).
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]|"', re.DOTALL)


def parse_json(body: bytes, max_depth: int) -> Any | str:
    """The decoded JSON value, or a reason code."""
    depth = json_depth(body)
    if depth is None:
        return "body_not_json"
    if depth > max_depth:
        return "body_too_deep"
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "body_not_json"


@dataclass(frozen=True)
class WebhookEvent:
    event_id: str
    event: str
    member_id: int | None
    occurred_at: datetime | None


def parse_event(body: bytes, max_depth: int = 8) -> WebhookEvent | str:
    """The contract's body, or the reason it is malformed. ``{"event": "ping"}`` is a ping."""
    data = parse_json(body, max_depth)
    if isinstance(data, str):
        return data
    if not isinstance(data, dict):
        return "body_not_object"
    event = data.get("event")
    if event == PING:
        return WebhookEvent("", PING, None, None)
    event_id = parse_uuid(data.get("event_id")) if isinstance(data.get("event_id"), str) else None
    if event_id is None:
        return "event_id_not_uuid"
    if event not in WEBHOOK_EVENTS:
        return "event_unknown"
    member_id = data.get("member_id")
    if not isinstance(member_id, int) or isinstance(member_id, bool) or not 0 < member_id < 2**63:
        return "member_id_invalid"
    occurred = data.get("occurred_at")
    if not isinstance(occurred, str) or len(occurred) > 40 or not occurred.isascii():
        return "occurred_at_invalid"
    try:
        occurred_at = datetime.fromisoformat(occurred.replace("Z", "+00:00"))
    except ValueError:
        return "occurred_at_invalid"
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=timezone.utc)
    # Stored as UTC: SQLite keeps no offset, so a +05:00 time would come back 5 hours off.
    return WebhookEvent(event_id, event, member_id, occurred_at.astimezone(timezone.utc))


def parse_limit(raw: str | None, default: int = 20, maximum: int = 200) -> int | None:
    """``?limit=`` as an int in 1..maximum, or None when it is anything else."""
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        return None
    return int(raw)


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy; then the nearest
    address in ``X-Forwarded-For`` that is not a trusted proxy (the one our proxy saw)."""
    if not trusted or not forwarded_for or not _in_any(peer, trusted):
        return peer
    hop = peer
    for item in reversed(forwarded_for.split(",")[-16:]):
        try:
            hop = str(ipaddress.ip_address(item.strip()))
        except ValueError:
            return hop  # garbage before our proxy: the last address our proxies vouched for
        if not _in_any(hop, trusted):
            return hop
    return hop


def _in_any(address: str, networks: Sequence) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def rate_key(address: str) -> str:
    """One bucket per IPv4 address, one per IPv6 /64 (a host there holds the whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class RefusalCounter:
    """Refusals and acceptances by reason code since the last drain (memory only: counting never
    touches the database; a background task writes the totals every ``stats_seconds``)."""

    def __init__(self):
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] += 1

    def restore(self, counts: dict[str, int]) -> None:
        with self._lock:
            self._counts.update(counts)

    def drain(self) -> dict[str, int]:
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
        return counts


# -- the app ----------------------------------------------------------------------------------


class Rejected(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        self.status, self.reason, self.headers = status, reason, headers or {}


@dataclass
class Receiver:
    """The endpoints and the state they share (limiter, counters, database access)."""

    settings: SyncApiSettings
    events: ChangeEventStore
    clock: Callable[[], float] = time.time
    limiter: ClientRateLimiter = field(init=False)
    refusals: RefusalCounter = field(init=False)
    networks: list = field(init=False)
    proxies: list = field(init=False)
    pending_events: int = 0  # refreshed by the background task
    _db_slots: anyio.CapacityLimiter | None = None
    _ready: tuple[float, bool] = (0.0, False)

    def __post_init__(self):
        s = self.settings
        self.limiter = ClientRateLimiter(s.rate_per_second, s.rate_burst, s.rate_clients)
        self.refusals = RefusalCounter()
        self.networks = [ipaddress.ip_network(n, strict=False) for n in s.allowed_networks]
        self.proxies = [ipaddress.ip_network(n, strict=False) for n in s.trusted_proxies]
        self.receiver_store = ReceiverStore(self.events.store)

    async def db(self, fn: Callable, *args, **kwargs) -> Any:
        """Run blocking database work on the bounded pool; 503 when it takes too long."""
        if self._db_slots is None:
            self._db_slots = anyio.CapacityLimiter(self.settings.db_threads)
        try:
            with anyio.fail_after(self.settings.db_timeout):
                return await anyio.to_thread.run_sync(
                    functools.partial(fn, *args, **kwargs), limiter=self._db_slots, abandon_on_cancel=True
                )
        except TimeoutError:
            raise Rejected(503, "database_busy", {"Retry-After": "5"}) from None
        except sa.exc.OperationalError:
            raise Rejected(503, "database_unavailable", {"Retry-After": "5"}) from None

    # Screening that every route shares (Guard calls it before routing), cheapest first.
    def screen(self, scope: dict) -> None:
        peer = scope["client"][0] if scope.get("client") else ""
        forwarded = _header(scope, b"x-forwarded-for") if self.proxies else None
        client = client_address(peer, forwarded, self.proxies)
        if client != peer:  # every route (also mounted ones) sees the real client
            scope["client"] = (client, 0)
        if scope.get("path") in HEALTH_PATHS:
            return
        # The connection layer caps headers still arriving; these cap ones that came in one read.
        if len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) > MAX_TARGET_BYTES:
            raise Rejected(414, "target_too_long")
        if sum(len(k) + len(v) for k, v in scope.get("headers", ())) > self.settings.max_header_bytes:
            raise Rejected(431, "headers_too_large")
        if self.networks and not _in_any(client, self.networks):
            raise Rejected(403, "client_not_allowed")
        if not self.limiter.allow(rate_key(client)):
            raise Rejected(429, "rate_limited", {"Retry-After": str(self.limiter.retry_after())})
        declared = _header(scope, b"content-length")
        if declared is not None and not _DIGITS.fullmatch(declared):
            raise Rejected(400, "bad_length")
        if declared is not None and int(declared) > self.settings.max_body_bytes:
            raise Rejected(413, "body_too_large")

    async def read_body(self, request: Request) -> bytes:
        body = bytearray()
        try:
            async for chunk in request.stream():  # chunked bodies are capped as they arrive
                body.extend(chunk)
                if len(body) > self.settings.max_body_bytes:
                    raise Rejected(413, "body_too_large")
        except ClientDisconnect:
            raise Rejected(400, "client_disconnected") from None
        return bytes(body)

    def authenticate_api(self, request: Request, body: bytes) -> str | None:
        """The signed call's request id (single use), or None for an API-key call."""
        key = request.headers.get(API_KEY_HEADER)
        if key is not None:
            given = key.encode("latin-1")
            if any(hmac.compare_digest(given, k.encode()) for k in self.settings.api_keys):
                return None
            raise Rejected(401, "bad_api_key")
        request_id = parse_uuid(request.headers.get(REQUEST_ID_HEADER))
        if request_id is None:
            raise Rejected(401, "unsigned" if SIGNATURE_HEADER not in request.headers else "bad_request_id")
        # From the scope, not request.url: that parses the Host header, which a sender writes.
        query = request.scope.get("query_string", b"").decode("latin-1")
        path_qs = request.scope["path"] + (f"?{query}" if query else "")
        reason = verify_signature(
            self.settings.webhook_secrets,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            api_message(request.method, path_qs, request_id, body),
            self.clock(),
            self.settings.replay_window_seconds,
        )
        if reason:
            raise Rejected(401, reason)
        return request_id

    async def single_use(self, request_id: str | None) -> None:
        """A signed call's request id is stored with a unique key: the second use is refused."""
        if request_id is not None and not await self.db(self.receiver_store.claim_request_id, request_id):
            raise Rejected(409, "request_replayed")

    # Endpoints.
    async def webhook(self, request: Request) -> JSONResponse:
        body = await self.read_body(request)
        reason = verify_signature(
            self.settings.webhook_secrets,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            body,
            self.clock(),
            self.settings.replay_window_seconds,
        )
        if reason:
            raise Rejected(401, reason)
        event = parse_event(body, self.settings.max_json_depth)
        if isinstance(event, str):
            raise Rejected(400, event)
        self.refusals.add("accepted")
        if event.event == PING:  # the preflight's check: authentic, stored nowhere, starts nothing
            return JSONResponse({"ping": "ok"}, 200)
        if self.pending_events >= self.settings.max_pending_events:
            raise Rejected(429, "too_many_pending_events", {"Retry-After": "60"})
        recorded = await self.db(
            self.events.record,
            event_id=event.event_id,
            event=event.event,
            source=SOURCE_WEBHOOK,
            member_id=event.member_id,
            occurred_at=event.occurred_at,
        )
        if not recorded:
            log.info("webhook duplicate event %s", event.event_id)
            return JSONResponse({"accepted": False, "duplicate": True, "event_id": event.event_id}, 200)
        self.pending_events += 1
        log.info("webhook %s recorded (%s)", event.event_id, event.event)
        return JSONResponse({"accepted": True, "event_id": event.event_id}, 202)

    async def trigger(self, request: Request) -> JSONResponse:
        body = await self.read_body(request)
        signed_id = self.authenticate_api(request, body)
        options: Any = {}
        if body.strip():
            options = parse_json(body, self.settings.max_json_depth)
            if isinstance(options, str):
                raise Rejected(400, options)
        if not isinstance(options, dict) or not isinstance(options.get("dry_run", False), bool):
            raise Rejected(400, "dry_run_not_boolean")
        # Idempotent by request id: the signed call's own, or one an API-key caller chose.
        request_id = signed_id or parse_uuid(request.headers.get(REQUEST_ID_HEADER))
        if request_id is None and REQUEST_ID_HEADER in request.headers:
            raise Rejected(400, "bad_request_id")
        request_id = request_id or str(uuid.uuid4())
        dry_run = options.get("dry_run", False)
        recorded = await self.db(
            self.events.record, event_id=request_id, event=SYNC_REQUESTED, source=SOURCE_API, dry_run=dry_run
        )
        if not recorded:
            return JSONResponse({"requested": False, "duplicate": True, "request_id": request_id}, 200)
        log.info("sync requested through the API (%s)", request_id)
        return JSONResponse(
            {
                "requested": True,
                "request_id": request_id,
                "dry_run": dry_run,
                "detail": f"the registry_change_events sensor starts "
                f"{'registry_preview (a dry run)' if dry_run else 'registry_sync'} at its next tick",
            },
            202,
        )

    async def status(self, request: Request) -> JSONResponse:
        body = await self.read_body(request)
        await self.single_use(self.authenticate_api(request, body))
        latest = await self.db(self._log_rows, limit=1)
        applied = await self.db(self._log_rows, limit=1, applied_only=True)
        stats = await self.db(self.events.stats)
        return JSONResponse(
            {
                "last_sync": latest[0] if latest else None,
                "last_applied_sync": applied[0] if applied else None,
                **_jsonable(stats),
            }
        )

    async def logs(self, request: Request) -> JSONResponse:
        body = await self.read_body(request)
        request_id = self.authenticate_api(request, body)
        limit = parse_limit(request.query_params.get("limit"))
        if limit is None:
            raise Rejected(400, "limit_out_of_range")
        await self.single_use(request_id)
        return JSONResponse({"syncs": await self.db(self._log_rows, limit=limit)})

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> JSONResponse:
        """Ready when the members database answers (cached a second: probes cannot load it)."""
        checked, ok = self._ready
        if time.monotonic() - checked > 1.0:
            try:
                await self.db(self.receiver_store.ping)
                ok = True
            except Rejected:
                ok = False
            self._ready = (time.monotonic(), ok)
        return JSONResponse({"ready": ok}, 200 if ok else 503)

    def _log_rows(self, limit: int, applied_only: bool = False) -> list[dict[str, Any]]:
        return sync_rows(self.events.engine, limit=limit, applied_only=applied_only)

    def housekeeping(self) -> None:
        """Blocking: write refusal counts, forget old request ids, refresh the pending count."""
        counts = self.refusals.drain()
        try:
            self.receiver_store.add_counts(counts, self.settings.replay_window_seconds)
            self.pending_events = self.events.stats()["pending_events"]
        except sa.exc.SQLAlchemyError:
            self.refusals.restore(counts)  # kept for the next round
            raise

    async def housekeeping_loop(self) -> None:
        while True:
            try:
                await self.db(self.housekeeping)
            except Exception as exc:  # the receiver keeps serving; the next round retries
                log.warning("housekeeping failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.stats_seconds)

    def routes(self) -> list[BaseRoute]:
        """The receiver's routes; other pages mount beside them (see ``create_app``)."""
        return [
            Route(WEBHOOK_PATH, self.webhook, methods=["POST"]),
            Route("/api/sync/trigger", self.trigger, methods=["POST"]),
            Route("/api/sync/status", self.status, methods=["GET"]),
            Route("/api/sync/logs", self.logs, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"]),  # docs/openapi.json, no data
        ]


def _header(scope: dict, name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k == name]
    return b",".join(values).decode("latin-1") if values else None


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            v = (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).isoformat()
        out[k] = v
    return out


class Guard:
    """ASGI wrapper around the whole app, so every route (also ones mounted later) is screened,
    answers 4xx with a reason code, and never 500s with a traceback in the log."""

    def __init__(self, app, receiver: Receiver):
        self.app, self.receiver = app, receiver

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        state = {"status": 0}

        async def tracked_send(message) -> None:
            if message["type"] == "http.response.start":
                if state["status"]:
                    return  # Guard already answered (body over the cap)
                state["status"] = message["status"]
            elif state.get("closed"):
                return
            await send(message)

        received = 0
        cap = self.receiver.settings.max_body_bytes

        async def capped_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > cap + 1024 and not state["status"]:  # a mounted route reading it all
                await _reject(send, Rejected(413, "body_too_large"), self.receiver)
                state.update(status=413, closed=True)
                return {"type": "http.disconnect"}
            return message

        try:
            self.receiver.screen(scope)
            await self.app(scope, capped_receive, tracked_send)
        except Rejected as exc:
            if not state["status"]:
                state["status"] = exc.status
                await _reject(send, exc, self.receiver)
        except ClientDisconnect:
            pass  # the client left; nothing to answer, nothing to log
        except Exception as exc:  # a bug of ours: one bounded line, no traceback quoting input
            log.error("unhandled %s in %s", type(exc).__name__, _route_name(scope))
            if not state["status"]:
                state["status"] = 500
                with contextlib.suppress(Exception):
                    await JSONResponse({"error": "internal"}, 500)(scope, receive, send)
        # Our own access log names the route, not the requested path: a path is what a sender wrote.
        log.info(
            "%s -> %d in %.1f ms", _route_name(scope), state["status"], (time.perf_counter() - started) * 1000
        )


def _route_name(scope: dict) -> str:
    endpoint = scope.get("endpoint")
    return getattr(endpoint, "__name__", None) or "unrouted"


async def _reject(send, exc: Rejected, receiver: Receiver) -> None:
    receiver.refusals.add(exc.reason)
    log.warning("rejected: %s", exc.reason)
    response = JSONResponse({"error": exc.reason}, exc.status, headers=exc.headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive():
    return {"type": "http.disconnect"}


def create_app(
    settings: SyncApiSettings,
    clock: Callable[[], float] = time.time,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The receiver as an ASGI app (served by uvicorn). ``extra_routes`` (e.g. the admin page's
    Mount) are served beside the API under the same Guard and server limits."""
    store = MembersStore.from_url(settings.members_db_url)
    store.ensure_schema(migrate=settings.auto_migrate)
    receiver = Receiver(settings, ChangeEventStore(store), clock)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(receiver.housekeeping_loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                await receiver.db(receiver.housekeeping)  # the last counts are not lost

    async def rejected(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Rejected)
        receiver.refusals.add(exc.reason)
        log.warning("rejected %s: %s", _route_name(request.scope), exc.reason)
        return JSONResponse({"error": exc.reason}, exc.status, headers=exc.headers)

    app = Starlette(
        routes=[*receiver.routes(), *extra_routes], lifespan=lifespan, exception_handlers={Rejected: rejected}
    )
    app.state.receiver = receiver
    # Inside Starlette's ServerErrorMiddleware, outside its exception handlers: Guard sees every
    # request first and every unhandled error last.
    app.add_middleware(Guard, receiver=receiver)
    return app


def serve(settings: SyncApiSettings, admin: AdminSettings) -> None:
    run(create_app(settings, extra_routes=admin_page(settings.members_db_url, admin)), settings)
