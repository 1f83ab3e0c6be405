"""The embedded default: one SQLite file (``sqlite:///path``), no server needed."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import InputError, SetupError
from .base import (
    DEFAULT_DIGEST_RETENTION,
    DEFAULT_MAX_FINGERPRINTS,
    SESSION_GRACE,
    Block,
    StoreUnavailable,
    already_used,
    duplicate_session,
    unknown_session,
)
from .ratelimit import RateLimit, RateLimitRules

if TYPE_CHECKING:  # pragma: no cover
    from ..sessions import ChallengeClaims

__all__ = ["SQLiteSessionStore"]

# Bumped only for a change older code cannot work with. Columns added since version 1 (old
# code never names them and they may be NULL, so it still works on a newer file):
# sessions.consumed_by, released_at and attempt, video_digests.session_id (resuming a session
# after a store failure: stores/base.py).
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    account TEXT,
    actions TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    consumed_at REAL,
    consumed_by TEXT,
    released_at REAL,
    attempt TEXT
);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS video_digests (
    digest TEXT PRIMARY KEY,
    seen_at REAL NOT NULL,
    session_id TEXT
);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_account_at ON failures (account, at);
-- The table liveness.fingerprint.FingerprintIndex kept in this file before (without
-- `summary`: added by _init_db, '' for the rows written then).
CREATE TABLE IF NOT EXISTS video_fingerprints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seen_at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS blocks (
    account TEXT PRIMARY KEY,
    blocked_until REAL NOT NULL,
    trigger_id INTEGER NOT NULL
);
"""

# What SQLite says when another writer held the lock past busy_timeout, or the file went away.
_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o")



@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on ``conn`` (opened with ``isolation_level=None``),
    rolled back when the block raises. IMMEDIATE takes the write lock up front, so a
    read-then-write cannot interleave with another writer. Used by the session store and, through
    :func:`connection`, by the audit log and the recovery service's tables."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def connection(path: str | os.PathLike, busy_timeout: float, *, write: bool = False):
    """One autocommit connection to ``path`` for a block, closed after it; with ``write``
    the block is one ``BEGIN IMMEDIATE`` transaction (:func:`immediate`). Any
    ``OperationalError`` (a lock held past ``busy_timeout``, a file that cannot be opened)
    is :class:`~liveness.stores.StoreUnavailable`. Shared by the audit log and the recovery
    service's tables."""
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.OperationalError as e:
        raise StoreUnavailable(f"{path}: {e}") from e
    try:
        if write:
            with immediate(conn):
                yield conn
        else:
            yield conn
    except sqlite3.OperationalError as e:
        raise StoreUnavailable(f"{path}: {e}") from e
    finally:
        conn.close()


