"""The Django registry announces member changes with signed webhooks (WEBHOOK_CONTRACT)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from membership_assets.simulators.django_registry import DjangoRegistrySimulator, generate_registry

SECRET = "test-webhook-secret"


class Receiver:
    """A tiny receiver: checks the signature, answers from a script of statuses, records events."""

    def __init__(self, statuses: list[int | tuple[int, str]] | None = None):
        self.statuses = list(statuses or [])
        self.received: list[dict] = []  # one per request: event, signature_ok, timestamp
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers["X-Membership-Timestamp"]
                expected = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(self.headers["X-Membership-Signature"], f"sha256={expected}")
                receiver.received.append(
                    {
                        "event": json.loads(body),
                        "signature_ok": ok,
                        "timestamp": int(ts),
                        "raw": body,
                        "at": time.monotonic(),
                    }
                )
                status = receiver.statuses.pop(0) if receiver.statuses else (202 if ok else 401)
                status, retry_after = status if isinstance(status, tuple) else (status, None)
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/webhooks/registry"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def standin(url: str, **kw) -> DjangoRegistrySimulator:
    return DjangoRegistrySimulator(generate_registry(20, seed=4, invalid=False), webhook_url=url, **kw)


def test_a_member_change_is_announced_signed_and_without_personal_data(receiver):
    with standin(receiver.url, webhook_secret=SECRET) as sim:
        kt = sim.data.truth.valid_kennitalas[0]
        sim.update(kt, email="new@example.is")
        assert sim.webhooks.flush(10)
        member_id = next(c for c in _ids(sim) if c[1] == kt)[0]
    events = [r["event"] for r in receiver.received]
    assert events and all(r["signature_ok"] for r in receiver.received)
    assert {e["event"] for e in events} == {"member.saved"} and {e["member_id"] for e in events} == {
        member_id
    }
    event = events[0]
    assert set(event) == {"event_id", "event", "member_id", "occurred_at"}
    assert isinstance(event["member_id"], int) and event["occurred_at"].endswith("+00:00")
    assert abs(receiver.received[0]["timestamp"] - time.time()) < 60
    raw = b"".join(r["raw"] for r in receiver.received)
    assert kt.encode() not in raw and b"example.is" not in raw  # no kennitala, no email


def test_saves_deletes_and_joins_each_send_their_event(receiver):
    with standin(receiver.url, webhook_secret=SECRET) as sim:
        kts = sim.data.truth.valid_kennitalas
        sim.remove(kts[0])  # soft delete: a save
        sim.delete(kts[1])  # staff delete the comrade outright
        sim.add({"kennitala": "0101302989", "name": "Ný", "email": None, "status": "active"})
        assert sim.webhooks.flush(10)
    kinds = [(r["event"]["event"]) for r in receiver.received]
    assert "member.deleted" in kinds and kinds.count("member.deleted") == 1
    assert len({r["event"]["event_id"] for r in receiver.received}) == len(receiver.received)


def test_a_failing_receiver_is_retried_with_the_same_event():
    receiver = Receiver(statuses=[500, 503])
    try:
        with standin(receiver.url, webhook_secret=SECRET) as sim:
            sim.update(sim.data.truth.valid_kennitalas[0], name="Nýtt Nafn")
            assert sim.webhooks.flush(15)
            [delivery] = [d for d in sim.webhooks.deliveries if d.statuses[:2] == [500, 503]]
        assert delivery.delivered and delivery.statuses == [500, 503, 202]
        attempts = [r for r in receiver.received if r["event"]["event_id"] == delivery.event["event_id"]]
        assert len(attempts) == 3 and all(r["signature_ok"] for r in attempts)
    finally:
        receiver.close()


def test_a_rate_limited_delivery_waits_as_the_receiver_says_and_is_retried():
    receiver = Receiver(statuses=[(429, "2")])
    try:
        with standin(receiver.url, webhook_secret=SECRET) as sim:
            sim.update(sim.data.truth.valid_kennitalas[0], name="Nýtt Nafn")
            assert sim.webhooks.flush(15)
            [delivery] = [d for d in sim.webhooks.deliveries if d.statuses[:1] == [429]]
        assert delivery.delivered and delivery.statuses == [429, 202]
        first, second = [r for r in receiver.received if r["event"]["event_id"] == delivery.event["event_id"]]
        assert second["at"] - first["at"] >= 1.9  # Retry-After, not the 0.5 s backoff
    finally:
        receiver.close()


def test_a_receiver_that_is_down_never_blocks_or_fails_a_save():
    with standin("http://127.0.0.1:9/unreachable") as sim:
        started = time.monotonic()
        sim.update(sim.data.truth.valid_kennitalas[0], email="still@example.is")
        assert time.monotonic() - started < 1.0  # delivery happens in the background
        assert sim.data.members[0]["email"] == "still@example.is"
        time.sleep(0.2)
        [delivery, *_] = sim.webhooks.deliveries
        assert not delivery.delivered and delivery.statuses and isinstance(delivery.statuses[0], str)


def test_nothing_is_sent_for_a_transaction_that_rolls_back(receiver):
    with standin(receiver.url, webhook_secret=SECRET) as sim:
        from membership_assets.simulators.django_registry.members.models import Comrade  # after setup

        with pytest.raises(RuntimeError), sim.active():
            Comrade.objects.create(name="Never committed", ssn="0101302989")
            raise RuntimeError("staff pressed cancel")
        assert sim.webhooks.flush(5)
        assert sim.webhooks.deliveries == []
    assert receiver.received == []


def test_a_wrong_secret_is_refused_by_the_receiver(receiver):
    with standin(receiver.url, webhook_secret="not-the-shared-secret") as sim:
        sim.update(sim.data.truth.valid_kennitalas[0], email="x@example.is")
        assert sim.webhooks.flush(10)
        assert all(d.statuses == [401] and not d.delivered for d in sim.webhooks.deliveries)
    assert receiver.received and not any(r["signature_ok"] for r in receiver.received)


def _ids(sim) -> list[tuple[int, str]]:
    from membership_assets.simulators.django_registry.members import planting

    with sim.active():
        return [(i, str(r["kennitala"]).replace("-", "")) for i, r in planting.exported()]


def test_the_readme_signals_snippet_sends_the_same_webhook(receiver, monkeypatch):
    """The file the Django integration guide gives a Django project, run against the stand-in's models."""
    import re
    import textwrap
    import types
    from pathlib import Path

    from membership_assets.simulators.django_registry import runtime

    runtime.setup()
    from django.db.models.signals import post_delete, post_save

    from membership_assets.simulators.django_registry.members.models import Comrade

    guide = (Path(__file__).resolve().parents[1] / "docs" / "django-integration.md").read_text()
    [snippet] = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "membership/signals.py" in b]
    code = textwrap.dedent(snippet)
    code = code.replace("from .models import Comrade", "")
    monkeypatch.setenv("REGISTRY_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("REGISTRY_WEBHOOK_SECRET_PASSWORD", SECRET)
    module = types.ModuleType("readme_signals")
    module.Comrade = Comrade
    exec(compile(code, "docs/django-integration.md", "exec"), module.__dict__)
    try:
        with DjangoRegistrySimulator(generate_registry(3, invalid=False)) as sim:
            sim.remove(sim.data.truth.valid_kennitalas[0])
            deadline = time.monotonic() + 10
            while not receiver.received and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        post_save.disconnect(module.comrade_saved, sender=Comrade)
        post_delete.disconnect(module.comrade_deleted, sender=Comrade)
    [got] = receiver.received
    assert got["signature_ok"] and got["event"]["event"] == "member.saved"
    assert set(got["event"]) == {"event_id", "event", "member_id", "occurred_at"}
