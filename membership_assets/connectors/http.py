"""One JSON-over-HTTP client for every upstream API: pacing, retries, typed errors, request counts.

Retries follow the pattern trusted sync tools document (dlt, Singer SDK, Census): retry 429, 5xx,
timeouts and connection failures with exponential backoff and jitter; when the server sends
Retry-After, wait exactly that long instead. 401/403 and other 4xx are never retried.
"""

from __future__ import annotations

import email.utils
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from ..privacy import scrub, split_credentials
from .errors import (
    RETRYABLE_ERRORS,
    ApiError,
    AuthError,
    BadRequestError,
    BadResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from .ratelimit import RateLimiter

logger = logging.getLogger(__name__)


class RequestStats:
    """Thread-safe counters of what a client actually sent, for asset metadata and benchmarks.

    ``requests`` counts a request as it is sent (before any answer), so a count saved when a
    process is killed covers every request the server may have answered; ``by_status`` and
    ``by_kind`` count answers. Listeners (a scan checkpoint) are told of every change.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.by_status: Counter[int] = Counter()
        self.by_kind: Counter[str] = Counter()
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def sending(self) -> None:
        """A request is about to go out."""
        with self._lock:
            self.requests += 1
        self._changed()

    def record(self, kind: str, status: int | None) -> None:
        """The answer (or the transport failure, ``status`` None) of a request already counted."""
        with self._lock:
            self.by_kind[kind] += 1
            if status is not None:
                self.by_status[status] += 1
        self._changed()

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    @property
    def rate_limited(self) -> int:
        return self.by_status.get(429, 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "rate_limited_429": self.by_status.get(429, 0),
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_kind": dict(sorted(self.by_kind.items())),
            }


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After as seconds; accepts delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


class JsonApiClient:
    """Paced, retrying JSON client bound to one base URL and one set of auth headers."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        limiter: RateLimiter | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 300.0,
        rate_limit_budget: float = 900.0,
        pool_size: int = 16,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Any = None,
    ):
        self.name = name
        # user:password@ in a URL would end up in every logged URL: send it as basic auth instead.
        base_url, url_auth = split_credentials(base_url)
        self.base_url = base_url.rstrip("/") + "/"
        self._origin = _origin(self.base_url)
        self.limiter = limiter
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self.rate_limit_budget = rate_limit_budget
        self._backoff = wait_exponential_jitter(initial=backoff_initial, max=backoff_max)
        self._sleep = sleep
        self.log = log or logger
        self.stats = RequestStats()
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"Accept": "application/json"})
        self.session.headers.update(dict(headers or {}))
        if url_auth is not None:
            self.session.auth = url_auth

    # -- URLs -------------------------------------------------------------------------------

    def url_for(self, path_or_href: str) -> str:
        """Resolve a relative path, or check that an absolute HAL href stays on our origin.

        HAL responses carry absolute links; following one to another host would send the API
        token there, so such links are refused.
        """
        if "://" in path_or_href:
            if _origin(path_or_href) != self._origin:
                scheme, host = _origin(path_or_href)
                raise BadResponseError(
                    f"refusing to follow a link to another origin ({scheme}://{host})", api=self.name
                )
            return path_or_href
        return urljoin(self.base_url, path_or_href.lstrip("/"))

    # -- requests ---------------------------------------------------------------------------

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        kind: str | None = None,
        validate: Callable[[Any], None] | None = None,
        headers: Mapping[str, str] | None = None,
        allow_empty: bool = False,
    ) -> Any:
        """Send one logical request (with retries) and return the decoded JSON body.

        ``validate`` may raise BadResponseError for a body of the wrong shape; that attempt is
        then retried like a 5xx, because a truncated or half-written page is usually transient.
        """
        url = self.url_for(path)
        label = kind or path
        retrying = Retrying(
            stop=self._stop,
            retry=retry_if_exception_type(RETRYABLE_ERRORS),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
            before_sleep=self._before_sleep,
        )
        return retrying(self._attempt, method, url, params, json_body, label, validate, headers, allow_empty)

    def _attempt(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        label: str,
        validate: Callable[[Any], None] | None,
        headers: Mapping[str, str] | None,
        allow_empty: bool,
    ) -> Any:
        if self.limiter is not None:
            self.limiter.acquire()
        ctx = {"api": self.name, "method": method, "url": url}
        self.stats.sending()
        try:
            resp = self.session.request(
                method, url, params=params, json=json_body, headers=headers, timeout=self.timeout
            )
        except requests.Timeout as exc:
            self.stats.record(label, None)
            raise TransportError(f"timed out after {self.timeout}s", **ctx) from exc
        except requests.ConnectionError as exc:
            self.stats.record(label, None)
            raise TransportError(f"connection failed: {exc.__class__.__name__}", **ctx) from exc
        self.stats.record(label, resp.status_code)
        status = resp.status_code
        ctx["status"] = status
        if status in (401, 403):
            raise AuthError("credentials rejected; check the API token (it may be wrong or expired)", **ctx)
        if status == 404:
            raise NotFoundError("not found", **ctx)
        if status == 429:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if self.limiter is not None:  # slow down, and hold every request not yet sent
                pause = None if retry_after is None else min(retry_after, self.max_retry_after)
                self.limiter.rate_limited(pause)
            raise RateLimitedError("rate limited", retry_after=retry_after, **ctx)
        if status >= 500:
            raise ServerError(
                f"server error: {_describe(resp)}",
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                **ctx,
            )
        if status >= 400:
            raise BadRequestError(f"request rejected: {_describe(resp)}", **ctx)
        if status == 304:
            return None
        if not resp.content:
            if allow_empty:
                return None
            raise BadResponseError("empty body where JSON was expected", **ctx)
        try:
            data = resp.json()
        except ValueError as exc:
            raise BadResponseError(f"body is not valid JSON: {_describe(resp, exc)}", **ctx) from None
        if validate is not None:
            try:
                validate(data)
            except BadResponseError as exc:
                # Re-raise with the request context so the log says which page was bad.
                raise type(exc)(exc.detail, **ctx) from exc
        return data

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        kind: str | None = None,
    ) -> requests.Response:
        """One paced request without retries or status mapping (for conditional GETs)."""
        url = self.url_for(path)
        if self.limiter is not None:
            self.limiter.acquire()
        self.stats.sending()
        try:
            resp = self.session.request(method, url, params=params, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            self.stats.record(kind or path, None)
            raise TransportError(
                f"connection failed: {exc.__class__.__name__}", api=self.name, method=method, url=url
            ) from exc
        self.stats.record(kind or path, resp.status_code)
        if resp.status_code in (401, 403):
            raise AuthError(
                "credentials rejected", api=self.name, method=method, url=url, status=resp.status_code
            )
        return resp

    # -- retry policy -------------------------------------------------------------------------

    def _stop(self, state: RetryCallState) -> bool:
        """Give up after ``max_attempts`` failures; a 429 with a Retry-After is not a failure.

        A server that answers "come back in N seconds" is pacing us (one API key is shared by the
        organization's tools), so such answers only spend a total time budget. A 429 without a
        usable Retry-After (none, or 0) counts as a failed attempt like a 5xx.
        """
        exc = state.outcome.exception() if state.outcome else None
        paced = getattr(state, "paced_429s", 0)
        if isinstance(exc, RateLimitedError) and exc.retry_after:
            state.paced_429s = paced + 1  # type: ignore[attr-defined]
            spent = getattr(state, "paced_seconds", 0.0) + min(exc.retry_after, self.max_retry_after)
            state.paced_seconds = spent  # type: ignore[attr-defined]
            return max(spent, state.seconds_since_start or 0.0) >= self.rate_limit_budget
        return state.attempt_number - paced >= self.max_attempts

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_retry_after)
        return self._backoff(state)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.record_retry()
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self.log.warning(
            f"{self.name}: attempt {state.attempt_number}/{self.max_attempts} failed "
            f"({exc}); retrying in {wait:.2f}s"
        )

    def close(self) -> None:
        self.session.close()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _describe(resp: requests.Response, parse_error: ValueError | None = None) -> str:
    """What was wrong with a response, never what it said: bodies carry members' personal data.

    Only fields known to be safe leave: the content type, the length, where parsing failed and
    an error *code* (see ``error_code``). An API's free-text message ("detail", "message") may
    quote the row it choked on, names included, which no pattern can scrub reliably.
    """
    kind = resp.headers.get("Content-Type", "no content type").split(";")[0].strip()
    if not SAFE_CONTENT_TYPE.fullmatch(kind):
        kind = "unrecognised content type"
    where = ""
    if parse_error is not None:
        reason = getattr(parse_error, "msg", None) or type(parse_error).__name__
        pos = getattr(parse_error, "pos", None)
        reason = reason if SAFE_PARSE_REASON.fullmatch(reason) else type(parse_error).__name__
        where = f", {reason} at char {pos}" if isinstance(pos, int) else f", {reason}"
    code = error_code(resp) if resp.status_code >= 400 else None
    return (
        (f"error code {code} (" if code else "")
        + f"{kind}, {len(resp.content or b'')} bytes{where}"
        + (")" if code else "")
    )


# An error code is an identifier with a separator (``not_authenticated``, ``RATE_LIMITED``,
# ``member.invalid``): a name, an email or a sentence never has that shape.
ERROR_CODE = re.compile(r"[a-z][a-z0-9]*(?:[_.-][a-z0-9]+)+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
ERROR_CODE_KEYS = ("code", "error_code", "error")
SAFE_CONTENT_TYPE = re.compile(r"[a-z]+/[a-z0-9.+-]{1,64}")
SAFE_PARSE_REASON = re.compile(r"[A-Za-z ]{1,60}")  # json's own fixed messages ("Expecting value")


def error_code(resp: requests.Response) -> str | None:
    """The API's error code (a JSON ``code``/``error_code``/``error`` field shaped like one),
    or None. Free-text fields are never read."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    for key in ERROR_CODE_KEYS:
        value = body.get(key)
        shaped = isinstance(value, str) and len(value) <= 64 and ERROR_CODE.fullmatch(value)
        if shaped and scrub(value) == value:  # and nothing like a kennitala or an email
            return value
    return None


__all__ = ["ApiError", "JsonApiClient", "RequestStats", "parse_retry_after"]
