"""The sync API's credentials: what may never be a production secret, and how strong one must be.

Every credential-like constant shipped in this code is public (it is on GitHub), so a server
reachable from anywhere but its own machine refuses all of them, whatever ``MEMBERSHIP_ENV``
says. ``membership_assets_tests/test_sync_api_config.py`` scans the package for string constants
named like a credential and fails when one is missing here.
"""

from __future__ import annotations

import ipaddress

from ..settings import (
    LOCAL_ADMIN_PASSWORD,
    LOCAL_ADMIN_USER,  # noqa: F401  (the admin page's local account, beside its password)
    LOCAL_API_KEY,
    LOCAL_WEBHOOK_SECRET,
    SIMULATED_AB_TOKEN,
    SIMULATED_DJANGO_TOKEN,
)

# One list of everything public that looks like a credential (simulator tokens, Django's stand-in
# key, the local defaults above, the test suite's and benchmarks' secrets).
SHIPPED_CONSTANTS: tuple[str, ...] = (
    LOCAL_WEBHOOK_SECRET,
    LOCAL_API_KEY,
    LOCAL_ADMIN_PASSWORD,
    SIMULATED_AB_TOKEN,
    SIMULATED_DJANGO_TOKEN,
    "local-registry-stand-in-not-a-secret",
    "test-webhook-secret",
    "test-api-key",
    "benchmark-webhook-secret",
    "benchmark-sync-api-key",
)

MIN_SECRET_LENGTH = 32  # 32 random characters carry well over 128 bits
MIN_DISTINCT_CHARACTERS = 8  # "aaaa...a" is long and still guessable


def is_loopback(host: str) -> bool:
    """True when a server bound to ``host`` is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def weakness(value: str) -> str | None:
    """Why ``value`` cannot guard a server on the internet, or None when it can."""
    stripped = value.strip()
    lowered = stripped.lower()
    if any(c.lower() in lowered for c in SHIPPED_CONSTANTS):
        return "is a constant shipped in the code (public)"
    if len(stripped) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if len(set(stripped)) < MIN_DISTINCT_CHARACTERS:
        return f"has fewer than {MIN_DISTINCT_CHARACTERS} distinct characters"
    return None
