"""The session store protocol, the small atomic primitives a backend implements, and the one
error every backend raises when its server cannot be reached.

Two protocols, on purpose:

* :class:`SessionStore` is what callers use (:mod:`liveness.sessions`, the CLI, the service):
  record a session, consume it once, remember a video digest, count failures and enforce the
  rate limit, purge.
* :class:`StorePrimitives` is what a backend writes: each method is one atomic operation on
  the server (one SQL statement or transaction, one Redis command or Lua script). The rate
  limit rule (:mod:`liveness.stores.ratelimit`) is written once over these primitives, so
  every backend follows the same rule.

This module imports nothing from :mod:`liveness.sessions` at import time (sessions re-exports
the stores, so a top-level import would be circular); the session errors are raised through
the small functions at the end, which import them when called.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import InputError, LivenessError

if TYPE_CHECKING:  # pragma: no cover
    from ..sessions import ChallengeClaims

__all__ = [
    "DEFAULT_DIGEST_RETENTION",
    "DEFAULT_MAX_FINGERPRINTS",
    "SESSION_GRACE",
    "Block",
    "SessionStore",
    "StorePrimitives",
    "StoreUnavailable",
]

# SHA-256 hex: the only thing kept about a video.
DIGEST_RE = re.compile(r"[0-9a-f]{64}")
# Digests are kept 30 days: a replay of a recorded clip is most likely soon after it was
# recorded, and 30 days of 64-character keys is small (about 100 bytes a recovery).
DEFAULT_DIGEST_RETENTION = 30 * 24 * 3600.0
# Content fingerprints (liveness.fingerprint) kept at most, newest first: each is a few KB
# (a 10 s clip: 50 frames of a 64-bit hash and 64 grey levels, about 17 KB of JSON) and every
# check reads them all, so the set is bounded in count as well as in time (the digests'
# retention). 10,000 is a month of recoveries at a few hundred a day.
DEFAULT_MAX_FINGERPRINTS = 10_000
# Expired sessions are kept this long after expiry before purge() drops them; only for
# inspection, as expiry is checked from the signed token before the store is asked.
SESSION_GRACE = 3600.0


class StoreUnavailable(LivenessError, RuntimeError):
    """The session store's server cannot be reached or did not answer in time.

    Not the person's fault and not a refusal: a service answers ``503`` with a
    ``Retry-After`` of ``retry_after`` seconds. ``detail`` (the driver's message) is for the
    server log only. Nothing was recorded by the call that raised it *unless* the server
    committed just before the connection broke; callers treat the outcome as unknown.
    """

    code = "STORE_UNAVAILABLE"
    default_message = "The service is briefly unavailable. Try again in a few seconds."

    def __init__(
        self, detail: str | None = None, *, retry_after: float = 5.0, message: str | None = None
    ) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        self.detail = detail
        super().__init__(f"session store unavailable: {detail}" if detail else self.message)


@dataclass(frozen=True)
class Block:
    """An account blocked until ``until`` (epoch seconds) by the failure ``trigger_id``;
    failures up to that id never count towards a later block."""

    until: float
    trigger_id: int


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions, video digests and failures are kept, as callers see it.

    What an implementation must guarantee:

    * :meth:`consume` is atomic: of any number of concurrent calls for one session, from any
      number of threads, processes or machines, exactly one returns. After
      :meth:`release` by that call's attempt (its verification failed because this store
      could not be reached, and produced no result), one further call with the same video
      digest returns (a *resume*), so that the person's retry is verified instead of being
      refused for the infrastructure's fault.
    * :meth:`record_video_digest` is an atomic insert-if-absent; the session that recorded
      a digest may record it again (its resume).
    * Rate limiting follows :class:`liveness.stores.RateLimit`: :meth:`record_failure` counts
      the account's failures since ``now - window`` (ignoring those up to the failure that
      triggered the previous block) and blocks it until ``now + cooldown`` when they reach
      ``max_failures``; :meth:`check_rate_limit` raises while blocked.
    * A server that cannot be reached raises :class:`StoreUnavailable`, never a driver error.

    All times are UTC epoch seconds, passed in by the caller so that tests can move time.
    """

    def record_issued(self, claims: ChallengeClaims) -> None:
        """Remember a newly issued session (not consumed)."""
        ...

    def is_known(self, session_id: str) -> bool:
        """Whether this store issued ``session_id`` (and has not purged it)."""
        ...

    def consume(
        self,
        session_id: str,
        now: float,
        digest: str | None = None,
        attempt: str | None = None,
    ) -> None:
        """Mark the session used by the video ``digest``, in the caller's ``attempt`` (a
        random id of this try, needed to :meth:`release` it).
        :class:`~liveness.sessions.SessionAlreadyUsedError` if it already was (unless this
        ``digest`` consumed it and :meth:`release` was called since: then this call is the
        new attempt), :class:`~liveness.sessions.TokenInvalidError` if it is unknown."""
        ...

    def record_video_digest(
        self, digest: str, now: float, session_id: str | None = None
    ) -> bool:
        """Remember a video's SHA-256 hex digest as submitted for ``session_id``; False if
        it was seen before, except by that same session."""
        ...

    def release(self, session_id: str, attempt: str, now: float) -> None:
        """The verification ``attempt`` that consumed the session ended without a result:
        let the same video consume it once more. Nothing unless ``attempt`` is the one that
        consumed it last (an attempt whose consume did not take effect releases nothing)."""
        ...

    def record_failure(self, account: str, now: float) -> float | None:
        """Count a failed attempt; returns the time the account is blocked until, if this
        failure blocked it."""
        ...

    def failures(self, account: str, window: float, now: float) -> int:
        """How many failures the account had in ``(now - window, now]``."""
        ...

    def check_rate_limit(self, account: str, now: float) -> None:
        """:class:`~liveness.sessions.RateLimitedError` (with ``retry_after``) while the
        account is blocked."""
        ...

    def purge(self, now: float) -> int:
        """Forget what can no longer matter (expired sessions, old failures and digests);
        returns how many records were removed."""
        ...


@runtime_checkable
class StorePrimitives(Protocol):
    """The atomic operations a backend implements; each is one server round trip that
    cannot interleave with another client's operation on the same record."""

    def record_issued(self, claims: ChallengeClaims) -> None:
        """Insert the session; ``InputError`` (a ``ValueError``) if its id is already recorded."""
        ...

    def is_known(self, session_id: str) -> bool:
        """Whether the session is recorded."""
        ...

    def consume(
        self,
        session_id: str,
        now: float,
        digest: str | None = None,
        attempt: str | None = None,
    ) -> None:
        """Set ``consumed_at = now``, ``consumed_by = digest`` and ``attempt`` if
        ``consumed_at`` is unset (compare-and-set); else, for a ``digest`` equal to
        ``consumed_by``, unset ``released_at`` and set ``attempt`` if ``released_at`` is set
        (compare-and-set: a resume); else raise."""
        ...

    def record_video_digest(
        self, digest: str, now: float, session_id: str | None = None
    ) -> bool:
        """Insert-if-absent, with ``session_id`` as the digest's owner; True if this call
        inserted it or if the kept digest's owner is ``session_id`` (not None)."""
        ...

    def release(self, session_id: str, attempt: str, now: float) -> None:
        """Set ``released_at = now`` if the stored ``attempt`` is ``attempt``."""
        ...

    def add_failure(self, account: str, now: float) -> int:
        """Append a failure and return its id. Ids increase across the whole store, so a
        later failure always has a larger id than an earlier one."""
        ...

    def count_failures(self, account: str, after_id: int, since: float) -> int:
        """Failures of ``account`` with id ``> after_id`` and time ``> since``."""
        ...

    def failures(self, account: str, window: float, now: float) -> int:
        """Failures of ``account`` in ``(now - window, now]``."""
        ...

    def get_block(self, account: str) -> Block | None:
        """The account's current block record, if any (it may have run out)."""
        ...

    def set_block(self, account: str, until: float, trigger_id: int) -> None:
        """Record a block, unless the stored one has a trigger id at least as large (so
        that, of two racing failures that both trip the limit, the later one wins)."""
        ...

    def add_fingerprint(self, summary: str, fingerprint: str, now: float) -> int:
        """Append a content fingerprint seen at ``now`` (opaque texts: a short ``summary``
        read by every check, the full ``fingerprint`` read only for candidates) and return
        its id; in the same atomic operation drop the oldest, so that at most the store's
        ``max_fingerprints`` stay (SQL backends: those more than that many ids older, so
        ids of dropped records count too). Ids increase across the store, as failure ids
        do."""
        ...

    def fingerprints_since(self, since: float) -> list[tuple[int, str]]:
        """The kept fingerprints seen at or after ``since``, as ``(id, summary)``, oldest
        first: one consistent read (every record added before the call began is in it)."""
        ...

    def fingerprint_texts(self, ids: list[int]) -> dict[int, str]:
        """The full texts of the fingerprints ``ids`` that are still kept."""
        ...

    def drop_fingerprint(self, fingerprint_id: int) -> None:
        """Remove one fingerprint (no error if it is already gone)."""
        ...

    def purge(self, now: float) -> int:
        """Remove what no longer matters; returns the number of records removed."""
        ...


# --- raising the session errors (imported late: sessions imports this package) -------------


def unknown_session() -> Exception:
    """The error for a session id this store never issued (or has purged)."""
    from ..sessions import TokenInvalidError

    return TokenInvalidError(detail="unknown session")


def already_used(consumed_at: float | None) -> Exception:
    """The error for a session consumed before (at ``consumed_at``, if known)."""
    from ..sessions import SessionAlreadyUsedError

    when = f"consumed at {consumed_at:.0f}" if consumed_at is not None else "consumed"
    return SessionAlreadyUsedError(detail=when)


def rate_limited(blocked_until: float | None, now: float) -> None:
    """Raise :class:`~liveness.sessions.RateLimitedError` if ``blocked_until`` is after
    ``now``."""
    if blocked_until is not None and blocked_until > now:
        from ..sessions import RateLimitedError

        raise RateLimitedError(
            retry_after=blocked_until - now, detail=f"blocked until {blocked_until:.0f}"
        )


def duplicate_session(session_id: str) -> ValueError:
    """The error for recording a session id twice (a programming error, not the person's)."""
    return InputError(f"session {session_id!r} already recorded")
