"""One Django per process, many stand-ins: settings, per-stand-in databases, a server thread each.

``setup()`` configures Django once with ``settings`` and migrates a template SQLite database
(auth, tokens, the members app). Each stand-in copies the template into its own file, registered
as a database alias, and serves it with Django's own threaded WSGI server (the one ``runserver``
and ``LiveServerTestCase`` use) on a loopback port. A context variable names the stand-in being
served or mutated; the router sends its queries to that stand-in's database.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import itertools
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("django_registry_stand_in", default=None)
_setup_lock = threading.Lock()
_workdir: Path | None = None
_aliases = itertools.count(1)
SETTINGS_MODULE = "membership_assets.simulators.django_registry.settings"


def current() -> Any:
    """The stand-in whose request or mutation this thread is handling."""
    stand_in = _current.get()
    if stand_in is None:
        raise RuntimeError("no registry stand-in is active in this context")
    return stand_in


@contextlib.contextmanager
def serving(stand_in: Any) -> Iterator[None]:
    token = _current.set(stand_in)
    try:
        yield
    finally:
        _current.reset(token)


class StandInRouter:
    """Every query goes to the database of the stand-in in context (the template otherwise)."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        stand_in = _current.get()
        return stand_in.alias if stand_in is not None else "default"

    db_for_write = db_for_read

    def allow_relation(self, *args: Any, **hints: Any) -> bool:
        return True


def setup() -> None:
    """Configure Django with the stand-in's settings (once per process) and build the template."""
    global _workdir
    with _setup_lock:
        if _workdir is not None:
            return
        import importlib

        import django
        from django.conf import settings

        if settings.configured:  # by someone else: two Django projects cannot share a process
            raise RuntimeError(
                "Django is already configured in this process; the registry stand-in needs its own"
            )
        module = importlib.import_module(SETTINGS_MODULE)
        workdir = Path(tempfile.mkdtemp(prefix="django-registry-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        values = {k: getattr(module, k) for k in dir(module) if k.isupper()}
        values["DATABASES"] = {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(workdir / "template.sqlite3")}
        }
        settings.configure(**values)
        django.setup()
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
        from django.db import connections

        connections["default"].close()
        _workdir = workdir


def add_database() -> str:
    """A fresh copy of the template database, registered under a new alias."""
    from django.db import connections

    assert _workdir is not None
    alias = f"registry_{next(_aliases)}"
    path = _workdir / f"{alias}.sqlite3"
    shutil.copyfile(_workdir / "template.sqlite3", path)
    conf = connections.configure_settings(
        {"default": {}, alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}}
    )[alias]
    # Concurrent page reads and test-side writes: wait for the lock instead of failing at once.
    conf["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL",
        "transaction_mode": "IMMEDIATE",
    }
    conf["CONN_MAX_AGE"] = None  # one connection per server thread (closed when its socket closes)
    connections.settings[alias] = conf
    return alias


def drop_database(alias: str) -> None:
    from django.db import connections

    with contextlib.suppress(Exception):
        connections[alias].close()
        delattr(connections._connections, alias)
    conf = connections.settings.pop(alias, None)
    if conf:
        for suffix in ("", "-wal", "-shm"):
            Path(conf["NAME"] + suffix).unlink(missing_ok=True)


class StandInServer:
    """Django's threaded WSGI server on loopback, serving one stand-in in context."""

    def __init__(self, stand_in: Any, host: str = "127.0.0.1", port: int = 0):
        from django.core.handlers.wsgi import WSGIHandler
        from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

        class QuietHandler(WSGIRequestHandler):
            # No Nagle: else every keep-alive request waits ~40 ms for a delayed ACK and the
            # stand-in, not the client, sets the pace.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

        django_app = WSGIHandler()

        def app(environ: dict[str, Any], start_response: Callable) -> Any:
            # The whole request, including Django's request_finished cleanup, sees the stand-in.
            ctx = contextvars.copy_context()
            ctx.run(_current.set, stand_in)
            response = ctx.run(django_app, environ, start_response)
            return _InContext(ctx, response)

        open_sockets: set[socket.socket] = set()

        class Server(ThreadedWSGIServer):
            def process_request(self, request: socket.socket, client_address: Any) -> None:
                open_sockets.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request: socket.socket) -> None:
                open_sockets.discard(request)
                super().shutdown_request(request)

        self._open_sockets = open_sockets
        self.httpd = Server((host, port), QuietHandler, allow_reuse_address=True)
        self.httpd.set_app(app)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="django-registry", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        # Reset the keep-alive connections still open: closing them the ordinary way would leave
        # the fixed port in TIME_WAIT and the next demo run could not bind it for a minute.
        for sock in list(self._open_sockets):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        if self._thread:
            self._thread.join(timeout=5)


class _InContext:
    """A WSGI response iterable whose iteration and close() run in the request's context."""

    def __init__(self, ctx: contextvars.Context, response: Any):
        self.ctx, self.response = ctx, response

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.ctx.run(list, self.response))

    def close(self) -> None:
        close = getattr(self.response, "close", None)
        if close is not None:
            self.ctx.run(close)
