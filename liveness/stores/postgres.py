"""PostgreSQL (``postgresql://user:pass@host:port/db``): one database shared by any number of
service processes on any number of machines. psycopg 3 with a ``psycopg_pool`` pool."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
from psycopg_pool import ConnectionPool

from ..errors import InputError
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
from .url import redact

if TYPE_CHECKING:  # pragma: no cover
    from ..sessions import ChallengeClaims

__all__ = ["DOWN", "PostgresSessionStore", "QmarkConnection", "open_pool"]

_NAMESPACE_RE = re.compile(r"[a-z_][a-z0-9_]{0,39}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS {ns}_sessions (
    id TEXT PRIMARY KEY,
    account TEXT,
    actions TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    consumed_at DOUBLE PRECISION,
    consumed_by TEXT,
    released_at DOUBLE PRECISION,
    attempt TEXT
);
CREATE INDEX IF NOT EXISTS {ns}_sessions_expires ON {ns}_sessions (expires_at);
CREATE TABLE IF NOT EXISTS {ns}_video_digests (
    digest TEXT PRIMARY KEY,
    seen_at DOUBLE PRECISION NOT NULL,
    session_id TEXT
);
CREATE INDEX IF NOT EXISTS {ns}_video_digests_seen ON {ns}_video_digests (seen_at);
CREATE TABLE IF NOT EXISTS {ns}_failures (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_failures_account_at ON {ns}_failures (account, at);
CREATE INDEX IF NOT EXISTS {ns}_failures_at ON {ns}_failures (at);
CREATE TABLE IF NOT EXISTS {ns}_video_fingerprints (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seen_at DOUBLE PRECISION NOT NULL,
    summary TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_video_fingerprints_seen ON {ns}_video_fingerprints (seen_at);
CREATE TABLE IF NOT EXISTS {ns}_blocks (
    account TEXT PRIMARY KEY,
    blocked_until DOUBLE PRECISION NOT NULL,
    trigger_id BIGINT NOT NULL
);
"""

# Columns added after the first release: (table, column, type).
_ADDED_COLUMNS = (
    ("sessions", "consumed_by", "TEXT"),
    ("sessions", "released_at", "DOUBLE PRECISION"),
    ("sessions", "attempt", "TEXT"),
    ("video_digests", "session_id", "TEXT"),
)

# The driver's ways of saying "the server is not there or stopped answering".
# What psycopg raises when the server cannot be reached or the connection broke.
DOWN = (psycopg.OperationalError, psycopg.InterfaceError)


def open_pool(
    url: str,
    *,
    name: str,
    timeout: float,
    min_size: int = 1,
    max_size: int = 10,
    autocommit: bool = False,
) -> ConnectionPool:
    """A psycopg pool on ``url``, opened now, each connection checked before it is lent (a
    restarted server costs one failed check). :class:`StoreUnavailable` (the password
    redacted) when the server cannot be reached within ``timeout`` seconds. Shared by the
    session store, the audit log and the recovery service's tables."""
    kwargs: dict = {"connect_timeout": max(1, round(timeout))}
    if autocommit:
        kwargs["autocommit"] = True
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        kwargs=kwargs,
        check=ConnectionPool.check_connection,
        open=False,
        name=name,
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except DOWN as exc:
        pool.close()
        raise StoreUnavailable(detail=f"postgresql {redact(url)}: {exc}") from exc
    return pool


class QmarkConnection:
    """A psycopg connection whose ``execute`` takes SQLite's ``?`` placeholders, so that one
    statement serves both backends (the statements passed contain no other ``?``)."""

    def __init__(self, conn) -> None:
        self.raw = conn

    def execute(self, sql: str, params: tuple = ()):
        return self.raw.execute(sql.replace("?", "%s"), params)


