"""uvicorn with the limits a server on the open internet needs (the receiver's transport layer).

uvicorn alone keeps a connection that never finishes its headers open forever, and accepts
connections until the process runs out of file descriptors. Here every connection has:

* a header deadline (``header_timeout``, from connect or from the first byte of a keep-alive
  request) and a request deadline (``body_timeout``, to the last body byte); when one passes the
  connection gets 408 and is closed;
* a header size cap (``max_header_bytes``; 431 and closed);
* a place among at most ``max_connections`` (kept below the file limit): when full, the
  connection quietest for longest that is not waiting for its own answer is closed, so idle and
  half-sent connections can never lock out a real sender;
* uvicorn's keep-alive timeout, ``limit_concurrency`` as a backstop, no proxy headers (the app
  reads ``X-Forwarded-For`` from ``SYNC_API_TRUSTED_PROXIES`` only) and no websockets.

Log lines are bounded and printable (``BoundedFormatter``), warnings never carry a traceback,
and at most 200 lines a second are written below ERROR (``LogBudget``).
"""

from __future__ import annotations

import logging
import resource
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional: the pure-Python h11 parser serves then
    HttpToolsProtocol = None

log = logging.getLogger("membership_assets.sync_api")

MAX_LOG_LINE = 600  # characters of one log record, traceback included
FD_RESERVE = 64  # descriptors kept free for the database pool, logs and the listening socket
_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _SlowClientGuard:
    """Mixed into uvicorn's HTTP protocol classes; ``limits`` is set per server (see ``protocol``)."""

    limits: Any  # SyncApiSettings
    max_connections: int

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._timer = None
        self._phase = "idle"
        self._header_bytes = 0
        self._last_active = self.loop.time()
        self._arm("headers", self.limits.header_timeout)
        self._make_room()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_active = self.loop.time()
        between_requests = self.cycle is None or self.cycle.response_complete
        if between_requests and self._timer is None:  # a new request starts: its headers' deadline
            self._header_bytes = 0
            self._arm("headers", self.limits.header_timeout)
        super().data_received(data)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # its headers are still incomplete
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(_431, "headers_too_large")
        elif cycle.more_body:
            if self._phase != "body":
                self._arm("body", self.limits.body_timeout)
        else:
            self._disarm()  # the whole request is in; the app's own limits apply now

    # Deadlines.
    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
        self._timer = None
        self._phase = "idle"

    def _expired(self) -> None:
        self._timer = None
        reason = "header_timeout" if self._phase == "headers" else "body_timeout"
        if self.cycle is None or self.cycle.response_complete:
            return self._refuse(_408, reason)
        log.warning("closed: %s", reason)  # the app sees a disconnect and answers nothing
        self.transport.close()

    def _refuse(self, raw: bytes, reason: str) -> None:
        log.warning("closed: %s", reason)
        if not self.transport.is_closing():
            self.transport.write(raw)
            self.transport.close()

    # Connection limit.
    def _busy(self) -> bool:
        """Waiting for its own answer (a whole request in, the app working): never dropped."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.more_body

    def _make_room(self) -> None:
        connections = self.connections
        if len(connections) <= self.max_connections:
            return
        idle = [c for c in connections if c is not self and not c._busy()]
        victim = min(idle, key=lambda c: c._last_active) if idle else self
        log.warning("connection limit %d reached: closing the quietest connection", self.max_connections)
        victim.transport.abort()  # frees the descriptor now (close() waits for buffered writes)


def protocol(settings, max_connections: int) -> type:
    """uvicorn's fastest available HTTP protocol with this server's limits."""
    base = HttpToolsProtocol or H11Protocol
    return type(
        "GuardedHttpProtocol",
        (_SlowClientGuard, base),
        {"limits": settings, "max_connections": max_connections},
    )


def connection_limit(wanted: int) -> int:
    """``wanted``, kept below the file limit (raised to the hard limit first when it is lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + FD_RESERVE)
    if soft < min(target, wanted + FD_RESERVE):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, wanted + FD_RESERVE), hard))
            soft = min(target, wanted + FD_RESERVE)
        except (ValueError, OSError):
            pass
    limit = min(wanted, soft - FD_RESERVE)
    if limit < wanted:
        log.warning("SYNC_API_MAX_CONNECTIONS lowered to %d (file limit %d)", limit, soft)
    return max(limit, 1)


class BoundedFormatter(logging.Formatter):
    """One record, at most ``MAX_LOG_LINE`` printable characters: whatever reaches a message
    (a library's text, an exception) cannot forge log lines or fill the disk. Warnings (client
    errors) never carry a traceback; errors keep the exception type and the innermost frame."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            exc_type, _, tb = record.exc_info
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
            message += f" [{getattr(exc_type, '__name__', '?')} at {where}]"
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"
        line = line.encode("ascii", "backslashreplace").decode("ascii")
        line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)
        return line if len(line) <= MAX_LOG_LINE else line[: MAX_LOG_LINE - 3] + "..."


class LogBudget(logging.Filter):
    """At most ``per_second`` records below ERROR a second (a flood of bad requests must not
    fill the disk); what was dropped is counted in the next record that passes."""

    def __init__(self, per_second: int = 200):
        super().__init__()
        self.per_second, self.window, self.used, self.dropped = per_second, 0, 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        second = int(record.created)
        if second != self.window:
            self.window, self.used = second, 0
        self.used += 1
        if self.used > self.per_second:
            self.dropped += 1
            return False
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} log lines dropped before this one)"
            self.dropped = 0
        return True


LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"bounded": {"()": BoundedFormatter}},
    "filters": {"budget": {"()": LogBudget}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "bounded", "filters": ["budget"]}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "uvicorn": {"level": "INFO", "propagate": True},
        "uvicorn.error": {"level": "INFO", "propagate": True},
        "uvicorn.access": {"level": "WARNING", "propagate": True},
        "alembic": {"level": "WARNING", "propagate": True},
    },
}


def uvicorn_config(app, settings, log_config: dict | None = LOG_CONFIG):
    import uvicorn

    max_connections = connection_limit(settings.max_connections)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol(settings, max_connections),
        ws="none",
        lifespan="on",
        proxy_headers=False,  # X-Forwarded-For is read by the app, from trusted proxies only
        server_header=False,
        date_header=False,
        access_log=False,  # it prints the decoded request path (a sender could forge log lines)
        log_config=log_config,
        timeout_keep_alive=int(max(1, settings.keepalive_timeout)),
        limit_concurrency=max_connections + 16,  # backstop; the guard keeps connections below it
        h11_max_incomplete_event_size=settings.max_header_bytes,
        backlog=min(2048, max_connections),
        timeout_graceful_shutdown=10,
    )


def run(app, settings) -> None:
    import uvicorn

    uvicorn.Server(uvicorn_config(app, settings)).run()
