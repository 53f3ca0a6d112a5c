"""SendGrid preflight: the key is valid and may send mail, without sending any.

``GET /v3/scopes`` lists the key's permissions; sending needs ``mail.send``.
"""

from __future__ import annotations

from typing import Any

import requests

from .core import Check, fail, ok, skip

SYSTEM = "SendGrid"
DEFAULT_API_URL = "https://api.sendgrid.com"
MAIL_SEND_SCOPE = "mail.send"
KEY_VAR = "SENDGRID_API_KEY_PASSWORD"
PLACEHOLDER_SENDER = "membership-sync@example.org"


def check_sendgrid(email: Any, api_url: str = DEFAULT_API_URL, timeout: float = 15.0) -> list[Check]:
    api_key = getattr(email, "api_key", None)
    if api_key is None:  # the local .eml outbox
        directory = getattr(email, "directory", "?")
        return [skip(SYSTEM, "key", f"local outbox ({directory}): no SendGrid in this environment")]
    return [key_scope_check(api_key, api_url, timeout), sender_check(email.from_address)]


def key_scope_check(api_key: str, api_url: str, timeout: float = 15.0) -> Check:
    if not api_key:
        return fail(SYSTEM, "key", "no key configured", f"set {KEY_VAR}")
    try:
        resp = requests.get(
            api_url.rstrip("/") + "/v3/scopes",
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        return fail(SYSTEM, "key", f"SendGrid unreachable ({type(exc).__name__})", "check outbound HTTPS")
    if resp.status_code in (401, 403):
        return fail(SYSTEM, "key", f"rejected (HTTP {resp.status_code})", f"set {KEY_VAR} to a valid API key")
    if resp.status_code != 200:
        return fail(
            SYSTEM, "key", f"HTTP {resp.status_code} from /v3/scopes", "retry; check SendGrid's status"
        )
    try:
        scopes = resp.json().get("scopes")
    except (ValueError, AttributeError):
        scopes = None
    if not isinstance(scopes, list):
        return fail(SYSTEM, "key", "/v3/scopes did not list scopes", "retry; check SendGrid's status")
    if MAIL_SEND_SCOPE not in scopes:
        return fail(
            SYSTEM,
            "key",
            f"valid, but without {MAIL_SEND_SCOPE} ({len(scopes)} scopes)",
            "grant the key 'Mail Send' (Settings > API Keys > Restricted Access), or set "
            f"{KEY_VAR} to one that has it",
        )
    return ok(SYSTEM, "key", f"valid, with {MAIL_SEND_SCOPE} (no email sent)")


def sender_check(from_address: str) -> Check:
    if not from_address or from_address == PLACEHOLDER_SENDER or "@" not in from_address:
        return fail(
            SYSTEM,
            "sender",
            f"EMAIL_FROM is {from_address or 'empty'!r}",
            "set EMAIL_FROM to a sender verified in SendGrid (Settings > Sender Authentication)",
        )
    return ok(SYSTEM, "sender", f"EMAIL_FROM {from_address}")
