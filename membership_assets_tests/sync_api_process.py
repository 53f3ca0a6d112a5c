"""`python -m membership_assets sync-api` as a real process on a free port, for tests and the
benchmark: its stderr collected, its address read from uvicorn's start line."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from membership_assets.registry.webhook import (
    REQUEST_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    api_message,
    sign,
)

ROOT = Path(__file__).resolve().parent.parent
# Drawn per test session: a secret written in the repository would be public.
STRONG_SECRET = secrets.token_urlsafe(32)
STRONG_KEY = secrets.token_urlsafe(32)
_RUNNING = re.compile(r"Uvicorn running on http://([0-9.]+):([0-9]+)")
# Variables of the receiver that the developer's shell must not leak into a test server.
_OWN_PREFIXES = ("SYNC_API_", "REGISTRY_WEBHOOK_", "MEMBERSHIP_ENV", "MEMBERS_DB_")


def server_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update(overrides)
    return env


def production_env(db_url: str, **overrides: str) -> dict[str, str]:
    """A production-configured receiver on loopback (strong credentials, already migrated DB)."""
    base = {
        "MEMBERSHIP_ENV": "production",
        "MEMBERS_DB_URL": db_url,
        "REGISTRY_WEBHOOK_SECRET_PASSWORD": STRONG_SECRET,
        "SYNC_API_KEY_PASSWORD": STRONG_KEY,
    }
    return server_env(**{**base, **overrides})


class SyncApiProcess:
    """The receiver as its own process; ``lines`` is everything it logged."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...] = ("--port", "0"), start_timeout=90.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "membership_assets", "sync-api", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="backslashreplace",
        )
        self.lines: list[str] = []
        self._started = threading.Event()
        self.base = ""
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + start_timeout
        while not self._started.wait(0.1):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("sync-api did not start:\n" + "\n".join(self.lines[-30:]))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = _RUNNING.search(line)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                self.base = f"http://{self.host}:{self.port}"
                self._started.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SyncApiProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_to_exit(
    env: dict[str, str], args: tuple[str, ...] = ("--port", "0"), timeout: float = 90.0
) -> subprocess.CompletedProcess:
    """A sync-api that should refuse to start: its exit code and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "membership_assets", "sync-api", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def event_body(member_id: int = 42, event: str = "member.saved", **extra) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event": event,
            "member_id": member_id,
            "occurred_at": datetime.now(timezone.utc).isoformat(),
            **extra,
        }
    ).encode()


def webhook_headers(body: bytes, secret: str = STRONG_SECRET, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(secret, ts, body),
    }


def signed_api_headers(method: str, path_qs: str, body: bytes = b"", secret: str = STRONG_SECRET):
    ts, request_id = int(time.time()), str(uuid.uuid4())
    return {
        TIMESTAMP_HEADER: str(ts),
        REQUEST_ID_HEADER: request_id,
        SIGNATURE_HEADER: sign(secret, ts, api_message(method, path_qs, request_id, body)),
    }
