"""Sign-in for the admin page: password hashes, signed session cookies, CSRF tokens, login limits.

Admin accounts are not the machine API key: each admin has a name and a password hash in
``SYNC_ADMIN_USERS_PASSWORD`` (``name:hash`` pairs separated by commas or newlines; a hash from
``python -m membership_assets admin-hash``, scrypt, or Django's ``pbkdf2_sha256$...``). A session
is a cookie signed with ``SYNC_ADMIN_SESSION_SECRET_PASSWORD`` (HMAC-SHA256) that carries the
admin's name, its expiry and a random id from which the form token is derived; nothing about a
session is stored, so any replica with the same secret accepts it. Pure functions and small
in-memory structures only: the HTTP side is in ``admin.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
MAX_PASSWORD_CHARS = 256  # hashing cost must not grow with what a client sends
MIN_PASSWORD_CHARS = 12
MIN_SESSION_SECRET_CHARS = 32

# scrypt: 16 MiB and ~50 ms per check; the login limiter bounds how often anyone can ask.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PBKDF2_MIN_ITERATIONS = 100_000


class AdminConfigError(ValueError):
    """The admin accounts or session secret are configured wrongly (raised at start-up)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$key``: what ``admin-hash`` prints and the accounts variable holds."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ValueError(f"a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_hash_format(stored: str) -> None:
    """Raise AdminConfigError unless ``stored`` is a hash this module can verify (at start-up, so a
    typo is found by the operator, not by an admin who cannot sign in)."""
    parts = stored.split("$")
    if parts[0] == "scrypt" and len(parts) == 6 and all(p.isdigit() for p in parts[1:4]):
        n, r, p = (int(x) for x in parts[1:4])
        if n >= 2**14 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16 and n * r <= 2**20:
            return
    pbkdf2 = parts[0] == "pbkdf2_sha256" and len(parts) == 4 and parts[1].isdigit()
    if pbkdf2 and PBKDF2_MIN_ITERATIONS <= int(parts[1]) <= 10_000_000:
        return
    raise AdminConfigError(
        "an admin password hash is not scrypt$N$r$p$salt$key or pbkdf2_sha256$iter$salt$hash"
    )


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare; any malformed input is False)."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        check_hash_format(stored)
        parts = stored.split("$")
        if parts[0] == "scrypt":
            n, r, p = (int(x) for x in parts[1:4])
            want = _unb64(parts[5])
            got = hashlib.scrypt(
                password.encode(), salt=_unb64(parts[4]), n=n, r=r, p=p, dklen=len(want), maxmem=2**26
            )
        else:  # Django's format, so an Ekklesia admin's existing hash can be reused
            want = base64.b64decode(parts[3])
            got = hashlib.pbkdf2_hmac(
                "sha256", password.encode(), parts[2].encode(), int(parts[1]), len(want)
            )
        return hmac.compare_digest(got, want)
    except (AdminConfigError, ValueError, TypeError):
        return False


# A hash checked when the name is unknown, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = "scrypt$16384$8$1$" + _b64(b"0" * 16) + "$" + _b64(b"0" * 32)


def parse_users(text: str) -> dict[str, str]:
    """``name:hash`` pairs (comma or newline separated) -> {name: hash}; AdminConfigError if malformed."""
    users: dict[str, str] = {}
    for item in re.split(r"[,\n]", text or ""):
        item = item.strip()
        if not item:
            continue
        name, sep, stored = item.partition(":")
        name = name.strip().lower()
        if not sep or not USERNAME.fullmatch(name):
            raise AdminConfigError(
                "SYNC_ADMIN_USERS_PASSWORD holds name:hash pairs; a name is 1-32 of a-z 0-9 . _ -"
            )
        check_hash_format(stored.strip())
        if name in users:
            raise AdminConfigError(f"admin {name} is listed twice")
        users[name] = stored.strip()
    return users


def authenticate(users: dict[str, str], name: str, password: str) -> str | None:
    """The signed-in admin's name, or None."""
    name = name.strip().lower()
    stored = users.get(name) if USERNAME.fullmatch(name) else None
    ok = verify_password(password, stored or _DUMMY_HASH)
    return name if ok and stored else None


# -- sessions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    user: str
    sid: str  # random per sign-in; the form token derives from it
    expires: int  # unix seconds
    issued: float = 0.0  # unix seconds: a sign-out after it ends the session (admin.py)


class SessionSigner:
    """Cookie value = payload.signature; expired, altered or revoked cookies read as no session."""

    def __init__(self, secret: str, lifetime_seconds: int, clock: Callable[[], float] = time.time):
        if len(secret) < MIN_SESSION_SECRET_CHARS:
            raise AdminConfigError(
                f"SYNC_ADMIN_SESSION_SECRET_PASSWORD needs at least {MIN_SESSION_SECRET_CHARS} characters"
            )
        self._key = hashlib.sha256(b"membership-admin-session\0" + secret.encode()).digest()
        self.lifetime, self.clock = lifetime_seconds, clock
        self._revoked: dict[str, int] = {}  # sid -> expiry, until it would have expired anyway
        self._lock = threading.Lock()

    def _mac(self, data: bytes) -> str:
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())

    def issue(self, user: str) -> tuple[Session, str]:
        now = self.clock()
        session = Session(user, secrets.token_urlsafe(18), int(now) + self.lifetime, round(now, 3))
        payload = _b64(
            json.dumps(
                {"u": session.user, "s": session.sid, "e": session.expires, "i": session.issued}
            ).encode()
        )
        return session, f"{payload}.{self._mac(payload.encode())}"

    def read(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > 512 or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        # Bytes: compare_digest refuses non-ASCII text, and a cookie is whatever a client sends.
        if not hmac.compare_digest(self._mac(payload.encode()).encode(), mac.encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["u"]), str(data["s"]), int(data["e"]), float(data["i"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= self.clock():
            return None
        with self._lock:
            if session.sid in self._revoked:
                return None
        return session

    def revoke(self, session: Session) -> None:
        """Sign-out: this process refuses the cookie from now on (the browser also drops it)."""
        now = self.clock()
        with self._lock:
            for sid in [s for s, e in self._revoked.items() if e <= now]:
                del self._revoked[sid]
            if len(self._revoked) < 100_000:
                self._revoked[session.sid] = session.expires

    def csrf_token(self, session: Session) -> str:
        """The form token of one session (derived, so nothing is stored)."""
        return self._mac(f"csrf\0{session.sid}".encode())

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session).encode(), (token or "").encode())


# -- login rate limit ------------------------------------------------------------------------


class LoginLimiter:
    """At most ``attempts`` failed sign-ins per ``window`` seconds per client address and per
    account name (so neither one address nor many addresses can guess one password)."""

    def __init__(self, attempts: int = 5, window: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.attempts, self.window, self.clock = attempts, window, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def retry_after(self, client: str, name: str) -> int:
        """0 when a sign-in may be tried now, else seconds to wait."""
        now = self.clock()
        with self._lock:
            waits = [
                int(q[0] + self.window - now) + 1
                for q in (self._recent(f"ip:{client}", now), self._recent(f"user:{name}", now))
                if len(q) >= self.attempts
            ]
        return max(waits, default=0)

    def failed(self, client: str, name: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > 10_000:  # a spoofed-source flood must not grow memory
                self._failures.clear()
            for key in (f"ip:{client}", f"user:{name[:32]}"):
                self._failures.setdefault(key, deque(maxlen=self.attempts)).append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{name}", None)
