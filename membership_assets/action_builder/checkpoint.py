"""Resume a long campaign scan after a crash instead of starting again from zero.

A full scan of ~14K people at 4 requests/second takes about 16 minutes. Every fetched page and
every per-person answer is kept in a small SQLite file under a scan key (the Dagster root run
id, so "re-execute from failure" resumes and a fresh scheduled run starts clean). Each answer is
committed as it arrives (WAL: a commit survives the process being killed), so a resumed scan
refetches only what was in flight; each attempt's request counts are kept alongside, so the
logical scan's cost adds up every attempt.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..connectors.http import RequestStats
from .client import Page

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scan_items (
    scan_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    item_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    saved_at REAL NOT NULL,
    PRIMARY KEY (scan_key, kind, item_key)
)
"""


class ScanCheckpoint:
    """Thread-safe key/value store of fetched results for one scan."""

    def __init__(self, path: str | Path, scan_key: str, *, flush_every: int = 1, cipher: Any = None):
        self.path = Path(path)
        # Pages carry people's names: with a cipher (Fernet) they are encrypted at rest.
        self._cipher = cipher
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scan_key = scan_key
        self._flush_every = flush_every
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str, str, str, float]] = []
        self._reused: set[tuple[str, int]] = set()
        self._attempt = uuid.uuid4().hex
        self._stats: Callable[[], dict[str, Any]] | None = None
        self._done = False  # completed or closed: nothing more is saved
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process
        self._db.execute(_SCHEMA)
        self._db.commit()

    def load(self, kind: str) -> dict[str, Any]:
        with self._lock:
            self._flush_locked()
            rows = self._db.execute(
                "SELECT item_key, payload FROM scan_items WHERE scan_key = ? AND kind = ?",
                (self.scan_key, kind),
            ).fetchall()
        opened = ((key, self._open(payload)) for key, payload in rows)
        return {key: json.loads(text) for key, text in opened if text is not None}

    def _seal(self, text: str) -> str:
        return self._cipher.encrypt(text.encode()).decode() if self._cipher else text

    def _open(self, stored: str) -> str | None:
        """The saved JSON, or None for an item this key cannot read (fetched again instead)."""
        if not self._cipher:
            return stored
        try:
            return self._cipher.decrypt(stored.encode()).decode()
        except Exception:
            return None

    def save(self, kind: str, key: str, payload: Any) -> None:
        with self._lock:
            self._pending.append((self.scan_key, kind, key, self._seal(json.dumps(payload)), time.time()))
            if len(self._pending) >= self._flush_every:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def track_requests(self, stats: Callable[[], dict[str, Any]]) -> None:
        """Save this attempt's request counts (``stats()``) with every flush, and, for a
        client's ``RequestStats.snapshot``, as each request is sent: a killed attempt's count
        then covers every request it sent, not only those up to its last saved answer."""
        self._stats = stats
        owner = getattr(stats, "__self__", None)
        if isinstance(owner, RequestStats):
            owner.add_listener(self._save_requests)

    def _save_requests(self) -> None:
        with self._lock:
            if self._stats is None or self._done:
                return
            row = (self.scan_key, "requests", self._attempt, json.dumps(self._stats()), time.time())
            self._pending.append(row)
            self._flush_locked()

    def earlier_requests(self) -> list[dict[str, Any]]:
        """Request counts of this scan's earlier attempts (crashed or failed)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT payload FROM scan_items WHERE scan_key = ? AND kind = 'requests' AND item_key != ?",
                (self.scan_key, self._attempt),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        if self._stats is not None:
            now = time.time()
            self._pending.append((self.scan_key, "requests", self._attempt, json.dumps(self._stats()), now))
        self._db.executemany("INSERT OR REPLACE INTO scan_items VALUES (?, ?, ?, ?, ?)", self._pending)
        self._db.commit()
        self._pending.clear()

    def first_started_at(self, now: float) -> float:
        """When the first attempt of this scan began (``now`` on a first attempt, saved at once)."""
        with self._lock:
            row = self._db.execute(
                "SELECT payload FROM scan_items WHERE scan_key = ? AND kind = 'meta' AND item_key = 'started_at'",
                (self.scan_key,),
            ).fetchone()
            if row is not None:
                return float(json.loads(row[0]))
            self._db.execute(
                "INSERT INTO scan_items VALUES (?, 'meta', 'started_at', ?, ?)",
                (self.scan_key, json.dumps(now), now),
            )
            self._db.commit()
            return now

    def note_reused(self, kind: str, page: int) -> None:
        with self._lock:
            self._reused.add((kind, page))

    @property
    def reused_pages(self) -> int:
        """Listing pages served from this checkpoint instead of the API."""
        return len(self._reused)

    def page_cache(self, listing: str) -> CheckpointPageCache:
        return CheckpointPageCache(self, f"page:{listing}")

    def count(self) -> int:
        with self._lock:
            self._flush_locked()
            return self._db.execute(
                "SELECT count(*) FROM scan_items WHERE scan_key = ?", (self.scan_key,)
            ).fetchone()[0]

    def complete(self, *, purge_older_than_days: float = 7.0) -> None:
        """The scan finished: drop its checkpoint and any abandoned ones older than a week."""
        with self._lock:
            self._pending.clear()
            self._done = True
            self._db.execute("DELETE FROM scan_items WHERE scan_key = ?", (self.scan_key,))
            self._db.execute(
                "DELETE FROM scan_items WHERE saved_at < ?",
                (time.time() - purge_older_than_days * 86400,),
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            if not self._done:
                self._flush_locked()
            self._done = True
            self._db.close()


class CheckpointPageCache:
    def __init__(self, checkpoint: ScanCheckpoint, kind: str):
        self._cp = checkpoint
        self._kind = kind
        self._pages = {int(k): v for k, v in checkpoint.load(kind).items()}
        self._saved_earlier = set(self._pages)  # by a previous attempt of this scan

    def get(self, page: int) -> Page | None:
        raw = self._pages.get(page)
        if raw is None:
            return None
        if page in self._saved_earlier:
            self._cp.note_reused(self._kind, page)
        return Page(**raw)

    def put(self, page: Page) -> None:
        raw = {
            "number": page.number,
            "total_pages": page.total_pages,
            "per_page": page.per_page,
            "items": page.items,
            "next_href": page.next_href,
        }
        self._pages[page.number] = raw
        self._cp.save(self._kind, str(page.number), raw)


class MemoryPageCache:
    """Keeps probed first pages so the chosen strategy does not fetch them twice."""

    def __init__(self) -> None:
        self._pages: dict[int, Page] = {}

    def get(self, page: int) -> Page | None:
        return self._pages.get(page)

    def put(self, page: Page) -> None:
        self._pages[page.number] = page