class PostgresSessionStore(RateLimitRules):
    """A :class:`~liveness.stores.SessionStore` in PostgreSQL.

    Every primitive is one autocommitted statement (``purge``: one transaction), so there is
    no lock held between round trips: ``consume`` is a conditional ``UPDATE ... WHERE
    consumed_at IS NULL`` (under READ COMMITTED a second updater waits for the first to
    commit, re-checks the condition and updates nothing), digests are ``INSERT ... ON
    CONFLICT DO NOTHING``. Tables are ``<namespace>_sessions`` etc., created on first use
    under an advisory lock so that several processes starting together do not collide.

    Connections come from a pool of ``min_size``..``max_size`` that checks each connection
    before lending it (so a database restart costs one failed check, not a failed request).
    A server that cannot be reached within ``timeout`` seconds raises
    :class:`~liveness.stores.StoreUnavailable`. The pool holds threads and sockets: call
    :meth:`close`, and make a new store in a child process after ``fork``.
    """

    def __init__(
        self,
        url: str,
        *,
        limits: RateLimit | None = None,
        digest_retention: float = DEFAULT_DIGEST_RETENTION,
        max_fingerprints: int = DEFAULT_MAX_FINGERPRINTS,
        namespace: str = "liveness",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 5.0,
    ) -> None:
        if not _NAMESPACE_RE.fullmatch(namespace):
            raise InputError(f"namespace must match {_NAMESPACE_RE.pattern}, not {namespace!r}")
        self.url = url
        self.limits = limits or RateLimit()
        self.digest_retention = digest_retention
        self.max_fingerprints = max(1, int(max_fingerprints))
        self.namespace = namespace
        self.timeout = timeout
        self._t = {
            n: f"{namespace}_{n}"
            for n in ("sessions", "video_digests", "failures", "video_fingerprints")
        }
        self._t["blocks"] = f"{namespace}_blocks"
        self._pool = open_pool(
            url,
            name=f"liveness-{namespace}",
            timeout=timeout,
            min_size=min_size,
            max_size=max_size,
            autocommit=True,
        )
        try:
            self._init_db()
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresSessionStore({redact(self.url)!r}, namespace={self.namespace!r})"

    def close(self) -> None:
        """Close the pool's connections and stop its threads."""
        self._pool.close()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection(timeout=self.timeout) as conn:
                yield conn
        except DOWN as exc:
            raise StoreUnavailable(detail=f"postgresql {redact(self.url)}: {exc}") from exc

    def _init_db(self) -> None:
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.namespace,))
            for stmt in _SCHEMA.format(ns=self.namespace).split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            # Tables of an earlier release lack these columns; their old rows read NULL:
            # consumed by an unknown video (never resumed), a digest of no known session.
            # Looked up first: ALTER TABLE locks the table even when it changes nothing.
            have = set(
                conn.execute(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                    ([self._t["sessions"], self._t["video_digests"]],),
                ).fetchall()
            )
            for table, column, kind in _ADDED_COLUMNS:
                if (self._t[table], column) not in have:
                    conn.execute(f"ALTER TABLE {self._t[table]} ADD COLUMN {column} {kind}")

    def record_issued(self, claims: ChallengeClaims) -> None:
        with self._conn() as conn:
            cur = conn.execute(
                f"INSERT INTO {self._t['sessions']} (id, account, actions, issued_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (
                    claims.session_id,
                    claims.account,
                    json.dumps(list(claims.actions)),
                    claims.issued_at,
                    claims.expires_at,
                ),
            )
        if cur.rowcount != 1:
            raise duplicate_session(claims.session_id)

    def is_known(self, session_id: str) -> bool:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT 1 FROM {self._t['sessions']} WHERE id = %s", (session_id,)
            ).fetchone()
        return row is not None

    def consume(
        self,
        session_id: str,
        now: float,
        digest: str | None = None,
        attempt: str | None = None,
    ) -> None:
        t = self._t["sessions"]
        with self._conn() as conn:
            # One statement. `u` consumes an unconsumed session; `r` resumes a released one
            # for its own video (both compare-and-set: under READ COMMITTED a second updater
            # waits for the first to commit, re-checks its condition and updates nothing;
            # they never match the same row, as `r` needs consumed_by set and `u` unset).
            # The SELECT (from the statement's snapshot) only tells "unknown" from "used".
            updated, resumed, exists, consumed_at = conn.execute(
                f"WITH u AS (UPDATE {t} SET consumed_at = %s, consumed_by = %s, attempt = %s "
                "WHERE id = %s AND consumed_at IS NULL RETURNING 1), "
                f"r AS (UPDATE {t} SET released_at = NULL, attempt = %s WHERE id = %s "
                "AND consumed_by = %s AND released_at IS NOT NULL RETURNING 1) "
                "SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM r), "
                f"s.id IS NOT NULL, s.consumed_at FROM (SELECT 1) one LEFT JOIN {t} s "
                "ON s.id = %s",
                (now, digest, attempt, session_id, attempt, session_id, digest, session_id),
            ).fetchone()
        if updated == 1 or resumed == 1:
            return
        if not exists:
            raise unknown_session()
        raise already_used(consumed_at)

    def record_video_digest(
        self, digest: str, now: float, session_id: str | None = None
    ) -> bool:
        t = self._t["video_digests"]
        with self._conn() as conn:
            inserted, owner = conn.execute(
                f"WITH i AS (INSERT INTO {t} (digest, seen_at, session_id) "
                "VALUES (%s, %s, %s) ON CONFLICT (digest) DO NOTHING RETURNING 1) "
                f"SELECT (SELECT count(*) FROM i), (SELECT session_id FROM {t} WHERE digest = %s)",
                (digest, now, session_id, digest),
            ).fetchone()
            if inserted == 0 and owner is None and session_id is not None:
                # Inserted by a transaction that committed during the statement (not in its
                # snapshot): read it now, so that a session's own digest is recognised.
                row = conn.execute(
                    f"SELECT session_id FROM {t} WHERE digest = %s", (digest,)
                ).fetchone()
                owner = row[0] if row else None
        return inserted == 1 or (session_id is not None and owner == session_id)

    def release(self, session_id: str, attempt: str, now: float) -> None:
        with self._conn() as conn:
            conn.execute(
                f"UPDATE {self._t['sessions']} SET released_at = %s "
                "WHERE id = %s AND attempt = %s",
                (now, session_id, attempt),
            )

    def add_failure(self, account: str, now: float) -> int:
        with self._conn() as conn:
            (fid,) = conn.execute(
                f"INSERT INTO {self._t['failures']} (account, at) VALUES (%s, %s) RETURNING id",
                (_text(account), now),
            ).fetchone()
        return int(fid)

    def count_failures(self, account: str, after_id: int, since: float) -> int:
        with self._conn() as conn:
            (n,) = conn.execute(
                f"SELECT count(*) FROM {self._t['failures']} "
                "WHERE account = %s AND id > %s AND at > %s",
                (_text(account), after_id, since),
            ).fetchone()
        return int(n)

    def failures(self, account: str, window: float, now: float) -> int:
        with self._conn() as conn:
            (n,) = conn.execute(
                f"SELECT count(*) FROM {self._t['failures']} "
                "WHERE account = %s AND at > %s AND at <= %s",
                (_text(account), now - window, now),
            ).fetchone()
        return int(n)

    def get_block(self, account: str) -> Block | None:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT blocked_until, trigger_id FROM {self._t['blocks']} WHERE account = %s",
                (_text(account),),
            ).fetchone()
        return Block(float(row[0]), int(row[1])) if row else None

    def set_block(self, account: str, until: float, trigger_id: int) -> None:
        t = self._t["blocks"]
        with self._conn() as conn:
            conn.execute(
                f"INSERT INTO {t} (account, blocked_until, trigger_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (account) DO UPDATE SET blocked_until = excluded.blocked_until, "
                f"trigger_id = excluded.trigger_id WHERE {t}.trigger_id < excluded.trigger_id",
                (_text(account), until, trigger_id),
            )

    def add_fingerprint(self, summary: str, fingerprint: str, now: float) -> int:
        t = self._t["video_fingerprints"]
        with self._conn() as conn:
            # One statement; the DELETE goes by id (one index range, not a count of the
            # table): records more than max_fingerprints ids older than the new one.
            (fid,) = conn.execute(
                f"WITH ins AS (INSERT INTO {t} (seen_at, summary, fingerprint) "
                "VALUES (%s, %s, %s) RETURNING id), old AS (DELETE FROM "
                f"{t} WHERE id <= (SELECT id FROM ins) - %s) SELECT id FROM ins",
                (now, _text(summary), _text(fingerprint), self.max_fingerprints),
            ).fetchone()
        return int(fid)

    def fingerprints_since(self, since: float) -> list[tuple[int, str]]:
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT id, summary FROM {self._t['video_fingerprints']} "
                "WHERE seen_at >= %s ORDER BY id",
                (since,),
            ).fetchall()
        return [(int(i), s) for i, s in rows]

    def fingerprint_texts(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT id, fingerprint FROM {self._t['video_fingerprints']} "
                "WHERE id = ANY(%s)",
                ([int(i) for i in ids],),
            ).fetchall()
        return {int(i): text for i, text in rows}

    def drop_fingerprint(self, fingerprint_id: int) -> None:
        with self._conn() as conn:
            conn.execute(
                f"DELETE FROM {self._t['video_fingerprints']} WHERE id = %s",
                (int(fingerprint_id),),
            )

    def purge(self, now: float) -> int:
        t, lim = self._t, self.limits
        removed = 0
        with self._conn() as conn, conn.transaction():
            for sql, arg in (
                (f"DELETE FROM {t['sessions']} WHERE expires_at < %s", now - SESSION_GRACE),
                (
                    f"DELETE FROM {t['video_digests']} WHERE seen_at < %s",
                    now - self.digest_retention,
                ),
                (
                    f"DELETE FROM {t['video_fingerprints']} WHERE seen_at < %s",
                    now - self.digest_retention,
                ),
                (f"DELETE FROM {t['failures']} WHERE at <= %s", now - lim.window),
                (f"DELETE FROM {t['blocks']} WHERE blocked_until < %s", now - lim.window),
            ):
                removed += conn.execute(sql, (arg,)).rowcount
        return removed


def _text(s: str) -> str:
    """PostgreSQL text cannot hold NUL; refuse it as a bad argument, not a server fault."""
    if "\x00" in s:
        raise InputError("account must not contain NUL characters")
    return s
