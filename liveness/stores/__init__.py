"""Session stores: where challenge sessions, video digests and failed attempts are kept.

One module per job: :mod:`~liveness.stores.base` (the protocols and
:class:`StoreUnavailable`), :mod:`~liveness.stores.ratelimit` (the rate-limit rule, written
once over the atomic primitives every backend provides), one module per backend
(:mod:`~liveness.stores.memory`, :mod:`~liveness.stores.sqlite`,
:mod:`~liveness.stores.postgres`, :mod:`~liveness.stores.redis`), and
:mod:`~liveness.stores.url` (:func:`store_from_url`).

    >>> store = store_from_url("sqlite:///sessions.db")            # doctest: +SKIP
    >>> store = store_from_url("postgresql://app@db/liveness")      # doctest: +SKIP
    >>> store = store_from_url("redis://cache:6379/0")              # doctest: +SKIP

The PostgreSQL and Redis backends need the ``stores`` extra (``pip install
'liveness[stores]'``); their drivers are imported only when such a store is made.
"""

from __future__ import annotations

from .base import (
    DEFAULT_DIGEST_RETENTION,
    Block,
    SessionStore,
    StorePrimitives,
    StoreUnavailable,
)
from .memory import MemorySessionStore
from .ratelimit import RateLimit, RateLimitRules
from .sqlite import SQLiteSessionStore
from .url import StoreURLError, store_from_url

__all__ = [
    "DEFAULT_DIGEST_RETENTION",
    "Block",
    "MemorySessionStore",
    "PostgresSessionStore",
    "RateLimit",
    "RateLimitRules",
    "RedisSessionStore",
    "SQLiteSessionStore",
    "SessionStore",
    "StorePrimitives",
    "StoreURLError",
    "StoreUnavailable",
    "store_from_url",
]


def __getattr__(name: str):
    # The server backends import their drivers (optional dependencies) only when asked for.
    if name == "PostgresSessionStore":
        from .postgres import PostgresSessionStore

        return PostgresSessionStore
    if name == "RedisSessionStore":
        from .redis import RedisSessionStore

        return RedisSessionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
