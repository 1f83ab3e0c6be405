"""Limits per client address and overall, kept in a session store that every instance shares.

:class:`~examples.recovery_service.security.ClientLimiter` counts in this process's memory,
so behind a load balancer N instances would give one address N times its budget.
:class:`SharedClientLimiter` applies the same :class:`~.security.ClientLimits` over a
:class:`~liveness.stores.SessionStore`'s rate-limit primitives (``add_failure``,
``count_failures``, ``get_block``; the junk block is :func:`liveness.stores.ratelimit.
record_failure` itself), in a store of its own beside the session store
(:func:`client_store_beside`: the same server or folder, its own tables or keys), so every
instance on that store counts the same events.

The rule per event (``allow``): the client's block, if any, answers first; then the event is
*appended* to the client's counter and the counter read back, and refused when it holds more
than the limit within ``window`` seconds; the same for the counter of everyone together. An
append before the read makes the bound exact under any concurrency (of racing events, the
one appended ``limit + 1``-th or later always sees more than ``limit``), at a price: a refused
event still counts, so a client that keeps sending above its limit stays limited until it
slows down, and ``Retry-After`` is the whole ``window`` (the counters do not give the oldest
event's time). Events of limits that are off (``10**9``) are not stored at all.

Times are wall-clock (``time.time()``), the same on every instance; addresses are kept only
for the longest window (``purge``).
"""

from __future__ import annotations

import time

from liveness.stores import (
    MemorySessionStore,
    RateLimit,
    SessionStore,
    SQLiteSessionStore,
)
from liveness.stores.ratelimit import record_failure

from .security import ClientLimits

__all__ = ["SharedClientLimiter", "client_store_beside"]

# A limit this large is "no limit" (ClientLimiter's table uses 10**9 for those).
_OFF = 10**9


def client_store_beside(store: SessionStore, limits: ClientLimits) -> SessionStore:
    """A store for client counters next to ``store``: a new memory store, the SQLite file
    ``<path>-clients``, or the same PostgreSQL / Redis server under the namespace
    ``<namespace>_clients``. Its purge keeps events for the longest of the limits' windows."""
    # Only the window matters here: it is how long purge() keeps events.
    rl = RateLimit(window=max(limits.window, limits.junk_window))
    if isinstance(store, MemorySessionStore):
        return MemorySessionStore(limits=rl)
    if isinstance(store, SQLiteSessionStore):
        return SQLiteSessionStore(
            store.path + "-clients", limits=rl, busy_timeout=store.busy_timeout
        )
    kind = type(store).__name__
    if kind == "PostgresSessionStore":
        from liveness.stores.postgres import PostgresSessionStore

        return PostgresSessionStore(
            store.url,
            limits=rl,
            namespace=f"{store.namespace}_clients",
            timeout=store.timeout,
            max_size=4,
        )
    if kind == "RedisSessionStore":
        from liveness.stores.redis import RedisSessionStore

        return RedisSessionStore(store.url, limits=rl, namespace=f"{store.namespace}_clients")
    raise TypeError(f"no client store beside a {kind}")


class SharedClientLimiter:
    """:class:`~.security.ClientLimiter`'s interface (``allow``, ``record_junk``) over a
    shared store (see the module docstring for the rule and its costs)."""

    def __init__(self, store: SessionStore, limits: ClientLimits | None = None) -> None:
        self.store = store
        self.limits = limits or ClientLimits()
        lim = self.limits
        self._junk = RateLimit(
            max_failures=max(1, lim.junk_per_client),
            window=lim.junk_window,
            cooldown=max(lim.junk_block, 1.0),
        )
        self._per_kind = {
            "start": (lim.starts_per_client, lim.starts_total),
            "upload": (lim.uploads_per_client, lim.uploads_total),
            "enrol": (_OFF, lim.enrolments_total),
            "hint": (lim.hints_per_client, lim.hints_total),
            "auth": (lim.auth_failures_per_client, _OFF),
        }

    @classmethod
    def beside(cls, store: SessionStore, limits: ClientLimits | None = None):
        """A limiter on :func:`client_store_beside` ``store``."""
        limits = limits or ClientLimits()
        return cls(client_store_beside(store, limits), limits)

    def close(self) -> None:
        self.store.close()

    def purge(self, now: float | None = None) -> int:
        """Forget events older than the longest window and blocks that ran out."""
        return self.store.purge(time.time() if now is None else now)

    def _over(self, key: str, limit: int, now: float) -> bool:
        """Append one event to ``key`` and say whether the window now holds more than
        ``limit`` (False without storing anything when the limit is off)."""
        if limit >= _OFF:
            return False
        self.store.add_failure(key, now)
        return self.store.count_failures(key, 0, now - self.limits.window) > limit

    def allow(self, kind: str, client: str, now: float | None = None) -> float | None:
        """Count one ``kind`` event ("start", "upload", "enrol", "hint", "auth") from
        ``client``; None when allowed, else the seconds to wait. Raises
        :class:`~liveness.stores.StoreUnavailable` when the store cannot be reached (the
        service answers 503)."""
        now = time.time() if now is None else now
        per, total = self._per_kind[kind]
        block = self.store.get_block(_blocked(client))
        if block is not None and block.until > now:
            return block.until - now
        if self._over(f"{kind}|{client}", per, now):
            return self.limits.window
        if self._over(f"{kind}|*", total, now):
            return self.limits.window
        return None

    def record_junk(self, client: str, now: float | None = None) -> float | None:
        """Count an upload that never reached the analysis; ``junk_per_client`` of them in
        ``junk_window`` block the client for ``junk_block`` seconds (the store's rate-limit
        rule, so the block holds on every instance). Returns the block length when this one
        blocked the client."""
        now = time.time() if now is None else now
        until = record_failure(self.store, self._junk, _blocked(client), now)
        return None if until is None else until - now


def _blocked(client: str) -> str:
    return f"junk|{client}"
