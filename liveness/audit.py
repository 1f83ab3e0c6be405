"""A keyed, append-only audit chain in SQLite or PostgreSQL, and its check
(``liveness audit verify --db PATH|URL``).

Each row's ``mac`` is HMAC-SHA256, under an *audit key* kept apart from the token signing
key, of every column of the row (id, time, event, actor, client address, account, recovery
id, the JSON entry) and the previous row's ``mac``. So, with write access to the database
but not the key:

* editing, inserting, reordering or deleting a row in the middle breaks the chain;
* recomputing the chain is impossible (a plain hash could be recomputed; the HMAC needs
  the key);
* deleting the newest rows leaves a valid but shorter chain, which the *head* catches:
  after every append the head (last id and mac) is written to a file outside the database
  (``head_file``, mode 0600, replaced atomically) and to the log, and :meth:`AuditLog.verify`
  compares against it.

Triggers refuse ``UPDATE`` and ``DELETE`` as a first line (they can be dropped by someone
with write access; the MAC cannot be forged without the key).

``db`` is a SQLite file (``PATH`` or ``sqlite:///PATH``) or a PostgreSQL URL
(``postgresql://...``). Appends from any number of processes stay one linear chain: SQLite's
``BEGIN IMMEDIATE`` write lock, or PostgreSQL's ``pg_advisory_xact_lock`` taken before the head
is read, serialise them (the head read, the insert and the head export happen under the lock).
With several service instances each instance's head file is a *checkpoint* that may lag the
others' appends: :class:`AuditLog` with ``head_may_lag=True`` accepts a longer chain as long
as it passes through the checkpoint (same id, same MAC).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .sessions import KeyConfigError, StoreUnavailable, check_key_strength
from .stores.sqlite import connection
from .stores.url import redact

log = logging.getLogger("liveness.audit")

ENV_AUDIT_KEY = "LIVENESS_AUDIT_KEY"
GENESIS = "0" * 64
COLUMNS = ("id", "at", "event", "actor", "client", "account", "recovery_id", "entry")

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    actor TEXT,                      -- who: "operator:<key id>", "person", "system"
    client TEXT,                     -- the client address of the request
    account TEXT,
    recovery_id TEXT,
    entry TEXT NOT NULL,             -- JSON: decision, reason codes, model hashes, ...
    prev_mac TEXT NOT NULL,
    mac TEXT NOT NULL                -- HMAC(audit key, all columns above + prev_mac)
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"""

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id BIGINT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL,
    actor TEXT,
    client TEXT,
    account TEXT,
    recovery_id TEXT,
    entry TEXT NOT NULL,
    prev_mac TEXT NOT NULL,
    mac TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
"""
# Advisory lock key of the chain's head (any constant shared by every writer).
PG_LOCK = 0x6C697665  # "live"


def is_postgres_url(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than a SQLite file."""
    return db.startswith(("postgresql://", "postgres://"))


def sqlite_path(db: str) -> str:
    """The file of ``PATH`` or ``sqlite:///PATH`` (``sqlite:////abs`` for an absolute one)."""
    if db.startswith("sqlite://"):
        rest = db[len("sqlite://") :]
        if not rest.startswith("/") or len(rest) < 2:
            raise KeyConfigError(f"{db!r}: write sqlite:///relative/file or sqlite:////abs/file")
        return rest[1:]
    return db


def load_audit_key(
    key_file: str | os.PathLike | None = None, *, create_beside: str | os.PathLike | None = None
) -> bytes:
    """The audit key: from ``key_file``, else ``$LIVENESS_AUDIT_KEY``, else (when
    ``create_beside`` names the database) from ``<db>.audit-key``, created 0600 with 32
    random bytes on first use. Refused when short or guessable (same rules as token keys).
    Keep it away from the database in production: whoever holds both can rewrite history."""
    from .sessions import check_key_file_permissions

    if key_file is not None:
        check_key_file_permissions(key_file)
        secret = Path(key_file).read_bytes().strip()
    elif os.environ.get(ENV_AUDIT_KEY):
        secret = os.environ[ENV_AUDIT_KEY].encode()
    elif create_beside is not None:
        path = Path(f"{os.fspath(create_beside)}.audit-key")
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(32))
        check_key_file_permissions(path)
        secret = path.read_bytes().strip()
    else:
        raise KeyConfigError(f"No audit key: set {ENV_AUDIT_KEY} or pass --audit-key-file PATH.")
    check_key_strength(secret, "The audit key")
    return secret


@dataclass
class AuditReport:
    """What :meth:`AuditLog.verify` found: ``ok`` only when every row's MAC holds, the ids
    run without gaps, and the last row is the exported head (when one was given)."""

    ok: bool
    rows: int
    head_id: int | None
    head_mac: str | None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "head": {"id": self.head_id, "mac": self.head_mac},
            "problems": self.problems,
        }


