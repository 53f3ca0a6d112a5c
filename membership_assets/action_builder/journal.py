"""The tag cleanup's audit, kept next to the scan state before it goes to the warehouse.

Every state of a cleanup's deletions (intent, sending, outcome) is first committed here (the
scan checkpoint's SQLite file, encrypted like it), then written to the warehouse. If the
warehouse write fails (an outage mid-cleanup, after DELETEs were sent), the outcomes are not
lost: the next cleanup delivers every journal the warehouse did not confirm, replacing that
run's slice (so exactly once), before it plans anything of its own.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..warehouse.audit import RunIdentity, record
from ..warehouse.resources import AuditWarehouse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cleanup_journal (
    run_id TEXT PRIMARY KEY,
    run_started_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    saved_at REAL NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0
)
"""
KEEP_DELIVERED_DAYS = 7.0


class DeletionJournal:
    """Durable, per logical run, latest state of a cleanup's deletions; delivered or not."""

    def __init__(self, path: str | Path, cipher: Any = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cipher = cipher

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            yield db
            db.commit()
        finally:
            db.close()

    def save(self, run_id: str, run_started_at: datetime, frame: pd.DataFrame) -> float:
        """Commit this run's current deletions (undelivered); returns the save's token."""
        text = frame.to_json(orient="records", date_format="iso")
        payload = self._cipher.encrypt(text.encode()).decode() if self._cipher else text
        token = time.time()
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO cleanup_journal VALUES (?, ?, ?, ?, 0)",
                (run_id, run_started_at.isoformat(), payload, token),
            )
        return token

    def delivered(self, run_id: str, token: float) -> None:
        """The warehouse has the state saved at ``token`` (a later save stays undelivered)."""
        with self._db() as db:
            db.execute(
                "UPDATE cleanup_journal SET delivered = 1 WHERE run_id = ? AND saved_at = ?", (run_id, token)
            )
            db.execute(
                "DELETE FROM cleanup_journal WHERE delivered = 1 AND saved_at < ?",
                (time.time() - KEEP_DELIVERED_DAYS * 86400,),
            )

    def undelivered(self) -> list[tuple[str, datetime, pd.DataFrame, float]]:
        """(run id, run started at, deletions, token) the warehouse has not confirmed, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT run_id, run_started_at, payload, saved_at FROM cleanup_journal "
                "WHERE delivered = 0 ORDER BY saved_at"
            ).fetchall()
        out = []
        for run_id, started, payload, token in rows:
            text = self._cipher.decrypt(payload.encode()).decode() if self._cipher else payload
            out.append((run_id, datetime.fromisoformat(started), pd.DataFrame(json.loads(text)), token))
        return out


def deliver_journal(journal: DeletionJournal, warehouse: AuditWarehouse) -> int:
    """Write every cleanup state the warehouse did not confirm (its run's slice, replaced)."""
    delivered = 0
    for run_id, started, frame, token in journal.undelivered():
        record(warehouse, "ab_tagging_deletions", frame, RunIdentity(run_id, run_id, started))
        journal.delivered(run_id, token)
        delivered += 1
    return delivered
