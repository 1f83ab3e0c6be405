"""The recovery service's own tables behind a URL: reference photos, their history and the
recoveries (the audit chain is :class:`liveness.audit.AuditLog`, the sessions are
:mod:`liveness.stores`).

``service_db(url)`` gives a :class:`SQLiteServiceDB` (``PATH`` or ``sqlite:///PATH``: one
process or several on one machine) or a :class:`PostgresServiceDB` (``postgresql://...``:
any number of service instances on any number of machines). Both answer the few operations
:class:`~examples.recovery_service.app.RecoveryService` needs, each one transaction; the SQL is
written once with ``?`` placeholders and the schema once per backend. A database that cannot
be reached or stays locked raises :class:`~liveness.sessions.StoreUnavailable` (the service
answers 503 with ``Retry-After``).

Claims: ``claim`` moves a recovery from ``waiting`` to ``processing`` in one conditional
``UPDATE`` (under PostgreSQL's READ COMMITTED a second updater waits for the first to commit,
re-checks ``status = 'waiting'`` and changes nothing), so one recovery is verified once, however
many instances receive its upload. The claim records the instance (``claimed_by``) and the
time, so that an instance restarted after a crash fails only its own interrupted attempts
(:meth:`ServiceDB.fail_interrupted`), plus any left ``processing`` longer than the stale limit
by an instance that never came back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from liveness.audit import is_postgres_url, sqlite_path
from liveness.sessions import StoreUnavailable
from liveness.stores.sqlite import connection
from liveness.stores.url import redact

T = TypeVar("T")

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS reference_photos (
    account TEXT PRIMARY KEY,
    template TEXT NOT NULL,          -- Reference.to_dict() as JSON (embedding, model, quality)
    photo BLOB NOT NULL,             -- the uploaded photo, for the operator to look at
    photo_type TEXT NOT NULL,
    enrolled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS recoveries (
    id TEXT PRIMARY KEY,             -- the challenge session id
    account TEXT NOT NULL,
    actions TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL,            -- waiting, processing, done, failed
    outcome TEXT,                    -- what the person was shown (JSON)
    finished_at REAL
);
-- A replaced reference is kept here, with who replaced it (issue 12: no silent replacement).
CREATE TABLE IF NOT EXISTS reference_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    template TEXT NOT NULL,
    photo BLOB NOT NULL,
    photo_type TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    replaced_at REAL NOT NULL,
    replaced_by TEXT
);
"""
# Columns added after the first release (ALTER TABLE on older files).
_ADDED_COLUMNS = {
    "reference_photos": {"usable_from": "REAL NOT NULL DEFAULT 0", "enrolled_by": "TEXT"},
    "recoveries": {
        "token_sha256": "TEXT",
        "client": "TEXT",
        "claimed_by": "TEXT",
        "claimed_at": "REAL",
    },
}

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS reference_photos (
    account TEXT PRIMARY KEY,
    template TEXT NOT NULL,
    photo BYTEA NOT NULL,
    photo_type TEXT NOT NULL,
    enrolled_at DOUBLE PRECISION NOT NULL,
    usable_from DOUBLE PRECISION NOT NULL DEFAULT 0,
    enrolled_by TEXT
);
CREATE TABLE IF NOT EXISTS recoveries (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    actions TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    finished_at DOUBLE PRECISION,
    token_sha256 TEXT,
    client TEXT,
    claimed_by TEXT,
    claimed_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS recoveries_status ON recoveries (status);
CREATE TABLE IF NOT EXISTS reference_history (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account TEXT NOT NULL,
    template TEXT NOT NULL,
    photo BYTEA NOT NULL,
    photo_type TEXT NOT NULL,
    enrolled_at DOUBLE PRECISION NOT NULL,
    replaced_at DOUBLE PRECISION NOT NULL,
    replaced_by TEXT
)
"""


class ServiceDB:
    """The operations on the service's tables; subclasses provide ``_tx`` (one transaction
    whose connection's ``execute`` takes ``?`` placeholders), ``init`` and ``close``."""

    url: str

    def _tx(self, write: bool = False, lock_key: str | None = None):  # pragma: no cover
        raise NotImplementedError

    def init(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- references -----------------------------------------------------------------------

    def reference_template(self, account: str) -> str | None:
        with self._tx() as c:
            row = c.execute(
                "SELECT template FROM reference_photos WHERE account = ?", (account,)
            ).fetchone()
        return row[0] if row else None

    def reference_photo(self, account: str) -> tuple[bytes, str] | None:
        with self._tx() as c:
            row = c.execute(
                "SELECT photo, photo_type FROM reference_photos WHERE account = ?", (account,)
            ).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    def usable_from(self, account: str) -> float | None:
        """When the account's reference may be used for recovery; None when it has none."""
        with self._tx() as c:
            row = c.execute(
                "SELECT usable_from FROM reference_photos WHERE account = ?", (account,)
            ).fetchone()
        return float(row[0]) if row else None

    def put_reference(
        self,
        account: str,
        template: str,
        photo: bytes,
        photo_type: str,
        *,
        now: float,
        cooldown: float,
        actor: str | None,
    ) -> tuple[bytes | None, float]:
        """Store the account's reference; a replaced one goes to ``reference_history`` and
        the new one is usable only after ``cooldown`` seconds. Returns (the old photo or
        None, usable_from)."""
        with self._tx(write=True, lock_key=f"reference:{account}") as c:
            old = c.execute(
                "SELECT template, photo, photo_type, enrolled_at FROM reference_photos "
                "WHERE account = ?",
                (account,),
            ).fetchone()
            if old is not None:
                c.execute(
                    "INSERT INTO reference_history (account, template, photo, photo_type, "
                    "enrolled_at, replaced_at, replaced_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (account, *old, now, actor),
                )
            usable_from = now + cooldown if old is not None else now
            c.execute(
                "INSERT INTO reference_photos (account, template, photo, photo_type, "
                "enrolled_at, usable_from, enrolled_by) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (account) DO UPDATE SET "
                "template = excluded.template, photo = excluded.photo, "
                "photo_type = excluded.photo_type, enrolled_at = excluded.enrolled_at, "
                "usable_from = excluded.usable_from, enrolled_by = excluded.enrolled_by",
                (account, template, photo, photo_type, now, usable_from, actor),
            )
        return (bytes(old[1]) if old is not None else None), usable_from

    # -- recoveries -------------------------------------------------------------------------

    def add_recovery(
        self,
        recovery_id: str,
        account: str,
        actions: str,
        created_at: float,
        expires_at: float,
        token_sha256: str,
        client: str | None,
    ) -> None:
        with self._tx(write=True) as c:
            c.execute(
                "INSERT INTO recoveries (id, account, actions, created_at, expires_at, status, "
                "token_sha256, client) VALUES (?, ?, ?, ?, ?, 'waiting', ?, ?)",
                (recovery_id, account, actions, created_at, expires_at, token_sha256, client),
            )

    def recovery(self, recovery_id: str) -> tuple | None:
        """(account, actions JSON, expires_at, status, outcome JSON) or None."""
        with self._tx() as c:
            row = c.execute(
                "SELECT account, actions, expires_at, status, outcome FROM recoveries WHERE id = ?",
                (recovery_id,),
            ).fetchone()
        return tuple(row) if row else None

    def token_sha256(self, recovery_id: str) -> str | None:
        with self._tx() as c:
            row = c.execute(
                "SELECT token_sha256 FROM recoveries WHERE id = ?", (recovery_id,)
            ).fetchone()
        return row[0] if row else None

    def claim(self, recovery_id: str, instance: str = "", now: float | None = None) -> bool:
        """``waiting`` -> ``processing`` for this instance; False when another upload (on any
        instance) claimed it first or it is finished."""
        now = time.time() if now is None else now
        with self._tx(write=True) as c:
            cur = c.execute(
                "UPDATE recoveries SET status = 'processing', claimed_by = ?, claimed_at = ? "
                "WHERE id = ? AND status = 'waiting'",
                (instance, now, recovery_id),
            )
            return cur.rowcount == 1

    def release(self, recovery_id: str, instance: str = "") -> bool:
        """``processing`` -> ``waiting`` again, when this instance claimed it and could not
        record an outcome (the database went away mid-verification)."""
        with self._tx(write=True) as c:
            cur = c.execute(
                "UPDATE recoveries SET status = 'waiting', claimed_by = NULL, claimed_at = NULL "
                "WHERE id = ? AND status = 'processing' AND claimed_by = ?",
                (recovery_id, instance),
            )
            return cur.rowcount == 1

    def finish(self, recovery_id: str, status: str, outcome: str, now: float) -> None:
        with self._tx(write=True) as c:
            c.execute(
                "UPDATE recoveries SET status = ?, outcome = ?, finished_at = ? WHERE id = ?",
                (status, outcome, now, recovery_id),
            )

    def fail_interrupted(
        self, instance: str, outcome: str, now: float, stale_before: float
    ) -> list[tuple[str, str]]:
        """Mark ``failed`` the attempts left ``processing`` by this instance (a crash before
        this start), by an instance that did not record itself, or claimed before
        ``stale_before`` (an instance that never came back); returns their (id, account)."""
        where = (
            "status = 'processing' AND (claimed_by = ? OR claimed_by IS NULL "
            "OR claimed_at IS NULL OR claimed_at < ?)"
        )
        with self._tx(write=True, lock_key="fail_interrupted") as c:
            rows = c.execute(
                f"SELECT id, account FROM recoveries WHERE {where}", (instance, stale_before)
            ).fetchall()
            for rid, _account in rows:
                c.execute(
                    "UPDATE recoveries SET status = 'failed', outcome = ?, finished_at = ? "
                    "WHERE id = ? AND status = 'processing'",
                    (outcome, now, rid),
                )
        return [(r[0], r[1]) for r in rows]

    def fail_stale(self, outcome: str, now: float, stale_before: float) -> list[tuple[str, str]]:
        """Mark ``failed`` the attempts claimed (by any instance) before ``stale_before`` and
        still ``processing``; returns the (id, account) of those *this call* changed. Each
        row changes in its own conditional ``UPDATE ... AND status = 'processing'``, so of
        several instances sweeping at once exactly one reports each attempt (under
        PostgreSQL's READ COMMITTED a second updater waits for the first to commit and then
        finds the status changed)."""
        failed: list[tuple[str, str]] = []
        # The same lock as fail_interrupted (PostgreSQL: an advisory lock; SQLite: the write
        # lock), and rows in id order: sweeps queue up instead of deadlocking.
        with self._tx(write=True, lock_key="fail_interrupted") as c:
            rows = c.execute(
                "SELECT id, account FROM recoveries WHERE status = 'processing' "
                "AND claimed_at < ? ORDER BY id",
                (stale_before,),
            ).fetchall()
            for rid, account in rows:
                cur = c.execute(
                    "UPDATE recoveries SET status = 'failed', outcome = ?, finished_at = ? "
                    "WHERE id = ? AND status = 'processing' AND claimed_at < ?",
                    (outcome, now, rid, stale_before),
                )
                if cur.rowcount == 1:
                    failed.append((rid, account))
        return failed

    def counts(self) -> dict[str, int]:
        """Recoveries per status (for tests and benchmarks)."""
        with self._tx() as c:
            rows = c.execute("SELECT status, count(*) FROM recoveries GROUP BY status").fetchall()
        return {r[0]: int(r[1]) for r in rows}


class SQLiteServiceDB(ServiceDB):
    """The tables in one SQLite file; ``busy_timeout`` seconds of waiting for the write lock
    before :class:`StoreUnavailable`."""

    def __init__(self, path: str, *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self.url = path
        self.busy_timeout = busy_timeout

    @contextlib.contextmanager
    def _tx(self, write: bool = False, lock_key: str | None = None) -> Iterator:
        with connection(self.path, self.busy_timeout, write=write) as conn:
            yield conn

    def init(self) -> None:
        with self._tx() as c:
            c.executescript(_SQLITE_SCHEMA)
            for table, columns in _ADDED_COLUMNS.items():
                have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
                for name, decl in columns.items():
                    if name not in have:
                        c.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


class PostgresServiceDB(ServiceDB):
    """The tables in PostgreSQL, through a psycopg pool of up to ``max_size`` connections
    (checked before lending, so a restarted server costs one failed check). Writes that
    read before they write (``put_reference``) hold a transaction-scoped advisory lock on
    their key, so two instances replacing one account's photo both land in the history."""

    def __init__(self, url: str, *, timeout: float = 5.0, max_size: int = 8) -> None:
        from liveness.stores.postgres import DOWN, open_pool

        self.url = url
        self.timeout = timeout
        self._down = DOWN
        self._pool = open_pool(url, name="recovery-service-db", timeout=timeout, max_size=max_size)

    def __repr__(self) -> str:
        return f"PostgresServiceDB({redact(self.url)!r})"

    def close(self) -> None:
        self._pool.close()

    @contextlib.contextmanager
    def _tx(self, write: bool = False, lock_key: str | None = None) -> Iterator:
        from liveness.stores.postgres import QmarkConnection

        try:
            with self._pool.connection(timeout=self.timeout) as conn, conn.transaction():
                if lock_key is not None:
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,))
                yield QmarkConnection(conn)
        except self._down as e:
            raise StoreUnavailable(f"postgresql {redact(self.url)}: {e}") from e

    def init(self) -> None:
        with self._tx(write=True, lock_key="recovery_service_schema") as c:
            for stmt in _PG_SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)


def service_db(url: str, *, busy_timeout: float = 10.0) -> ServiceDB:
    """The service's tables at ``url``: ``postgresql://...`` or a SQLite ``PATH`` /
    ``sqlite:///PATH``."""
    if is_postgres_url(url):
        return PostgresServiceDB(url, timeout=min(busy_timeout, 5.0))
    return SQLiteServiceDB(sqlite_path(url), busy_timeout=busy_timeout)


def retry_unavailable(fn: Callable[[], T], budget: float, pause: float = 0.25) -> T:
    """``fn()``, tried again while it raises :class:`StoreUnavailable`, for up to ``budget``
    seconds (then the last error is raised). For the writes that record an outcome after a
    verification ran: a database restart of a few seconds must not leave a token consumed
    without its outcome."""
    end = time.monotonic() + budget
    while True:
        try:
            return fn()
        except StoreUnavailable:
            if time.monotonic() + pause > end:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
