"""Choosing a session store by URL: ``store_from_url``.

=================================  ==========================================================
``memory://``                       this process only (tests, demos)
``sqlite:///relative/path.db``      a SQLite file (relative path); ``sqlite:////abs/path.db``
                                    for an absolute one (SQLAlchemy's spelling)
``path/to/file.db``                 no scheme: a SQLite file, as ``--store`` always took
``postgresql://user:pw@host/db``    PostgreSQL (also ``postgres://``); libpq parameters such
                                    as ``?sslmode=require`` pass through
``redis://[:pw@]host:port/0``       Redis (``rediss://`` for TLS)
=================================  ==========================================================
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..errors import InputError, SetupError

if TYPE_CHECKING:  # pragma: no cover
    from .base import SessionStore
    from .ratelimit import RateLimit

__all__ = ["StoreURLError", "redact", "store_from_url"]

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


class StoreURLError(InputError):
    """A ``--store`` value that names no store this library knows."""


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and ``repr``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def store_from_url(
    url: str,
    *,
    limits: RateLimit | None = None,
    digest_retention: float | None = None,
    **options,
) -> SessionStore:
    """The session store ``url`` names (see the table in this module's docstring).

    ``limits`` and ``digest_retention`` apply to every backend; other keyword ``options`` go
    to the backend's constructor (e.g. ``namespace=`` for PostgreSQL and Redis,
    ``busy_timeout=`` for SQLite). Raises :class:`StoreURLError` for an unknown scheme,
    :class:`~liveness.stores.StoreUnavailable` when a server cannot be reached, and
    :class:`~liveness.errors.SetupError` naming the ``liveness[stores]`` extra when the
    backend's driver is not installed.
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreURLError("the session store URL is empty")
    kw: dict = dict(options)
    if limits is not None:
        kw["limits"] = limits
    if digest_retention is not None:
        kw["digest_retention"] = digest_retention
    m = _SCHEME_RE.match(url)
    scheme = m.group(1).lower() if m else None
    if scheme is None:
        from .sqlite import SQLiteSessionStore

        return SQLiteSessionStore(url, **kw)
    if scheme == "memory":
        if url[m.end() :]:
            raise StoreURLError(f"memory:// takes nothing after the scheme, not {url!r}")
        from .memory import MemorySessionStore

        return MemorySessionStore(**kw)
    if scheme == "sqlite":
        rest = url[m.end() :]
        if not rest.startswith("/") or len(rest) < 2:
            raise StoreURLError(
                f"{url!r}: write sqlite:///relative/file.db or sqlite:////absolute/file.db"
            )
        from .sqlite import SQLiteSessionStore

        return SQLiteSessionStore(rest[1:], **kw)
    if scheme in ("postgresql", "postgres"):
        _need("psycopg", "psycopg_pool")
        from .postgres import PostgresSessionStore

        return PostgresSessionStore(url, **kw)
    if scheme in ("redis", "rediss"):
        _need("redis")
        from .redis import RedisSessionStore

        return RedisSessionStore(url, **kw)
    raise StoreURLError(
        f"unknown session store {redact(url)!r}: use memory://, sqlite:///FILE, "
        "postgresql://... or redis://..."
    )


def _need(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SetupError(f"this store needs {', '.join(missing)}: pip install 'liveness[stores]'")
