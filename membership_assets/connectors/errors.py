"""Typed errors shared by every API connector.

Callers branch on the type, never on message text: an AuthError means "fix the credentials, do not
retry", a NotFoundError may be an expected outcome (a tagging already deleted), and an
IncompleteListingError means the listing could not be proven complete, so nothing may be removed
on the strength of it.
"""

from __future__ import annotations

from ..privacy import redact_url


class ApiError(Exception):
    """Base class: a request to an upstream API did not give a usable answer."""

    def __init__(
        self,
        message: str,
        *,
        api: str = "api",
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
    ):
        self.detail = message
        self.api = api
        self.method = method
        self.url = redact_url(url) if url else url
        self.status = status
        where = f" [{method} {self.url}]" if method and url else ""
        code = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{api}: {message}{code}{where}")


class AuthError(ApiError):
    """401/403: the credentials are missing, wrong or expired. Never retried."""


class NotFoundError(ApiError):
    """404: the resource does not exist (or no longer exists)."""


class BadRequestError(ApiError):
    """Any other 4xx: the request itself is wrong. Never retried."""


class RateLimitedError(ApiError):
    """429 that persisted through every retry."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServerError(ApiError):
    """5xx that persisted through every retry."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        self.retry_after = retry_after
        super().__init__(message, **kw)


class TransportError(ApiError):
    """Connection refused/reset or timeout that persisted through every retry."""


class BadResponseError(ApiError):
    """The body was not the documented shape (invalid JSON, missing keys, wrong types)."""


class IncompleteListingError(BadResponseError):
    """A paged listing could not be proven complete (short page, changed page count, count mismatch)."""


# Errors worth another attempt: the same request may well succeed a moment later.
RETRYABLE_ERRORS: tuple[type[ApiError], ...] = (
    RateLimitedError,
    ServerError,
    TransportError,
    BadResponseError,
)
