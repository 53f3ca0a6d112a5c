"""One preflight line per check: ✓/✗ (or "not checked"), what was seen, and for ✗ the fix.

Checks never write to a service and never carry personal data: they report counts, names of
fields, statuses and configuration, never a member's row. The latest result is kept as JSON in
the state directory (and as the ``preflight`` job's asset metadata) for the UI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..connectors.errors import ApiError
from ..privacy import scrub

OK, FAIL, SKIP = "ok", "fail", "not_checked"
SYMBOLS = {OK: "✓", FAIL: "✗", SKIP: "–"}
LATEST_FILE = Path("preflight") / "latest.json"


@dataclass(frozen=True)
class Check:
    system: str
    name: str
    status: str  # OK | FAIL | SKIP
    seen: str
    fix: str | None = None

    @property
    def line(self) -> str:
        text = f"{SYMBOLS[self.status]} {self.system:<14} {self.name}: {self.seen}"
        return text + (f"\n    fix: {self.fix}" if self.fix else "")


def ok(system: str, name: str, seen: str) -> Check:
    return Check(system, name, OK, seen)


def fail(system: str, name: str, seen: str, fix: str) -> Check:
    return Check(system, name, FAIL, seen, fix)


def skip(system: str, name: str, seen: str) -> Check:
    return Check(system, name, SKIP, seen)


def safe_error(exc: BaseException) -> str:
    """An error as one short line without personal data (API errors are scrubbed already)."""
    if isinstance(exc, ApiError):
        return str(exc)
    return f"{type(exc).__name__}: {scrub(str(exc))[:200]}"


def guarded(system: str, name: str, fix: str, run: Callable[[], list[Check]]) -> list[Check]:
    """Run one system's checks; an unexpected error becomes a ✗ line instead of a crash."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - every failure must become a line, not a traceback
        return [fail(system, name, safe_error(exc), fix)]


def failed(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]


def exit_code(checks: Iterable[Check]) -> int:
    return 1 if failed(checks) else 0


def render_table(checks: list[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in SYMBOLS}
    head = f"preflight: {counts[OK]} ✓, {counts[FAIL]} ✗, {counts[SKIP]} not checked"
    return "\n".join([head, *(c.line for c in checks)])


def as_json(checks: list[Check], when: datetime | None = None) -> dict[str, Any]:
    return {
        "checked_at": (when or datetime.now(UTC)).isoformat(timespec="seconds"),
        "ok": not failed(checks),
        "failed": len(failed(checks)),
        "checks": [asdict(c) for c in checks],
    }


def save_latest(state: Path, result: dict[str, Any]) -> Path:
    """Keep the latest result (no personal data in it) where the UI and operators find it."""
    path = state / LATEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def load_latest(state: Path) -> dict[str, Any] | None:
    path = state / LATEST_FILE
    return json.loads(path.read_text()) if path.exists() else None
