"""Personal data stays in the members database and the audit warehouse: the one module that says how.

* ``pseudonym(kennitala)``: a keyed hash (16 hex digits) that identifies a member to anyone who
  can query the members database or the warehouse, and reveals nothing (not even the birth date)
  to a reader of logs, metadata or alert emails. The same value is computed by the warehouse's
  analyst views (``member_key``), so a log line can be matched to an analyst's row.
* ``scrub(text)``: free text (exception messages, error columns, alert bodies) with kennitala-like
  digit runs replaced by their pseudonym, email addresses removed, and the values Postgres and
  SQLAlchemy quote in their errors (``Key (...)=(...)``, ``Failing row contains (...)``, COPY
  context, bound parameters) cut out.
* ``redact_url`` / ``split_credentials`` / ``with_password``: credentials never travel inside a
  URL that could be logged or shown; they come from ``{NAME}_PASSWORD`` variables.
* ``cipher()``: authenticated encryption (Fernet) for scratch data that must touch a disk.

Every key is derived from one secret, ``MEMBERSHIP_PRIVACY_KEY_PASSWORD`` (required in
production). On the embedded default, a random key is generated once into
``$MEMBERSHIP_STATE_DIR/keys/privacy.key`` (mode 0600).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .settings import is_production, state_dir

PRIVACY_KEY_ENV = "MEMBERSHIP_PRIVACY_KEY_PASSWORD"
PSEUDONYM_LENGTH = 16  # hex digits: 64 bits, no collisions among any realistic membership

# -- keys ------------------------------------------------------------------------------------------


def _master_key() -> bytes:
    value = os.getenv(PRIVACY_KEY_ENV, "").strip()
    if value:
        return value.encode()
    if is_production():
        raise RuntimeError(f"{PRIVACY_KEY_ENV} must be set in production (pseudonyms, scratch encryption)")
    return _local_key_file(state_dir() / "keys" / "privacy.key")


@functools.cache
def _local_key_file(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


def derived_key(purpose: str) -> bytes:
    """A key for one purpose only, so publishing one (the pseudonym key) exposes no other."""
    return hmac.new(_master_key(), f"membership_assets:{purpose}".encode(), hashlib.sha256).digest()


def pseudonym_secret() -> str:
    """The pseudonym key as text: what the warehouse's private key table holds for its views."""
    return derived_key("pseudonym").hex()


# -- pseudonyms ------------------------------------------------------------------------------------


def normalize_kennitala(value: str) -> str:
    return re.sub(r"[\s-]", "", str(value))


def pseudonym_with(secret: str, kennitala: str) -> str:
    """sha256(secret ':' kennitala), first 16 hex digits: the SQL views compute the same."""
    digest = hashlib.sha256(f"{secret}:{normalize_kennitala(kennitala)}".encode()).hexdigest()
    return digest[:PSEUDONYM_LENGTH]


def pseudonym(kennitala: str | None) -> str:
    """A member's stable, non-revealing identifier for logs, metadata and alerts."""
    if kennitala is None or str(kennitala).strip() == "":
        return "<none>"
    return pseudonym_with(pseudonym_secret(), str(kennitala))


# -- free text -------------------------------------------------------------------------------------

# A kennitala (DDMMYY-NNNN, hyphen or space optional) or any other run of 9-12 digits, which in a
# truncated body may be one.
_KENNITALA_LIKE = re.compile(r"(?<![\w.-])(\d{6}[-\s]?\d{4}|\d{9,12})(?![\w-])")
_EMAIL = re.compile(r"[^\s@\"'<>(),;:\[\]{}]+@[^\s@\"'<>(),;:\[\]{}]+\.[A-Za-z]{2,}")
# What databases quote back in their errors: the values of a row or a key, bound parameters.
_DB_VALUES = [
    (re.compile(r"(Key \([^)]*\))=\((?:[^()]|\([^)]*\))*\)"), r"\1=(…)"),
    (re.compile(r"(Failing row contains )\((?:[^()]|\([^)]*\))*\)"), r"\1(…)"),
    (re.compile(r"(COPY [^,\n]+, line \d+)(, column [\w\"]+)?: .*"), r"\1\2: …"),
    (re.compile(r"\[parameters: .*"), "[parameters hidden]"),
]


def scrub(text: object) -> str:
    """``text`` without kennitalas (replaced by their pseudonym), emails or quoted row values."""
    if text is None:
        return ""
    out = str(text)
    for pattern, replacement in _DB_VALUES:
        out = pattern.sub(replacement, out)
    out = _EMAIL.sub("<email>", out)
    if not _KENNITALA_LIKE.search(out):
        return out
    try:
        secret = pseudonym_secret()
    except RuntimeError:  # no key configured: still scrub (an error path must not fail on this)
        return _KENNITALA_LIKE.sub("<kennitala>", out)
    return _KENNITALA_LIKE.sub(lambda m: f"<kennitala {pseudonym_with(secret, m.group(1))}>", out)


def scrub_json(value: object) -> object:
    """``scrub`` applied to every string inside a JSON-like value (keys included)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(k): scrub_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_json(v) for v in value]
    return value


# -- URLs ------------------------------------------------------------------------------------------


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(url without user:password@, (user, password) or None)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (unquote(parts.username or ""), unquote(parts.password or ""))


def redact_url(url: object) -> str:
    """``url`` with any password replaced by ``***`` (the user name is kept: it helps debugging)."""
    text = "" if url is None else str(url)
    try:
        parts = urlsplit(text)
        if parts.password is None:
            return text
    except ValueError:
        return re.sub(r"//[^/@\s]*@", "//***@", text)
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` (from a ``{NAME}_PASSWORD`` variable) merged in, for use only."""
    if not password:
        return url
    parts = urlsplit(url)
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
    else:
        user, host = "", parts.netloc
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- encryption at rest ----------------------------------------------------------------------------


def cipher():
    """Fernet (AES-128-CBC + HMAC-SHA256) keyed for scratch data: intermediates and checkpoints."""
    import base64

    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(derived_key("scratch")))


def carries_personal_data(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it chains) may quote personal data in its stored text.

    Database errors quote rows and bound values; anything whose text ``scrub`` would change
    quotes something that looks like a kennitala or an email.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.split(".")[0] in _DATABASE_MODULES:
            return True
        if scrub(current) != str(current):
            return True
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


_DATABASE_MODULES = {"sqlalchemy", "psycopg", "psycopg2", "sqlite3", "duckdb"}
