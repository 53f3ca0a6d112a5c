"""Scratch preflight: where steps hand data to each other accepts a write, read and delete."""

from __future__ import annotations

import uuid
from typing import Any

from .core import Check, fail, ok, safe_error, skip

SYSTEM = "Scratch"
PROBE = b"membership_assets preflight probe"


def check_scratch(io_manager: Any, instance: Any = None) -> list[Check]:
    """Write, read back and delete one test object (no personal data) under its own prefix."""
    if not io_manager.base_path and instance is None:
        return [
            skip(SYSTEM, "write/read/delete", "the Dagster instance's storage (set DAGSTER_HOME to check)")
        ]
    fix = "set MEMBERSHIP_SCRATCH_URL to a gs://bucket/prefix the run workers may write, read and delete"
    try:
        store = io_manager._store(instance)
        where = io_manager.base_path or "the Dagster instance's storage"
        prefix = f"preflight-{uuid.uuid4().hex}"
        store.write(f"{prefix}/probe", PROBE)
        try:
            back = store.read(f"{prefix}/probe")
        finally:
            store.delete_run(prefix)
        gone = store.read(f"{prefix}/probe") is None
    except Exception as exc:  # noqa: BLE001 - any storage error is the finding
        return [fail(SYSTEM, "write/read/delete", safe_error(exc), fix)]
    if back != PROBE or not gone:
        seen = "read back differs" if back != PROBE else "the test object survived its delete"
        return [fail(SYSTEM, "write/read/delete", seen, fix)]
    return [ok(SYSTEM, "write/read/delete", f"a test object written, read and deleted in {where}")]