class SQLiteSessionStore(RateLimitRules):
    """The default :class:`~liveness.stores.SessionStore`: one SQLite file, safe across
    threads and processes on one machine.

    Every call opens its own connection (cheap for SQLite) and runs in ``BEGIN IMMEDIATE``,
    which takes the write lock up front so that a read-then-write cannot interleave with
    another writer; concurrent callers wait up to ``busy_timeout`` seconds, then get
    :class:`~liveness.stores.StoreUnavailable`. The file is in WAL mode and
    ``synchronous=FULL``, so a consumed session stays consumed after a power cut. A new file
    is created readable by its owner only (0600). No connection is shared, so the store also
    survives ``fork``. Do not put the file on a network file system (SQLite's locking is not
    reliable there); use PostgreSQL or Redis for several machines.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: RateLimit | None = None,
        busy_timeout: float = 10.0,
        digest_retention: float = DEFAULT_DIGEST_RETENTION,
        max_fingerprints: int = DEFAULT_MAX_FINGERPRINTS,
    ) -> None:
        self.path = os.fspath(path)
        if not self.path or self.path == ":memory:" or self.path.startswith("file:"):
            # Each call opens a new connection, which would see a new, empty in-memory db.
            raise InputError(
                "SQLiteSessionStore needs a file path; use MemorySessionStore for memory"
            )
        self.limits = limits or RateLimit()
        self.busy_timeout = busy_timeout
        self.digest_retention = digest_retention
        self.max_fingerprints = max(1, int(max_fingerprints))
        self._init_db()

    def __repr__(self) -> str:
        return f"SQLiteSessionStore({self.path!r}, limits={self.limits!r})"

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own connection."""

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE ourselves.
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.OperationalError as exc:
            _raise_if_unavailable(exc, self.path)
            raise
        return conn

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection for one block: a ``BEGIN IMMEDIATE`` transaction, or with
        ``write=False`` plain reads."""
        conn = self._connect()
        try:
            if write:
                with immediate(conn):
                    yield conn
            else:
                yield conn
        except sqlite3.OperationalError as exc:
            _raise_if_unavailable(exc, self.path)
            raise
        finally:
            conn.close()

    def _init_db(self) -> None:
        if not os.path.exists(self.path):
            # Owner-only from the first byte (sessions and failures name accounts).
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass  # another process created it first
        with self._tx(write=False) as conn:
            # Persistent in the file; switching needs a moment alone with the db, which the
            # busy timeout gives when several processes open it at once.
            conn.execute("PRAGMA journal_mode=WAL")
        with self._tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise SetupError(
                    f"{self.path}: session store schema {version} is newer than this code "
                    f"({_SCHEMA_VERSION})"
                )
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            # Columns added since a file was created (CREATE TABLE IF NOT EXISTS keeps the
            # old table): the old rows read NULL, i.e. "consumed by an unknown video" (never
            # resumed) and "digest of no known session".
            for table, column, kind in (
                ("video_fingerprints", "summary", "TEXT NOT NULL DEFAULT ''"),
                ("sessions", "consumed_by", "TEXT"),
                ("sessions", "released_at", "REAL"),
                ("sessions", "attempt", "TEXT"),
                ("video_digests", "session_id", "TEXT"),
            ):
                have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            c.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def record_issued(self, claims: ChallengeClaims) -> None:
        with self._tx() as c:
            try:
                c.execute(
                    "INSERT INTO sessions (id, account, actions, issued_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        claims.session_id,
                        claims.account,
                        json.dumps(list(claims.actions)),
                        claims.issued_at,
                        claims.expires_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise duplicate_session(claims.session_id) from None

    def is_known(self, session_id: str) -> bool:
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return row is not None

    def consume(
        self,
        session_id: str,
        now: float,
        digest: str | None = None,
        attempt: str | None = None,
    ) -> None:
        with self._tx() as c:
            # One conditional UPDATE: whoever changes the row first wins; everyone else sees
            # rowcount 0. Atomic even without the IMMEDIATE transaction around it.
            cur = c.execute(
                "UPDATE sessions SET consumed_at = ?, consumed_by = ?, attempt = ? "
                "WHERE id = ? AND consumed_at IS NULL",
                (now, digest, attempt, session_id),
            )
            if cur.rowcount == 1:
                return
            if digest is not None:
                # A resume after release(): the same compare-and-set, on released_at.
                cur = c.execute(
                    "UPDATE sessions SET released_at = NULL, attempt = ? "
                    "WHERE id = ? AND consumed_by = ? AND released_at IS NOT NULL",
                    (attempt, session_id, digest),
                )
                if cur.rowcount == 1:
                    return
            row = c.execute(
                "SELECT consumed_at FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        if row is None:
            raise unknown_session()
        raise already_used(row[0])

    def record_video_digest(
        self, digest: str, now: float, session_id: str | None = None
    ) -> bool:
        with self._tx() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO video_digests (digest, seen_at, session_id) "
                "VALUES (?, ?, ?)",
                (digest, now, session_id),
            )
            if cur.rowcount == 1:
                return True
            row = c.execute(
                "SELECT session_id FROM video_digests WHERE digest = ?", (digest,)
            ).fetchone()
        return session_id is not None and row is not None and row[0] == session_id

    def release(self, session_id: str, attempt: str, now: float) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE sessions SET released_at = ? WHERE id = ? AND attempt = ?",
                (now, session_id, attempt),
            )

    def add_failure(self, account: str, now: float) -> int:
        with self._tx() as c:
            cur = c.execute("INSERT INTO failures (account, at) VALUES (?, ?)", (account, now))
            return int(cur.lastrowid)

    def count_failures(self, account: str, after_id: int, since: float) -> int:
        with self._tx(write=False) as conn:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM failures WHERE account = ? AND id > ? AND at > ?",
                (account, after_id, since),
            ).fetchone()
        return n

    def failures(self, account: str, window: float, now: float) -> int:
        with self._tx(write=False) as conn:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM failures WHERE account = ? AND at > ? AND at <= ?",
                (account, now - window, now),
            ).fetchone()
        return n

    def get_block(self, account: str) -> Block | None:
        with self._tx(write=False) as conn:
            row = conn.execute(
                "SELECT blocked_until, trigger_id FROM blocks WHERE account = ?", (account,)
            ).fetchone()
        return Block(row[0], row[1]) if row else None

    def set_block(self, account: str, until: float, trigger_id: int) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO blocks (account, blocked_until, trigger_id) VALUES (?, ?, ?) "
                "ON CONFLICT (account) DO UPDATE SET blocked_until = excluded.blocked_until, "
                "trigger_id = excluded.trigger_id WHERE blocks.trigger_id < excluded.trigger_id",
                (account, until, trigger_id),
            )

    def add_fingerprint(self, summary: str, fingerprint: str, now: float) -> int:
        with self._tx() as c:
            fid = int(
                c.execute(
                    "INSERT INTO video_fingerprints (seen_at, summary, fingerprint) "
                    "VALUES (?, ?, ?)",
                    (now, summary, fingerprint),
                ).lastrowid
            )
            # By id (the primary key: one index range, not a count of the table): at most
            # max_fingerprints ids, so at most that many records, stay.
            c.execute(
                "DELETE FROM video_fingerprints WHERE id <= ?", (fid - self.max_fingerprints,)
            )
        return fid

    def fingerprints_since(self, since: float) -> list[tuple[int, str]]:
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT id, summary FROM video_fingerprints WHERE seen_at >= ? ORDER BY id",
                (since,),
            ).fetchall()
        return [(int(i), s) for i, s in rows]

    def fingerprint_texts(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._tx(write=False) as conn:
            rows = conn.execute(
                f"SELECT id, fingerprint FROM video_fingerprints WHERE id IN ({marks})",
                [int(i) for i in ids],
            ).fetchall()
        return {int(i): text for i, text in rows}

    def drop_fingerprint(self, fingerprint_id: int) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM video_fingerprints WHERE id = ?", (int(fingerprint_id),))

    def purge(self, now: float) -> int:
        lim = self.limits
        with self._tx() as c:
            removed = 0
            for sql, arg in (
                ("DELETE FROM sessions WHERE expires_at < ?", now - SESSION_GRACE),
                ("DELETE FROM video_digests WHERE seen_at < ?", now - self.digest_retention),
                ("DELETE FROM video_fingerprints WHERE seen_at < ?", now - self.digest_retention),
                ("DELETE FROM failures WHERE at <= ?", now - lim.window),
                ("DELETE FROM blocks WHERE blocked_until < ?", now - lim.window),
            ):
                removed += c.execute(sql, (arg,)).rowcount
            return removed


def _raise_if_unavailable(exc: sqlite3.OperationalError, path: str) -> None:
    """:class:`StoreUnavailable` for a lock held too long or a file that cannot be opened;
    any other operational error (a bug, a broken schema) is for the caller to re-raise."""
    if any(s in str(exc).lower() for s in _UNAVAILABLE):
        raise StoreUnavailable(detail=f"sqlite {path}: {exc}") from exc
