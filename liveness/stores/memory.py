"""A session store in this process's memory (``memory://``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import (
    DEFAULT_DIGEST_RETENTION,
    DEFAULT_MAX_FINGERPRINTS,
    SESSION_GRACE,
    Block,
    already_used,
    duplicate_session,
    unknown_session,
)
from .ratelimit import RateLimit, RateLimitRules

if TYPE_CHECKING:  # pragma: no cover
    from ..sessions import ChallengeClaims

__all__ = ["MemorySessionStore"]


@dataclass
class _Session:
    """One issued session; ``None`` where unset. ``consumed_by``: the digest of the video
    that consumed it; ``attempt``: the try that did (see :meth:`SessionStore.release`)."""

    expires_at: float
    consumed_at: float | None = None
    consumed_by: str | None = None
    released_at: float | None = None
    attempt: str | None = None


@dataclass(eq=False)  # identity, not contents: two stores are never "the same store"
class MemorySessionStore(RateLimitRules):
    """A :class:`~liveness.stores.SessionStore` in this process's memory, behind one lock:
    for tests and a single-process server. Everything is lost on exit, so a restart re-opens
    used tokens until they expire; use a SQLite file or a server otherwise."""

    limits: RateLimit = field(default_factory=RateLimit)
    digest_retention: float = DEFAULT_DIGEST_RETENTION
    max_fingerprints: int = DEFAULT_MAX_FINGERPRINTS
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _sessions: dict[str, _Session] = field(default_factory=dict, init=False, repr=False)
    # digest -> (seen_at, the session that submitted it or None)
    _digests: dict[str, tuple[float, str | None]] = field(
        default_factory=dict, init=False, repr=False
    )
    # account -> [(failure id, time)]; ids order failures even when times are equal
    _failures: dict[str, list[tuple[int, float]]] = field(
        default_factory=dict, init=False, repr=False
    )
    _blocks: dict[str, Block] = field(default_factory=dict, init=False, repr=False)
    _next_failure_id: int = field(default=1, init=False, repr=False)
    # fingerprint id -> (seen_at, summary, text), in id order (dicts keep insertion order)
    _fingerprints: dict[int, tuple[float, str, str]] = field(
        default_factory=dict, init=False, repr=False
    )
    _next_fingerprint_id: int = field(default=1, init=False, repr=False)

    def close(self) -> None:
        """Nothing to release (for symmetry with the server-backed stores)."""

    def record_issued(self, claims: ChallengeClaims) -> None:
        with self._lock:
            if claims.session_id in self._sessions:
                raise duplicate_session(claims.session_id)
            self._sessions[claims.session_id] = _Session(claims.expires_at)

    def is_known(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._sessions

    def consume(
        self,
        session_id: str,
        now: float,
        digest: str | None = None,
        attempt: str | None = None,
    ) -> None:
        with self._lock:
            rec = self._sessions.get(session_id)
            if rec is None:
                raise unknown_session()
            if rec.consumed_at is None:
                rec.consumed_at, rec.consumed_by, rec.attempt = now, digest, attempt
            elif digest is not None and rec.consumed_by == digest and rec.released_at is not None:
                rec.released_at, rec.attempt = None, attempt  # resumed by its video
            else:
                raise already_used(rec.consumed_at)

    def record_video_digest(
        self, digest: str, now: float, session_id: str | None = None
    ) -> bool:
        with self._lock:
            if digest in self._digests:
                return session_id is not None and self._digests[digest][1] == session_id
            self._digests[digest] = (now, session_id)
            return True

    def release(self, session_id: str, attempt: str, now: float) -> None:
        with self._lock:
            rec = self._sessions.get(session_id)
            if rec is not None and attempt is not None and rec.attempt == attempt:
                rec.released_at = now

    def add_failure(self, account: str, now: float) -> int:
        with self._lock:
            fid = self._next_failure_id
            self._next_failure_id += 1
            self._failures.setdefault(account, []).append((fid, now))
            return fid

    def count_failures(self, account: str, after_id: int, since: float) -> int:
        with self._lock:
            return sum(1 for i, t in self._failures.get(account, ()) if i > after_id and t > since)

    def failures(self, account: str, window: float, now: float) -> int:
        with self._lock:
            return sum(1 for _, t in self._failures.get(account, ()) if now - window < t <= now)

    def get_block(self, account: str) -> Block | None:
        with self._lock:
            return self._blocks.get(account)

    def set_block(self, account: str, until: float, trigger_id: int) -> None:
        with self._lock:
            old = self._blocks.get(account)
            if old is None or old.trigger_id < trigger_id:
                self._blocks[account] = Block(until, trigger_id)

    def add_fingerprint(self, summary: str, fingerprint: str, now: float) -> int:
        with self._lock:
            fid = self._next_fingerprint_id
            self._next_fingerprint_id += 1
            self._fingerprints[fid] = (now, summary, fingerprint)
            while len(self._fingerprints) > max(1, self.max_fingerprints):
                del self._fingerprints[next(iter(self._fingerprints))]
            return fid

    def fingerprints_since(self, since: float) -> list[tuple[int, str]]:
        with self._lock:
            return [(i, s) for i, (t, s, _) in self._fingerprints.items() if t >= since]

    def fingerprint_texts(self, ids: list[int]) -> dict[int, str]:
        with self._lock:
            return {i: self._fingerprints[i][2] for i in ids if i in self._fingerprints}

    def drop_fingerprint(self, fingerprint_id: int) -> None:
        with self._lock:
            self._fingerprints.pop(fingerprint_id, None)

    def purge(self, now: float) -> int:
        with self._lock:
            removed = 0
            old = now - self.digest_retention
            for fid in [i for i, (t, *_) in self._fingerprints.items() if t < old]:
                del self._fingerprints[fid]
                removed += 1
            for sid in [s for s, r in self._sessions.items() if r.expires_at < now - SESSION_GRACE]:
                del self._sessions[sid]
                removed += 1
            for d in [d for d, (t, _) in self._digests.items() if t < now - self.digest_retention]:
                del self._digests[d]
                removed += 1
            for acct, lst in list(self._failures.items()):
                keep = [(i, t) for i, t in lst if t > now - self.limits.window]
                removed += len(lst) - len(keep)
                if keep:
                    self._failures[acct] = keep
                else:
                    del self._failures[acct]
            # A block's trigger id still matters while failures before it are in a window.
            for acct in [a for a, b in self._blocks.items() if b.until < now - self.limits.window]:
                del self._blocks[acct]
                removed += 1
            return removed
