"""Redis (``redis://[:password@]host:port/db``): a shared store for several service processes,
with redis-py. Every primitive that reads and writes is one Lua script, which Redis runs
atomically; the others are single commands."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import redis

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

__all__ = ["RedisSessionStore"]

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,40}")

# KEYS: sessions zset, consumed hash (session id -> time), consumed-by hash (session id ->
# digest), released hash (session id -> time), attempt hash (session id -> attempt id).
# ARGV: session id, now, digest ('' for none), attempt ('' for none).
# -> {1} consumed now, {0} unknown, {2, consumed_at} consumed before, {3} resumed by its video.
_CONSUME = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {0} end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[5], ARGV[1], ARGV[4]) end
  return {1}
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[3]
   and redis.call('HDEL', KEYS[4], ARGV[1]) == 1 then
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[5], ARGV[1], ARGV[4])
  else redis.call('HDEL', KEYS[5], ARGV[1]) end
  return {3}
end
return {2, redis.call('HGET', KEYS[2], ARGV[1])}
"""

# KEYS: attempt hash, released hash. ARGV: session id, attempt, now.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return 0
"""

# KEYS: digests zset, digest owners hash. ARGV: digest, now, session id ('' for none).
# -> 1 if recorded now or before by this session, else 0.
_RECORD_DIGEST = """
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 1 then
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
  return 1
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[3] then return 1 end
return 0
"""

# KEYS: failure id counter, the account's failures zset, failures index zset.
# ARGV: account, now. -> the new failure's id.
_ADD_FAILURE = """
local id = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[2], id)
redis.call('ZADD', KEYS[3], ARGV[2], id .. '|' .. ARGV[1])
return id
"""

# KEYS: the account's failures zset. ARGV: after_id, since. -> count.
_COUNT_FAILURES = """
local after = tonumber(ARGV[1])
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')) do
  if tonumber(id) > after then n = n + 1 end
end
return n
"""

# KEYS: blocks hash (account -> "until|trigger"), blocks-by-until zset.
# ARGV: account, until, trigger id. -> 1 if written.
_SET_BLOCK = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local t = tonumber(string.match(cur, '|(%d+)$'))
  if t and t >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS: fingerprint id counter, fingerprints zset (id scored by time), summaries hash, texts
# hash. ARGV: summary, text, now, max kept. -> the new id; the oldest beyond `max kept` go.
_ADD_FINGERPRINT = """
local id = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[3], id)
redis.call('HSET', KEYS[3], id, ARGV[1])
redis.call('HSET', KEYS[4], id, ARGV[2])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, extra - 1)) do
    redis.call('ZREM', KEYS[2], old)
    redis.call('HDEL', KEYS[3], old)
    redis.call('HDEL', KEYS[4], old)
  end
end
return id
"""

# KEYS: fingerprints zset, summaries hash, texts hash. ARGV: cutoff (exclusive), batch.
# -> {removed, more}.
_PURGE_FINGERPRINTS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0,
                       tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
local more = 0
if #ids == tonumber(ARGV[2]) then more = 1 end
return {#ids, more}
"""

# KEYS: sessions, consumed, digests, failures index, blocks, blocks-by-until, consumed-by,
# released, digest owners, attempts.
# ARGV: session cutoff, digest cutoff, failure cutoff, block cutoff, failure key prefix, batch.
# Removes at most `batch` of each -> {removed, more}.
_PURGE = """
local batch = tonumber(ARGV[6])
local removed, more = 0, 0
local sids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, batch)
for _, sid in ipairs(sids) do
  redis.call('HDEL', KEYS[2], sid)
  redis.call('HDEL', KEYS[7], sid)
  redis.call('HDEL', KEYS[8], sid)
  redis.call('HDEL', KEYS[10], sid)
  redis.call('ZREM', KEYS[1], sid)
end
removed = removed + #sids
if #sids == batch then more = 1 end
local digests = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2], 'LIMIT', 0, batch)
for _, d in ipairs(digests) do
  redis.call('HDEL', KEYS[9], d)
  redis.call('ZREM', KEYS[3], d)
end
removed = removed + #digests
if #digests == batch then more = 1 end
local fails = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[3], 'LIMIT', 0, batch)
for _, m in ipairs(fails) do
  local bar = string.find(m, '|', 1, true)
  redis.call('ZREM', ARGV[5] .. string.sub(m, bar + 1), string.sub(m, 1, bar - 1))
  redis.call('ZREM', KEYS[4], m)
end
removed = removed + #fails
if #fails == batch then more = 1 end
local accts = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[4], 'LIMIT', 0, batch)
for _, a in ipairs(accts) do
  redis.call('HDEL', KEYS[5], a)
  redis.call('ZREM', KEYS[6], a)
end
removed = removed + #accts
if #accts == batch then more = 1 end
return {removed, more}
"""