def _mac(key: bytes, row: tuple, prev_mac: str) -> str:
    text = json.dumps([*row, prev_mac], separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


class AuditLog:
    """The chain in table ``audit_log`` of the SQLite file or PostgreSQL database ``db``."""

    def __init__(
        self,
        db: str | os.PathLike,
        key: bytes,
        *,
        head_file: str | os.PathLike | None = None,
        busy_timeout: float = 10.0,
        head_may_lag: bool = False,
    ) -> None:
        db = os.fspath(db)
        self.postgres = is_postgres_url(db)
        self.url = db
        self.db = db if self.postgres else sqlite_path(db)
        self._key = key
        self.head_file = Path(head_file) if head_file is not None else None
        self.busy_timeout = busy_timeout
        self.head_may_lag = head_may_lag
        self._pool = None
        if self.postgres:
            from .stores.postgres import open_pool

            self._pool = open_pool(db, name="liveness-audit", timeout=busy_timeout, max_size=4)

    def __repr__(self) -> str:  # never the key (nor a password)
        return f"AuditLog({redact(self.url)!r}, head_file={self.head_file!s})"

    def close(self) -> None:
        """Close the PostgreSQL pool (nothing to do for SQLite)."""
        if self._pool is not None:
            self._pool.close()

    @contextlib.contextmanager
    def _conn(self, write: bool = False) -> Iterator:
        """A connection whose ``execute`` takes ``?`` placeholders in either backend; with
        ``write`` one transaction holding the chain's write lock."""
        if self.postgres:
            from .stores.postgres import DOWN, QmarkConnection

            try:
                with self._pool.connection(timeout=self.busy_timeout) as conn:
                    with conn.transaction():
                        if write:
                            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK,))
                        yield QmarkConnection(conn)
            except DOWN as e:
                raise StoreUnavailable(f"postgresql {redact(self.url)}: {e}") from e
            return
        with connection(self.db, self.busy_timeout, write=write) as conn:
            yield conn

    def init(self) -> None:
        """Create the table (an older unkeyed SQLite ``audit_log`` is kept as
        ``audit_log_unkeyed``)."""
        if self.postgres:
            with self._conn(write=True) as c:
                for stmt in PG_SCHEMA.split(";\n"):
                    if stmt.strip():
                        c.raw.execute(stmt)
            return
        with self._conn(write=True) as c:
            cols = [r[1] for r in c.execute("PRAGMA table_info(audit_log)")]
            if cols and "mac" not in cols:
                c.execute("ALTER TABLE audit_log RENAME TO audit_log_unkeyed")
                c.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
                c.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        with self._conn() as c:
            c.executescript(SCHEMA)

    def append(
        self,
        event: str,
        *,
        actor: str | None = None,
        client: str | None = None,
        account: str | None = None,
        recovery_id: str | None = None,
        **data,
    ) -> tuple[int, str]:
        """Append one entry (never images or embeddings); returns the new head."""
        now = time.time()
        entry = json.dumps(
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                "event": event,
                "actor": actor,
                "client": client,
                "account": account,
                "recovery_id": recovery_id,
                **data,
            },
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        with self._conn(write=True) as c:
            row = c.execute("SELECT id, mac FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
            rid, prev = (int(row[0]) + 1, row[1]) if row else (1, GENESIS)
            values = (rid, now, event, actor, client, account, recovery_id, entry)
            mac = _mac(self._key, values, prev)
            c.execute(
                "INSERT INTO audit_log (id, at, event, actor, client, account, recovery_id, "
                "entry, prev_mac, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, prev, mac),
            )
            # The head is written while the write lock is held, so heads never go backwards.
            self._export_head(rid, mac)
        return rid, mac

    def _export_head(self, rid: int, mac: str) -> None:
        log.info("audit head %d %s", rid, mac)
        if self.head_file is None:
            return
        tmp = self.head_file.with_name(self.head_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"id": rid, "mac": mac}, f)
        os.replace(tmp, self.head_file)

    def entries(self) -> list[dict]:
        with self._conn() as c:
            rows = c.execute("SELECT entry FROM audit_log ORDER BY id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def verify(self, head: dict | None = None) -> AuditReport:
        """Check every row's MAC and link, and the last row against ``head`` (default: the
        head file, when there is one). With ``head_may_lag`` a chain longer than the head
        passes when its row ``head.id`` carries ``head.mac`` (another instance appended)."""
        if head is None and self.head_file is not None and self.head_file.exists():
            head = json.loads(self.head_file.read_text())
        hid = head.get("id") if head is not None else None
        problems: list[str] = []
        prev, expect_id, n = GENESIS, 1, 0
        last_id, last_mac, mac_at_head = None, None, None
        with self._conn() as c:
            cur = c.execute(
                "SELECT id, at, event, actor, client, account, recovery_id, entry, prev_mac, mac "
                "FROM audit_log ORDER BY id"
            )
            for *values, prev_mac, mac in cur:
                n += 1
                values[0] = rid = int(values[0])
                if rid != expect_id:
                    problems.append(f"row {rid}: expected id {expect_id} (rows missing)")
                if prev_mac != prev:
                    problems.append(f"row {rid}: does not link to the row before it")
                if not hmac.compare_digest(_mac(self._key, tuple(values), prev_mac), mac):
                    problems.append(f"row {rid}: MAC does not match its contents")
                prev, expect_id = mac, rid + 1
                last_id, last_mac = rid, mac
                if rid == hid:
                    mac_at_head = mac
                if len(problems) > 50:
                    problems.append("too many problems; stopped")
                    break
        if head is not None:
            hmac_ = head.get("mac")
            if last_id is None or last_id < hid:
                problems.append(
                    f"the chain ends at row {last_id}, before the exported head {hid}: "
                    "newest rows were deleted"
                )
            elif last_id == hid and last_mac != hmac_:
                problems.append(f"row {hid} is not the exported head")
            elif last_id > hid and not self.head_may_lag:
                problems.append(
                    f"rows after the exported head {hid} ({last_id - hid}): head not updated"
                )
            elif last_id > hid and mac_at_head != hmac_:
                problems.append(f"row {hid} is not the exported checkpoint")
        return AuditReport(not problems, n, last_id, last_mac, problems)
