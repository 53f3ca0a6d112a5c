"""The admin page of the sync service (``/admin``): the voting roll's state for Ekklesia admins.

Server-rendered HTML (Jinja2, autoescaped, one stylesheet, no script) on the members database:
status and freshness of the roll, sync history with who or what started each, a sync's changes
(names: only here, only signed in), quarantined rows with what to fix in Django, pending webhook
events, and "preview a sync" then "sync now" (which records a sync request that the
``registry_change_events`` sensor turns into a guarded ``registry_sync`` run).

Same bar as the API: every request is rate-limited per client and its body capped; a page needs
a signed session (``admin_auth``), every form a session's token and a same-origin ``Origin``;
any input yields a page with a 4xx status, a failure of the database a 503, never a 500 or a
traceback. Logs name the route and a reason code, never what a client sent or a member's data.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from ..connectors.ratelimit import ClientRateLimiter
from ..limits import MEMBER_ELIGIBILITY_MAX_AGE
from .admin_auth import LoginLimiter, Session, SessionSigner, authenticate
from .delta import KINDS
from .events import SOURCE_ADMIN, SYNC_REQUESTED, ChangeEventStore, change_events
from .history import aware, quarantined, quarantined_count, source_label, sync_changes, sync_rows
from .preview import PREVIEW_MAX_AGE_SECONDS, Planner, PreviewRunner
from .store import MembersStore

log = logging.getLogger("membership_assets.sync_api.admin")

PREFIX = "/admin"
COOKIE = "membership_admin"
MAX_FORM_BYTES = 4 * 1024
HISTORY_PAGE = 50
CHANGES_PAGE = 200
QUARANTINE_ROWS = 1000
EVENTS_SHOWN = 200
MAX_PAGE = 10_000
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages name members: never kept by a browser or proxy
}

# Flash messages are chosen by code (a query parameter), so a link cannot put words on the page.
NOTICES = {
    "requested": "Sync requested. Dagster's registry_change_events sensor starts it within seconds; "
    "it checks the guards again before writing anything. Follow it under History.",
    "already_requested": "A sync request is already waiting for Dagster; it was not requested twice.",
    "preview_unknown": "That preview is no longer the latest one. Preview again.",
    "preview_not_done": "The preview has not finished yet.",
    "preview_used": "A sync was already requested from that preview. Preview again for another one.",
    "preview_stale": f"That preview is older than {PREVIEW_MAX_AGE_SECONDS // 60} minutes. Preview again.",
    "guards_block": "The guards would stop this sync, so it cannot be started here.",
    "roll_changed": "Another sync was applied after the preview. Preview again to see what is left.",
    "signed_out": "You are signed out.",
    "session_expired": "Your session ended. Sign in again.",
}

# What to fix in Django for each reason a row was quarantined (validation.py's reason codes).
_FIELD_WORDS = {"name": "name", "email": "email address", "status": "status", "kennitala": "kennitala"}
REASON_FIXES = {
    "kennitala_missing": "The member has no kennitala in Django. Enter it on the member's record.",
    "kennitala_invalid_format": "The kennitala is not ten digits. Correct it on the member's record "
    "(ten digits; a hyphen after the sixth is fine).",
    "kennitala_invalid_checksum": "The kennitala's check digit does not match, so a digit is probably "
    "mistyped. Compare it with the member's ID and correct it.",
    "kennitala_invalid_date": "The kennitala does not start with a real date of birth (DDMMYY). Correct it.",
    "kennitala_is_organisation": "This kennitala belongs to an organisation, not a person. Correct the "
    "number, or remove the record if it is not a member.",
    "name_missing": "The member has no name. Enter the member's name.",
    "email_invalid": "The email address is not a valid address. Correct it or leave it empty.",
    "status_missing": "The member's status is empty. Set it (for example active or suspended).",
    "status_unknown": "The member's status is not one the sync knows. Use a known status, or ask the "
    "maintainers to add this one to REGISTRY_STATUS_MAP.",
    "status_field_absent": "Django's API sends no status for members. A developer must add it to the "
    "eligible-members endpoint.",
    "duplicate_kennitala_conflict": "Two records in Django have this kennitala with different details. "
    "Merge them, or correct the kennitala that is wrong.",
}
_FIELD_FIXES = {
    "too_long": "The {field} is longer than the voting roll can store. Shorten it.",
    "control_characters": "The {field} contains invisible control characters (often from copy and "
    "paste). Retype it.",
    "not_text": "Django's API sends the {field} as something other than text. A developer should check "
    "the API.",
}


def reason_fix(code: str) -> str:
    """A plain sentence saying what to change in Django for one reason code."""
    code = code.strip()
    base = code.split(":", 1)[0]  # "status_unknown:<value>": the value is what Django sent
    if base in REASON_FIXES:
        return REASON_FIXES[base]
    field_name, _, problem = base.partition("_")
    if field_name in _FIELD_WORDS and problem in _FIELD_FIXES:
        return _FIELD_FIXES[problem].format(field=_FIELD_WORDS[field_name])
    return "Check this member's record in Django."


def reason_codes(reasons: str | None) -> list[str]:
    return [r.strip().split(":", 1)[0] for r in (reasons or "").split(",") if r.strip()]


@dataclass
class AdminSettings:
    """Admin accounts, session secret and how a preview reads the registry."""

    users: dict[str, str]  # name -> password hash (admin_auth.parse_users)
    session_secret: str
    session_seconds: int = 8 * 3600
    public_origin: str = ""  # e.g. https://sync.example.org behind a proxy; empty: the Host header
    planner: Planner | None = None  # None: previews are not available here
    login_attempts: int = 5
    login_window_seconds: float = 300.0
    requests_per_second: float = 10.0
    request_burst: int = 60


class Refused(Exception):
    def __init__(self, status: int, reason: str):
        self.status, self.reason = status, reason


@dataclass
class Ctx:
    """One request as the page handlers see it."""

    request: Request
    session: Session | None
    form: dict[str, str] = field(default_factory=dict)
    csrf: str = ""


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("membership_assets.registry", "admin_templates"),
        autoescape=True,  # every value a page shows is escaped; names come from Django
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["age"] = _age
    env.filters["source"] = source_label
    env.filters["num"] = lambda n: "–" if n is None else f"{n:,}"
    env.filters["masked"] = lambda kt: f"••••••{kt[-4:]}" if kt and len(kt) >= 4 else "–"
    return env


def _parse_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, timezone.utc)
    return aware(datetime.fromisoformat(str(value)))


def _when(value: Any) -> str:
    ts = _parse_ts(value)
    return ts.strftime("%Y-%m-%d %H:%M UTC") if ts else "never"


def _age(value: Any) -> str:
    ts = _parse_ts(value)
    if ts is None:
        return "never"
    seconds = max(0.0, (datetime.now(timezone.utc) - ts).total_seconds())
    if seconds < 90:
        return f"{seconds:.0f} seconds ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} hours ago"
    return f"{seconds / 86400:.1f} days ago"


class AdminApp:
    def __init__(self, settings: AdminSettings, store: MembersStore, events: ChangeEventStore):

        self.settings, self.store, self.events = settings, store, events
        self.max_age = MEMBER_ELIGIBILITY_MAX_AGE  # when the roll counts as stale (alerts use it too)
        self.signer = SessionSigner(settings.session_secret, settings.session_seconds)
        self.login_limiter = LoginLimiter(settings.login_attempts, settings.login_window_seconds)
        self.limiter = ClientRateLimiter(settings.requests_per_second, settings.request_burst)
        self.previews = PreviewRunner(store, settings.planner)
        self.admin_store = self.previews.admin_store
        self.env = _templates()
        self.css = (
            resources.files("membership_assets.registry").joinpath("admin_static/admin.css").read_bytes()
        )

    # -- plumbing ------------------------------------------------------------------------------

    def render(self, name: str, ctx: Ctx, code: int = 200, **values: Any) -> HTMLResponse:
        notice = ctx.request.query_params.get("notice", "")
        html = self.env.get_template(name).render(
            user=ctx.session.user if ctx.session else None,
            csrf=ctx.csrf,
            notice=NOTICES.get(notice, ""),
            nav=name.removesuffix(".html"),
            prefix=PREFIX,
            **values,
        )
        return HTMLResponse(html, code)

    def _secure(self, request: Request) -> bool:
        if self.settings.public_origin:
            return self.settings.public_origin.startswith("https://")
        return (request.url.hostname or "") not in LOOPBACK

    def _cookie_name(self, request: Request) -> str:
        # __Host-: the browser refuses it unless Secure, path / and no Domain (no subdomain can set it).
        return f"__Host-{COOKIE}" if self._secure(request) else COOKIE

    def _same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            referer = request.headers.get("referer", "")
            parts = urlsplit(referer) if referer else None
            origin = f"{parts.scheme}://{parts.netloc}" if parts and parts.netloc else ""
        if not origin:
            return False
        if self.settings.public_origin:
            return origin.rstrip("/") == self.settings.public_origin.rstrip("/")
        parts = urlsplit(origin)
        return (
            parts.scheme in ("http", "https")
            and parts.netloc.lower() == request.headers.get("host", "").lower()
        )

    def _session(self, request: Request) -> Session | None:
        """The signed-in admin's session, unless it expired or the admin signed out since (on
        any replica: sign-outs are kept in the members database)."""
        session = self.signer.read(request.cookies.get(self._cookie_name(request)))
        if session is None:
            return None
        signed_out = self.admin_store.signed_out_at(session.user)
        if signed_out is not None and session.issued <= signed_out.timestamp():
            return None
        return session

    async def _read_form(self, request: Request) -> dict[str, str]:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
            raise Refused(413, "form_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_FORM_BYTES:
                raise Refused(413, "form_too_large")
        if not body:
            return {}
        if (
            request.headers.get("content-type", "").split(";")[0].strip()
            != "application/x-www-form-urlencoded"
        ):
            raise Refused(415, "not_a_form")
        try:
            parsed = parse_qs(body.decode("utf-8"), max_num_fields=20, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "bad_form") from None
        return {k: v[0] for k, v in parsed.items()}

    def page(
        self, handler: Callable[[Ctx], Response], *, signed_in: bool = True, form: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler in the checks every request passes, cheapest first."""

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            ctx = Ctx(request, None)
            try:
                client = request.client.host if request.client else ""
                if not self.limiter.allow(client):
                    raise Refused(429, "rate_limited")
                if request.method == "POST":
                    ctx.form = await self._read_form(request)
                    if not self._same_origin(request):
                        raise Refused(403, "cross_origin")
                ctx.session = await run_in_threadpool(self._session, request)
                if signed_in and ctx.session is None:
                    if request.method == "POST":
                        raise Refused(403, "no_session")
                    return self._finish(RedirectResponse(f"{PREFIX}/login", 303), handler, started)
                if ctx.session is not None:
                    ctx.csrf = self.signer.csrf_token(ctx.session)
                    if form and not self.signer.csrf_ok(ctx.session, ctx.form.get("csrf")):
                        raise Refused(403, "bad_csrf_token")
                response = await run_in_threadpool(handler, ctx)
            except Refused as exc:
                log.warning("admin %s refused: %s", handler.__name__, exc.reason)
                response = self.render("error.html", ctx, exc.status, status=exc.status, reason=exc.reason)
            except Exception as exc:  # the members database unreachable, a template bug: never a 500
                log.error("admin %s failed: %s", handler.__name__, type(exc).__name__)
                try:
                    response = self.render("error.html", ctx, 503, status=503, reason="unavailable")
                except Exception:
                    response = HTMLResponse("<h1>Not available right now</h1>", 503)
            return self._finish(response, handler, started)

        return endpoint

    def _finish(self, response: Response, handler: Callable, started: float) -> Response:
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        log.info(
            "admin %s -> %d in %.1f ms",
            handler.__name__,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    # -- sign-in -------------------------------------------------------------------------------

    def login_form(self, ctx: Ctx) -> Response:
        if ctx.session is not None:
            return RedirectResponse(f"{PREFIX}/", 303)
        return self.render("login.html", ctx, configured=bool(self.settings.users), error="")

    def login(self, ctx: Ctx) -> Response:
        name = ctx.form.get("username", "").strip().lower()[:64]
        password = ctx.form.get("password", "")
        client = ctx.request.client.host if ctx.request.client else ""
        wait = self.login_limiter.retry_after(client, name)
        if wait:
            log.warning("admin login refused: rate_limited")
            response = self.render(
                "login.html",
                ctx,
                429,
                configured=True,
                error=f"Too many attempts. Try again in {wait} seconds.",
            )
            response.headers["Retry-After"] = str(wait)
            return response
        user = authenticate(self.settings.users, name, password)
        if user is None:
            self.login_limiter.failed(client, name)
            log.warning("admin login failed")  # not the name: people type passwords into it
            return self.render(
                "login.html", ctx, 401, configured=bool(self.settings.users), error="Wrong name or password."
            )
        self.login_limiter.succeeded(user)
        _, cookie = self.signer.issue(user)
        log.info("admin %s signed in", user)
        response = RedirectResponse(f"{PREFIX}/", 303)
        response.set_cookie(
            self._cookie_name(ctx.request),
            cookie,
            max_age=self.settings.session_seconds,
            path="/",
            secure=self._secure(ctx.request),
            httponly=True,
            samesite="strict",
        )
        return response

    def logout(self, ctx: Ctx) -> Response:
        """Sign out: every session of this admin ends, on every replica."""
        self.signer.revoke(ctx.session)
        self.admin_store.sign_out(ctx.session.user, datetime.now(timezone.utc))
        response = RedirectResponse(f"{PREFIX}/login?notice=signed_out", 303)
        response.delete_cookie(
            self._cookie_name(ctx.request),
            path="/",
            secure=self._secure(ctx.request),
            httponly=True,
            samesite="strict",
        )
        return response

    # -- pages ---------------------------------------------------------------------------------

    def status(self, ctx: Ctx) -> Response:
        listed, eligible = self.store.eligibility_counts()
        applied = sync_rows(self.store.engine, limit=1, applied_only=True)
        latest = sync_rows(self.store.engine, limit=1)
        last_applied = applied[0] if applied else None
        age = datetime.now(timezone.utc) - _parse_ts(last_applied["sync_time"]) if last_applied else None
        stats = self.events.stats()
        rejected = quarantined_count(self.store.engine, last_applied["id"]) if last_applied else 0
        return self.render(
            "status.html",
            ctx,
            listed=listed,
            eligible=eligible,
            suspended=listed - eligible,
            last_applied=last_applied,
            latest=latest[0] if latest else None,
            fresh=age is not None and age <= self.max_age,
            max_age_hours=self.max_age.total_seconds() / 3600,
            pending=stats["pending_events"],
            last_event=stats["last_event_received_at"],
            quarantined=rejected,
        )

    def history(self, ctx: Ctx) -> Response:
        page = _int_param(ctx.request, "page", 1, 1, MAX_PAGE)
        rows = sync_rows(self.store.engine, limit=HISTORY_PAGE * page + 1)[HISTORY_PAGE * (page - 1) :]
        return self.render(
            "history.html", ctx, syncs=rows[:HISTORY_PAGE], page=page, more=len(rows) > HISTORY_PAGE
        )

    def sync_detail(self, ctx: Ctx) -> Response:
        sync_id = ctx.request.path_params["sync_id"]
        if not 1 <= len(sync_id) <= 64 or not all(c.isalnum() or c in "-_" for c in sync_id):
            raise Refused(404, "no_such_sync")
        kind = ctx.request.query_params.get("kind", "")
        if kind and kind not in KINDS:
            raise Refused(400, "unknown_kind")
        page = _int_param(ctx.request, "page", 1, 1, MAX_PAGE)
        [entry] = sync_rows(self.store.engine, limit=1, sync_id=sync_id) or [None]
        if entry is None:
            raise Refused(404, "no_such_sync")
        rows = sync_changes(
            self.store.engine,
            sync_id,
            limit=CHANGES_PAGE + 1,
            offset=CHANGES_PAGE * (page - 1),
            kind=kind or None,
        )
        return self.render(
            "sync_detail.html",
            ctx,
            sync=entry,
            changes=rows[:CHANGES_PAGE],
            kind=kind,
            kinds=KINDS,
            page=page,
            more=len(rows) > CHANGES_PAGE,
        )

    def quarantine(self, ctx: Ctx) -> Response:
        applied = sync_rows(self.store.engine, limit=1, applied_only=True)
        rows = quarantined(self.store.engine, applied[0]["id"], limit=QUARANTINE_ROWS + 1) if applied else []
        for r in rows:
            r["fixes"] = [(code, reason_fix(code)) for code in reason_codes(r["reasons"])]
        return self.render(
            "quarantine.html",
            ctx,
            sync=applied[0] if applied else None,
            rows=rows[:QUARANTINE_ROWS],
            more=len(rows) > QUARANTINE_ROWS,
        )

    def events_page(self, ctx: Ctx) -> Response:
        c = change_events.c
        columns = (
            c.id,
            c.event,
            c.source,
            c.member_id,
            c.received_at,
            c.dry_run,
            c.requested_by,
            c.run_key,
            c.consumed_at,
        )
        with self.store.engine.connect() as conn:
            pending = (
                conn.execute(
                    sa.select(*columns)
                    .where(c.consumed_at.is_(None))
                    .order_by(c.id.desc())
                    .limit(EVENTS_SHOWN)
                )
                .mappings()
                .all()
            )
            handled = (
                conn.execute(
                    sa.select(*columns).where(c.consumed_at.is_not(None)).order_by(c.id.desc()).limit(20)
                )
                .mappings()
                .all()
            )
        stats = self.events.stats()
        return self.render(
            "events.html", ctx, pending=pending, handled=handled, pending_count=stats["pending_events"]
        )

    # -- preview and sync now ------------------------------------------------------------------

    def sync_page(self, ctx: Ctx) -> Response:
        c = change_events.c
        with self.store.engine.connect() as conn:
            request = (
                conn.execute(
                    sa.select(c.received_at, c.source, c.requested_by, c.consumed_at, c.run_key)
                    .where(c.event == SYNC_REQUESTED)
                    .order_by(c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        preview = self.previews.latest()
        finished = preview.finished_at if preview else None
        return self.render(
            "sync.html",
            ctx,
            available=self.previews.available,
            preview=preview,
            preview_age=(datetime.now(timezone.utc) - finished).total_seconds() if finished else None,
            max_age=PREVIEW_MAX_AGE_SECONDS,
            last_request=request,
            latest=(sync_rows(self.store.engine, limit=1) or [None])[0],
        )

    def start_preview(self, ctx: Ctx) -> Response:
        if not self.previews.available:
            raise Refused(409, "preview_unavailable")
        self.previews.start(ctx.session.user)
        log.info("admin %s started a preview", ctx.session.user)
        return RedirectResponse(f"{PREFIX}/sync", 303)

    def sync_now(self, ctx: Ctx) -> Response:
        preview, problem = self.previews.confirmable(ctx.form.get("preview_id", "")[:64])
        if problem:
            return RedirectResponse(f"{PREFIX}/sync?notice={problem}", 303)
        c = change_events.c
        with self.store.engine.connect() as conn:
            waiting = conn.execute(
                sa.select(sa.func.count()).where(
                    c.consumed_at.is_(None), c.event == SYNC_REQUESTED, c.dry_run.is_(False)
                )
            ).scalar_one()
        if waiting:
            return RedirectResponse(f"{PREFIX}/sync?notice=already_requested", 303)
        if not self.previews.claim(preview):
            return RedirectResponse(f"{PREFIX}/sync?notice=preview_used", 303)
        request_id = str(uuid.uuid4())
        self.events.record(
            event_id=request_id, event=SYNC_REQUESTED, source=SOURCE_ADMIN, requested_by=ctx.session.user
        )
        log.info("admin %s requested a sync (%s) after preview %s", ctx.session.user, request_id, preview.id)
        return RedirectResponse(f"{PREFIX}/sync?notice=requested", 303)

    def stylesheet(self, ctx: Ctx) -> Response:
        return Response(self.css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    # -- routes --------------------------------------------------------------------------------

    def routes(self) -> list:
        p = self.page
        return [
            Route("/", p(self.status)),
            Route("/login", p(self.login_form, signed_in=False), methods=["GET"]),
            Route("/login", p(self.login, signed_in=False), methods=["POST"]),
            Route("/logout", p(self.logout, form=True), methods=["POST"]),
            Route("/history", p(self.history)),
            Route("/syncs/{sync_id}", p(self.sync_detail)),
            Route("/quarantine", p(self.quarantine)),
            Route("/events", p(self.events_page)),
            Route("/sync", p(self.sync_page), methods=["GET"]),
            Route("/sync/preview", p(self.start_preview, form=True), methods=["POST"]),
            Route("/sync/now", p(self.sync_now, form=True), methods=["POST"]),
            Route("/static/admin.css", p(self.stylesheet, signed_in=False)),
        ]


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 6 or not low <= int(raw) <= high:
        raise Refused(400, f"{name}_out_of_range")
    return int(raw)


def admin_page(members_db_url: str, settings: AdminSettings) -> list:
    """The admin page's routes for the sync service (``/admin``, and ``/`` leading to it) on the
    members database at ``members_db_url`` (settings: registry/settings.py ``admin_settings``)."""
    store = MembersStore.from_url(members_db_url)
    events = ChangeEventStore(store)
    app = AdminApp(settings, store, events)
    return [
        Route("/", lambda request: RedirectResponse(f"{PREFIX}/", 303)),
        Route(PREFIX, lambda request: RedirectResponse(f"{PREFIX}/", 303)),
        Mount(PREFIX, app=Starlette(routes=app.routes())),
    ]