# The driver's ways of saying "the server is not there, stopped answering or is full"
# (AuthenticationError and BusyLoadingError are ConnectionErrors too).
_DOWN = tuple(
    getattr(redis.exceptions, name)
    for name in ("ConnectionError", "TimeoutError", "OutOfMemoryError", "ReadOnlyError")
    if hasattr(redis.exceptions, name)
)
# Replies that mean "not now" rather than "wrong command": a replica after a fail-over, memory
# full, a primary without enough replicas (redis-py turns some into the classes above).
_NOT_NOW = ("READONLY", "OOM", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN", "LOADING")


class RedisSessionStore(RateLimitRules):
    """A :class:`~liveness.stores.SessionStore` in Redis.

    Keys live under ``{<namespace>}:`` (one hash tag, so every key of one store sits in one
    Redis Cluster slot and the Lua scripts stay valid there). Sessions are a sorted set
    scored by expiry plus hashes of consumption times, of the consuming videos' digests and
    attempts, and of release times; ``consume`` is a script that checks the session exists and
    ``HSETNX``-es its consumption time, so exactly one caller wins (after a release, the
    consuming video's call that ``HDEL``-s the release wins). Digests are one sorted set
    written with ``ZADD NX``, with a hash of the session that submitted each. Nothing relies
    on Redis key expiry: all times are the caller's ``now``, and :meth:`purge` removes what
    is old.

    Durability is Redis's: for a consumed session to stay consumed after a Redis crash, run
    it with ``appendonly yes`` and ``appendfsync always`` (``everysec`` can forget the last
    second). A server that cannot be reached within ``timeout`` seconds raises
    :class:`~liveness.stores.StoreUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        limits: RateLimit | None = None,
        digest_retention: float = DEFAULT_DIGEST_RETENTION,
        max_fingerprints: int = DEFAULT_MAX_FINGERPRINTS,
        namespace: str = "liveness",
        timeout: float = 5.0,
        purge_batch: int = 1000,
    ) -> None:
        if not _NAMESPACE_RE.fullmatch(namespace):
            raise InputError(f"namespace must match {_NAMESPACE_RE.pattern}, not {namespace!r}")
        self.url = url
        self.limits = limits or RateLimit()
        self.digest_retention = digest_retention
        self.max_fingerprints = max(1, int(max_fingerprints))
        self.namespace = namespace
        self.purge_batch = purge_batch
        p = f"{{{namespace}}}:"
        names = (
            *("sessions", "consumed", "consumedby", "released", "attempt"),
            *("digests", "digestby", "failseq", "failidx", "blocks", "blocked"),
            *("fpseq", "fps", "fpsummary", "fptext"),
        )
        self._k = {n: p + n for n in names}
        self._fail_prefix = p + "fail:"
        # redis-py's pool notices a fork and opens new connections in the child.
        self._r = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        self._consume = self._r.register_script(_CONSUME)
        self._record_digest = self._r.register_script(_RECORD_DIGEST)
        self._release = self._r.register_script(_RELEASE)
        self._add_failure = self._r.register_script(_ADD_FAILURE)
        self._count_failures = self._r.register_script(_COUNT_FAILURES)
        self._set_block = self._r.register_script(_SET_BLOCK)
        self._purge = self._r.register_script(_PURGE)
        self._add_fingerprint = self._r.register_script(_ADD_FINGERPRINT)
        self._purge_fingerprints = self._r.register_script(_PURGE_FINGERPRINTS)
        with self._call():
            self._r.ping()

    def __repr__(self) -> str:
        return f"RedisSessionStore({redact(self.url)!r}, namespace={self.namespace!r})"

    def close(self) -> None:
        """Close the client's connections."""
        self._r.close()

    @contextmanager
    def _call(self) -> Iterator[None]:
        try:
            yield
        except _DOWN as exc:
            raise StoreUnavailable(detail=f"redis {redact(self.url)}: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith(_NOT_NOW):
                raise StoreUnavailable(detail=f"redis {redact(self.url)}: {exc}") from exc
            raise

    def record_issued(self, claims: ChallengeClaims) -> None:
        with self._call():
            added = self._r.zadd(
                self._k["sessions"], {claims.session_id: claims.expires_at}, nx=True
            )
        if added != 1:
            raise duplicate_session(claims.session_id)

    def is_known(self, session_id: str) -> bool:
        with self._call():
            return self._r.zscore(self._k["sessions"], session_id) is not None

    def consume(
        self,
        session_id: str,
        now: float,
        digest: str | None = None,
        attempt: str | None = None,
    ) -> None:
        keys = [self._k[n] for n in ("sessions", "consumed", "consumedby", "released", "attempt")]
        args = [session_id, repr(float(now)), digest or "", attempt or ""]
        with self._call():
            res = self._consume(keys=keys, args=args)
        if res[0] in (1, 3):  # 3: resumed by its own video after release()
            return
        if res[0] == 0:
            raise unknown_session()
        raise already_used(float(res[1]))

    def record_video_digest(
        self, digest: str, now: float, session_id: str | None = None
    ) -> bool:
        keys = [self._k["digests"], self._k["digestby"]]
        with self._call():
            return self._record_digest(
                keys=keys, args=[digest, repr(float(now)), session_id or ""]
            ) == 1

    def release(self, session_id: str, attempt: str, now: float) -> None:
        if not attempt:
            return  # a consume without an attempt id is never released
        keys = [self._k["attempt"], self._k["released"]]
        with self._call():
            self._release(keys=keys, args=[session_id, attempt, repr(float(now))])

    def add_failure(self, account: str, now: float) -> int:
        with self._call():
            return int(
                self._add_failure(
                    keys=[self._k["failseq"], self._fail_prefix + account, self._k["failidx"]],
                    args=[account, repr(float(now))],
                )
            )

    def count_failures(self, account: str, after_id: int, since: float) -> int:
        with self._call():
            return int(
                self._count_failures(
                    keys=[self._fail_prefix + account], args=[int(after_id), repr(float(since))]
                )
            )

    def failures(self, account: str, window: float, now: float) -> int:
        with self._call():
            return int(
                self._r.zcount(
                    self._fail_prefix + account, f"({float(now - window)!r}", repr(float(now))
                )
            )

    def get_block(self, account: str) -> Block | None:
        with self._call():
            val = self._r.hget(self._k["blocks"], account)
        if val is None:
            return None
        until, _, trigger = val.rpartition("|")
        return Block(float(until), int(trigger))

    def set_block(self, account: str, until: float, trigger_id: int) -> None:
        with self._call():
            self._set_block(
                keys=[self._k["blocks"], self._k["blocked"]],
                args=[account, repr(float(until)), int(trigger_id)],
            )

    def add_fingerprint(self, summary: str, fingerprint: str, now: float) -> int:
        keys = [self._k[n] for n in ("fpseq", "fps", "fpsummary", "fptext")]
        args = [summary, fingerprint, repr(float(now)), self.max_fingerprints]
        with self._call():
            return int(self._add_fingerprint(keys=keys, args=args))

    def fingerprints_since(self, since: float) -> list[tuple[int, str]]:
        # Two native commands, not a Lua script: a script building 10,000 replies held
        # Redis for ~0.4 s (benchmarks.fingerprint_store). Every record added before the
        # ZRANGEBYSCORE is in its answer; one dropped before the HMGET is skipped (dropped
        # means its own check refused it, or it was the oldest), which the seen-before rule
        # allows (liveness/stores/fingerprints.py).
        with self._call():
            ids = self._r.zrangebyscore(self._k["fps"], repr(float(since)), "+inf")
            summaries = self._r.hmget(self._k["fpsummary"], ids) if ids else []
        return [
            (int(i), s) for i, s in zip(ids, summaries, strict=True) if s is not None
        ]

    def fingerprint_texts(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        ids = [int(i) for i in ids]
        with self._call():
            texts = self._r.hmget(self._k["fptext"], ids)
        return {i: t for i, t in zip(ids, texts, strict=True) if t is not None}

    def drop_fingerprint(self, fingerprint_id: int) -> None:
        with self._call():
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(self._k["fps"], int(fingerprint_id))
            pipe.hdel(self._k["fpsummary"], int(fingerprint_id))
            pipe.hdel(self._k["fptext"], int(fingerprint_id))
            pipe.execute()

    def _purge_old_fingerprints(self, now: float) -> int:
        keys = [self._k["fps"], self._k["fpsummary"], self._k["fptext"]]
        args = [repr(float(now - self.digest_retention)), int(self.purge_batch)]
        total = 0
        while True:
            with self._call():
                removed, more = self._purge_fingerprints(keys=keys, args=args)
            total += int(removed)
            if not more:
                return total

    def purge(self, now: float) -> int:
        lim = self.limits
        args = [
            repr(float(now - SESSION_GRACE)),
            repr(float(now - self.digest_retention)),
            repr(float(now - lim.window)),
            repr(float(now - lim.window)),
            self._fail_prefix,
            int(self.purge_batch),
        ]
        keys = [
            self._k[n]
            for n in (
                *("sessions", "consumed", "digests", "failidx", "blocks", "blocked"),
                *("consumedby", "released", "digestby", "attempt"),
            )
        ]
        total = self._purge_old_fingerprints(now)
        while True:
            with self._call():
                removed, more = self._purge(keys=keys, args=args)
            total += int(removed)
            if not more:
                return total
