"""Helpers for the admin page tests: a sync history in the members database, the sync service
served over real sockets, and a signed-in HTTP session."""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pandas as pd
import requests
import uvicorn

from membership_assets.registry.admin import AdminSettings, admin_page
from membership_assets.registry.admin_auth import hash_password
from membership_assets.registry.delta import compute_delta
from membership_assets.registry.store import MembersStore, SyncLogEntry
from membership_assets.registry.webhook import SyncApiSettings, create_app

ADMIN, PASSWORD = "anna", "a long admin password"
OTHER, OTHER_PASSWORD = "bjorn", "another long password"
SESSION_SECRET = "x" * 40
API_KEY = "test-api-key"
PERSONAL = "Jón Jónsson 0101302989"  # what a failed sync's stored error text quotes
COLS = ["kennitala", "name", "email", "status"]
REJECT_COLS = ["row_number", "kennitala_raw", "kennitala", "name", "email", "status", "reasons"]


def admin_settings(planner=None, **overrides) -> AdminSettings:
    users = {ADMIN: hash_password(PASSWORD), OTHER: hash_password(OTHER_PASSWORD)}
    return AdminSettings(users=users, session_secret=SESSION_SECRET, planner=planner, **overrides)


def members(n: int) -> pd.DataFrame:
    rows = [
        {
            "kennitala": f"{1000000000 + i:010d}",
            "name": f"Félagi {i}",
            "email": f"f{i}@example.is",
            "status": "active",
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=COLS)


def _apply(
    store: MembersStore, upstream: pd.DataFrame, sync_id: str, at: datetime, source: str, rejects=None
):
    base = store.last_applied_sync()
    delta = compute_delta(upstream, store.current_members())
    n_rejects = 0 if rejects is None else len(rejects)
    entry = SyncLogEntry(
        id=sync_id,
        source=source,
        status="partial" if n_rejects else "success",
        sync_time=at,
        members_fetched=len(upstream) + n_rejects,
        members_rejected=n_rejects,
        errors={"rejected_rows": n_rejects} if n_rejects else None,
    )
    store.apply(delta, entry, base_sync_id=base["id"] if base else None, rejected_rows=rejects)


def seed_history(store: MembersStore) -> dict[str, str]:
    """Four syncs: 30 added, 10 removed, the 10 reinstated (each partial: one row quarantined), and a
    failed one whose stored error quotes a member. Returns their ids by name."""
    now = datetime.now(timezone.utc)
    everyone = members(30)
    reject = pd.DataFrame(
        [
            {
                "row_number": 7,
                "kennitala_raw": "0101302988",
                "kennitala": "0101302988",
                "name": "Guðrún Quarantined",
                "email": "gudrun@example.is",
                "status": "active",
                "reasons": "kennitala_invalid_checksum, email_control_characters",
            }
        ],
        columns=REJECT_COLS,
    )
    ids = {"first": "sync-0001", "removal": "sync-0002", "reinstatement": "sync-0003", "failed": "sync-0004"}
    _apply(store, everyone, ids["first"], now - timedelta(hours=3), "scheduled", rejects=reject)
    _apply(store, everyone.iloc[10:], ids["removal"], now - timedelta(hours=2), "webhook", rejects=reject)
    # The row is still wrong in Django: every sync quarantines it again.
    _apply(store, everyone, ids["reinstatement"], now - timedelta(minutes=30), "admin:anna", rejects=reject)
    store.record_failure(
        SyncLogEntry(
            id=ids["failed"],
            source="api",
            status="failed",
            sync_time=now - timedelta(minutes=5),
            errors={
                "step": "membership_sync",
                "type": "Failure",
                "error": f"row of {PERSONAL}",
                "violations": [{"guard": "removal_count", "message": "600 members", "overridable_by": "x"}],
            },
        )
    )
    return ids


@contextmanager
def serve(db_url: str, admin: AdminSettings):
    """The sync service (API and admin page) on a free loopback port, in this process."""
    settings = SyncApiSettings(members_db_url=db_url, webhook_secret="test-webhook-secret", api_key=API_KEY)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, extra_routes=admin_page(db_url, admin)),
            host="127.0.0.1",
            port=0,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "sync service did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no form token"
    return match.group(1)


def sign_in(base: str, user: str = ADMIN, password: str = PASSWORD) -> requests.Session:
    http = requests.Session()
    resp = http.post(
        f"{base}/admin/login",
        data={"username": user, "password": password},
        headers={"Origin": base},
        timeout=10,
    )
    assert resp.status_code == 200 and resp.url.endswith("/admin/"), resp.status_code
    return http


def post_form(
    http: requests.Session, base: str, path: str, data: dict | None = None, **kw
) -> requests.Response:
    """POST a form the way the browser does: same Origin, the page's token."""
    token = csrf_of(http.get(f"{base}/admin/sync", timeout=10).text)
    headers = {"Origin": base, **kw.pop("headers", {})}
    return http.post(f"{base}{path}", data={"csrf": token, **(data or {})}, headers=headers, timeout=10, **kw)


class _Table(HTMLParser):
    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.depth, self.rows, self.cell = table_id, 0, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and (self.depth or dict(attrs).get("id") == self.table_id):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "table" and self.depth:
            self.depth -= 1
        elif self.depth and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def table_rows(html: str, table_id: str) -> list[dict[str, str]]:
    """The rows of the table ``table_id`` as {header: cell text}."""
    parser = _Table(table_id)
    parser.feed(html)
    header, *rows = parser.rows
    return [dict(zip(header, row, strict=True)) for row in rows]
