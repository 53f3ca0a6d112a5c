"""Webhook path preflight: the receiver answers ``/healthz``, accepts a signed ``ping`` event
(which it acknowledges with 200 ``{"ping": "ok"}`` and stores nowhere), and a Dagster daemon is
running the sensors that turn events into syncs.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import requests

from ..registry.event_sensor import SENSOR_NAME
from ..registry.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WEBHOOK_PATH, sign
from .core import Check, fail, ok, safe_error, skip

SYSTEM = "Webhook"
HEARTBEAT_MAX_AGE = 300.0  # seconds: the daemon writes a heartbeat every few seconds
SECRET_FIX = "set REGISTRY_WEBHOOK_SECRET_PASSWORD to the same value here, in the receiver and in Django"


def ping_body(now: datetime | None = None) -> bytes:
    """A ``ping`` event: changes nothing at the receiver."""
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event": "ping",
            "occurred_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        }
    ).encode()


def check_webhook(url: str, secret: str, *, required: bool, timeout: float = 10.0) -> list[Check]:
    if not url:
        if required:
            return [
                fail(
                    SYSTEM, "receiver", "SYNC_API_URL not set", "set SYNC_API_URL to the receiver's base URL"
                )
            ]
        return [
            skip(
                SYSTEM,
                "receiver",
                "SYNC_API_URL not set (local: start `python -m membership_assets sync-api`)",
            )
        ]
    base = url.rstrip("/")
    try:
        health = requests.get(base + "/healthz", timeout=timeout)
    except requests.RequestException as exc:
        return [
            fail(
                SYSTEM,
                "receiver",
                f"{base} unreachable ({type(exc).__name__})",
                "start the receiver (`python -m membership_assets sync-api`) or fix SYNC_API_URL",
            )
        ]
    if health.status_code != 200:
        return [
            fail(SYSTEM, "receiver", f"/healthz answered {health.status_code}", "check the receiver's log")
        ]
    return [ok(SYSTEM, "receiver", f"{base}/healthz answered 200"), signed_ping_check(base, secret, timeout)]


def signed_ping_check(base: str, secret: str, timeout: float = 10.0) -> Check:
    if not secret:
        return fail(SYSTEM, "secret", "no webhook secret configured here", SECRET_FIX)
    body = ping_body()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(secret, stamp, body),
    }
    try:
        resp = requests.post(base + WEBHOOK_PATH, data=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        return fail(SYSTEM, "secret", f"ping failed ({type(exc).__name__})", "check the receiver")
    answer = _json(resp)
    if resp.status_code == 200 and answer == {"ping": "ok"}:
        return ok(SYSTEM, "secret", "a signed ping was accepted (same secret on both sides)")
    if resp.status_code == 401:
        return fail(SYSTEM, "secret", "the receiver rejected the signature (401)", SECRET_FIX)
    return fail(
        SYSTEM,
        "secret",
        f"a signed ping was answered {resp.status_code}, not 200 {{ping: ok}}",
        "deploy a receiver that acknowledges ping events",
    )


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def daemon_check(instance: Any, now: float | None = None) -> Check:
    """A Dagster daemon has beaten recently (it runs the event and change sensors)."""
    if instance is None:
        return skip(SYSTEM, "daemon", "no Dagster instance here (set DAGSTER_HOME to check)")
    try:
        beats = instance.get_daemon_heartbeats()
    except Exception as exc:  # noqa: BLE001 - storage without heartbeats
        return skip(SYSTEM, "daemon", f"heartbeats not readable ({safe_error(exc)[:120]})")
    sensor = beats.get("SENSOR")
    age = (now or time.time()) - sensor.timestamp if sensor else None
    if age is None or age > HEARTBEAT_MAX_AGE:
        seen = "no sensor daemon heartbeat" if age is None else f"last sensor heartbeat {age:.0f}s ago"
        return fail(
            SYSTEM, "daemon", seen, "run `dagster-daemon run` (the deployment's daemon) against this instance"
        )
    stopped = _sensor_stopped(instance)
    if stopped:
        return fail(
            SYSTEM,
            "daemon",
            f"the daemon beats ({age:.0f}s ago) but the sensor {SENSOR_NAME} is stopped",
            f"start {SENSOR_NAME} (Automation in the UI, or `dagster sensor start {SENSOR_NAME}`)",
        )
    return ok(SYSTEM, "daemon", f"sensor daemon heartbeat {age:.0f}s ago; {SENSOR_NAME} not stopped")


def _sensor_stopped(instance: Any) -> bool:
    """Whether someone stopped the event sensor (it runs by default, so no state means running)."""
    from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

    try:
        states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    except Exception:  # noqa: BLE001 - storage without instigator state: nothing says stopped
        return False
    mine = [s for s in states if s.instigator_name == SENSOR_NAME]
    return bool(mine) and all(s.status == InstigatorStatus.STOPPED for s in mine)
