"""The code location of the pool crash test (test_pool_crash.py): the embedded default, set up
by environment variables, with the report email behind a gate.

The gate stands in for a slow mail server: a report waits in ``send`` (inside the pooled
``mismatch_report_email`` step, before anything is sent) until the test creates the gate file,
so the run worker can be killed at exactly that point. Admin alerts (no attachment) pass.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from membership_assets.definitions import build_definitions, resources_for
from membership_assets.notify.resources import FileOutboxEmail

GATE_ENV = "POOL_CRASH_EMAIL_GATE"
WAITING = "report_email_waiting"


class GatedOutbox(FileOutboxEmail):
    gate: str

    def send(self, to, subject, body, attachments=(), *args, **kwargs) -> str:
        if attachments:
            gate = Path(self.gate)
            (gate.parent / WAITING).touch()
            while not gate.exists():
                time.sleep(0.1)
        return super().send(to, subject, body, attachments, *args, **kwargs)


def _resources() -> dict:
    resources = resources_for("local")
    outbox = resources["email"]
    return {**resources, "email": GatedOutbox(directory=outbox.directory, gate=os.environ.get(GATE_ENV, ""))}


defs = build_definitions(_resources())
