"""Signed webhooks to the sync service on member changes (shared WEBHOOK_CONTRACT of the project).

After a transaction commits, every saved or deleted member is announced to ``webhook_url`` as
``{event_id, event, member_id, occurred_at}`` (no personal data), signed with
``X-Membership-Signature: sha256=HMAC(secret, "{timestamp}." + body)``. Deliveries run on a
small thread pool and are retried on connection errors, 5xx and 429 (0.5, 1, 2, 4 s, or the
Retry-After of a 429 or 503 when longer; 5 attempts), so
a save is never blocked or failed by the receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests

log = logging.getLogger(__name__)
SAVED, DELETED = "member.saved", "member.deleted"
BACKOFF = (0.5, 1.0, 2.0, 4.0)  # waits between the 5 attempts
TIMESTAMP_HEADER = "X-Membership-Timestamp"
SIGNATURE_HEADER = "X-Membership-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _seconds(retry_after: str | None) -> float:
    try:
        return min(float(retry_after or 0), 60.0)
    except ValueError:
        return 0.0


def event(kind: str, member_id: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event": kind,
        "member_id": member_id,
        "occurred_at": datetime.now(timezone.utc).isoformat(),
    }


@dataclass
class Delivery:
    event: dict[str, Any]
    statuses: list[int | str] = field(default_factory=list)  # per attempt: HTTP status or error
    delivered: bool = False


class WebhookSender:
    """One stand-in's deliveries: a thread pool, retries, and a record tests can read."""

    def __init__(
        self, url: str, secret: str, stopping: threading.Event, backoff: tuple[float, ...] = BACKOFF
    ):
        self.url, self.secret, self.stopping, self.backoff = url, secret, stopping, backoff
        self.deliveries: list[Delivery] = []
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="registry-webhook")
        self._session = requests.Session()
        self._pending = 0
        self._idle = threading.Condition()

    def send(self, kind: str, member_id: int) -> None:
        delivery = Delivery(event(kind, member_id))
        with self._idle:
            self.deliveries.append(delivery)
            self._pending += 1
        try:
            self._pool.submit(self._deliver, delivery)
        except RuntimeError:  # the stand-in is stopping: the event is recorded, not sent
            self._done()

    def _deliver(self, delivery: Delivery) -> None:
        body = json.dumps(delivery.event).encode()
        try:
            for wait in (*self.backoff, None):
                timestamp = int(time.time())  # signed per attempt, so a late retry is still fresh
                headers = {
                    "Content-Type": "application/json",
                    TIMESTAMP_HEADER: str(timestamp),
                    SIGNATURE_HEADER: signature(self.secret, timestamp, body),
                }
                retry_after = None
                try:
                    response = self._session.post(self.url, data=body, headers=headers, timeout=10)
                    status: int | str = response.status_code
                    retry_after = response.headers.get("Retry-After")
                except requests.RequestException as exc:
                    status = type(exc).__name__
                delivery.statuses.append(status)
                if status in (429, 503) and wait is not None:
                    # The receiver's flood limit or its busy database: wait as long as it asks.
                    wait = max(wait, _seconds(retry_after))
                elif isinstance(status, int) and status < 500:
                    delivery.delivered = 200 <= status < 300
                    if not delivery.delivered:  # 4xx: the receiver refuses it; retrying won't help
                        log.warning("webhook %s refused with HTTP %s", delivery.event["event"], status)
                    return
                if wait is None or self.stopping.wait(wait):
                    break
            log.warning(
                "webhook %s not delivered after %d attempts", delivery.event["event"], len(delivery.statuses)
            )
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every event sent so far was delivered or given up (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
