"""A small real HTTP server shared by the API simulators: rate limit, faults, request counts.

The simulators imitate upstream APIs closely enough that the production clients run against them
unchanged over real sockets. Nothing here is imported by the production code paths.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-able, bytes, or None
    headers: dict[str, str] = field(default_factory=dict)
    route: str = "other"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


def json_error(status: int, message: str, route: str = "error") -> Response:
    return Response(status=status, body={"error": message}, route=route)


@dataclass
class Fault:
    """One injected misbehaviour, matched by method and a regex searched in the path+query."""

    path_pattern: str = ".*"
    method: str | None = None
    status: int | None = None  # answer with this status instead of the real response
    retry_after: str | None = None
    body: Any = None
    mutate: Callable[[Any], Any] | None = None  # rewrite the real JSON body
    truncate_body: bool = False  # cut the real body in half (invalid JSON)
    delay: float = 0.0
    times: int | None = 1  # None = forever
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return re.search(self.path_pattern, target) is not None


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault | None = None, **kwargs: Any) -> Fault:
        fault = fault or Fault(**kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, target) and (fault.times is None or fault.times > 0):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None


class TokenBucket:
    """Server-side limit: ``rate`` requests per second with bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 when admitted, else seconds until a token frees up."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.by_route: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()

    def record(self, route: str, status: int) -> None:
        with self._lock:
            self.total += 1
            self.by_route[route] += 1
            self.by_status[status] += 1

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_route.clear()
            self.by_status.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.total,
                "by_route": dict(self.by_route),
                "by_status": {str(k): v for k, v in self.by_status.items()},
            }


class SimulatorServer:
    """Serves ``app(Request) -> Response`` on loopback in a background thread."""

    def __init__(
        self,
        app: Callable[[Request], Response],
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
        burst: float | None = None,
        latency: float = 0.0,
    ):
        self.app = app
        self.latency = latency  # seconds per answered request, like a real API's think time
        self.name = name
        self.faults = FaultInjector()
        self.log = RequestLog()
        self.bucket = TokenBucket(rate_limit, burst) if rate_limit else None
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def set_rate_limit(self, rate: float | None, burst: float | None = None) -> None:
        self.bucket = TokenBucket(rate, burst) if rate else None

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"{self.name}-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def dispatch(self, req: Request) -> Response:
        target = req.path + ("?" + "&".join(f"{k}={v}" for k, v in req.query.items()) if req.query else "")
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait > 0:
                return Response(
                    status=429,
                    body={"error": "Too many requests"},
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                    route="rate_limited",
                )
        if self.latency:
            time.sleep(self.latency)
        fault = self.faults.take(req.method, target)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return Response(
                status=fault.status,
                body=fault.body if fault.body is not None else {"error": "injected fault"},
                headers=headers,
                route="fault",
            )
        resp = self.app(req)
        if fault and fault.mutate is not None and resp.body is not None:
            resp.body = fault.mutate(json.loads(json.dumps(resp.body)))
        if fault and fault.truncate_body:
            raw = resp.encoded()
            resp.body = raw[: max(1, len(raw) // 2)]
        return resp

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per response and no Nagle: otherwise every keep-alive request pays a
            # 40 ms delayed-ACK stall and the simulator, not the rate limit, sets the pace.
            disable_nagle_algorithm = True
            wbufsize = 1 << 16

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(
                    method=self.command,
                    path=parts.path,
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                try:
                    resp = server.dispatch(req)
                except Exception as exc:  # a simulator bug must look like a 500, not hang
                    resp = json_error(500, f"simulator error: {exc!r}")
                payload = resp.encoded() if self.command != "HEAD" else b""
                server.log.record(resp.route, resp.status)
                self.send_response(resp.status)
                content_type = "application/hal+json" if resp.body is not None else "text/plain"
                self.send_header("Content-Type", resp.headers.pop("Content-Type", content_type))
                for key, value in resp.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        return Handler


class SimulatedService:
    """Lifecycle shared by the simulators: an in-memory ``data`` set served by ``server``.

    Subclasses set ``data`` (with a ``save(path)`` method), ``_lock`` and ``server``.
    """

    data: Any
    server: SimulatorServer
    _lock: threading.RLock

    @property
    def faults(self) -> FaultInjector:
        return self.server.faults

    @property
    def requests(self) -> RequestLog:
        return self.server.log

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def save(self, path: Path) -> None:
        with self._lock:
            self.data.save(path)
