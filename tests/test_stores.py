"""One conformance suite for every session store: memory, SQLite, and real PostgreSQL and
Redis servers started by the tests (tests/servers.py). No mocks, no stand-ins.

What every backend must guarantee (liveness.stores.base.SessionStore): atomic one-use consume,
insert-if-absent digests, the rate-limit rule, expiry and purge, a typed StoreUnavailable when
its server is gone; and, for the stores several processes share, exactly-once consume across
processes and nothing lost when the server is killed and restarted.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import secrets
import stat
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from servers import free_port, postgres_server, redis_server  # noqa: F401 (fixtures)
from store_race import race, race_fingerprints

from liveness.cli import main as cli_main
from liveness.errors import InputError, LivenessError
from liveness.sessions import (
    RATE_LIMITED,
    SESSION_ALREADY_USED,
    TOKEN_INVALID,
    VIDEO_REUSED,
    ChallengeClaims,
    Keyring,
    RateLimitedError,
    SessionAlreadyUsedError,
    SessionError,
    TokenInvalidError,
    begin_verification,
    issue_challenge,
    new_attempt,
    release_verification,
    video_digest,
)
from liveness.stores import (
    Block,
    MemorySessionStore,
    RateLimit,
    SessionStore,
    SQLiteSessionStore,
    StorePrimitives,
    StoreUnavailable,
    StoreURLError,
    store_from_url,
)
from liveness.stores.fingerprints import remember_unless_seen
from liveness.stores.url import redact

T0 = 1_750_000_000.0  # a fixed "now"; every test moves time explicitly
BACKENDS = ["memory", "sqlite", "postgresql", "redis"]
SHARED = ["sqlite", "postgresql", "redis"]  # stores that several processes can share
SERVERS = ["postgresql", "redis"]


def digest(i) -> str:
    return video_digest(f"video {i}".encode())


def claims(sid: str | None = None, *, account: str | None = "alice", exp: int = 120):
    return ChallengeClaims(
        session_id=sid or secrets.token_urlsafe(16),
        nonce=secrets.token_urlsafe(16),
        account=account,
        actions=("blink", "turn_left"),
        issued_at=int(T0),
        expires_at=int(T0) + exp,
        kid="k1",
    )


@dataclass
class Backend:
    """A store URL plus the options that isolate this test (its own namespace); every store
    opened through :meth:`open` is closed at the end of the test."""

    kind: str
    url: str
    options: dict
    opened: list = field(default_factory=list)

    def open(self, **kw) -> SessionStore:
        store = store_from_url(self.url, **self.options, **kw)
        self.opened.append(store)
        return store


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    kind = request.param
    options: dict = {}
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
    else:
        server = request.getfixturevalue(f"{'postgres' if kind == 'postgresql' else kind}_server")
        url = server.url
        options["namespace"] = "t" + secrets.token_hex(6)  # fresh tables / keys per test
    b = Backend(kind, url, options)
    yield b
    for store in b.opened:
        store.close()


@pytest.fixture
def store(backend) -> SessionStore:
    return backend.open()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.single(b"k" * 32, "k1")


# --- one-use sessions and digests -----------------------------------------------------------


def test_store_is_a_session_store_built_on_the_primitives(store):
    assert isinstance(store, SessionStore)
    assert isinstance(store, StorePrimitives)


def test_session_is_consumed_exactly_once(store):
    c = claims()
    assert not store.is_known(c.session_id)
    store.record_issued(c)
    assert store.is_known(c.session_id)
    with pytest.raises(ValueError):
        store.record_issued(c)  # one id, one session
    store.consume(c.session_id, T0 + 1)
    with pytest.raises(SessionAlreadyUsedError) as e:
        store.consume(c.session_id, T0 + 2)
    assert e.value.code == SESSION_ALREADY_USED
    with pytest.raises(TokenInvalidError):
        store.consume("never-issued", T0)
    assert not store.is_known("never-issued")  # consume did not create it


def test_digest_is_insert_if_absent(store):
    assert store.record_video_digest(digest(1), T0)
    assert not store.record_video_digest(digest(1), T0 + 1)
    assert store.record_video_digest(digest(2), T0 + 1)


def test_begin_verification_end_to_end(keyring, store):
    ch = issue_challenge(keyring, store, account="alice", now=T0)
    got = begin_verification(keyring, store, ch.token, digest("a"), now=T0 + 1)
    assert got.session_id == ch.session_id and list(got.actions) == ch.actions
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest("b"), now=T0 + 2)
    assert e.value.code == SESSION_ALREADY_USED
    other = issue_challenge(keyring, store, account="alice", now=T0 + 3)
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, other.token, digest("a"), now=T0 + 4)
    assert e.value.code == VIDEO_REUSED
    assert store.failures("alice", 180, T0 + 4) == 2  # both replays counted
    elsewhere = MemorySessionStore()
    foreign = issue_challenge(keyring, elsewhere, now=T0)
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, foreign.token, digest("c"), now=T0 + 1)
    assert e.value.code == TOKEN_INVALID


def test_a_released_session_is_resumed_once_by_its_video(store):
    """A session is used by one video. After release() by the attempt that consumed it (its
    verification failed because a store could not be reached) the same digest may consume
    it once more; any other video, a consumption without a digest, a release by an attempt
    that did not consume it, and a second call without a new release are refused."""
    c, other = claims(), claims()
    store.record_issued(c)
    store.record_issued(other)
    store.consume(c.session_id, T0, digest("a"), "try-1")
    assert store.record_video_digest(digest("a"), T0, c.session_id)
    with pytest.raises(SessionAlreadyUsedError):  # a duplicate is refused...
        store.consume(c.session_id, T0 + 1, digest("a"), "try-2")
    store.release(c.session_id, "try-2", T0 + 2)  # ...and its release frees nothing
    with pytest.raises(SessionAlreadyUsedError):
        store.consume(c.session_id, T0 + 3, digest("a"), "try-3")
    store.release(c.session_id, "try-1", T0 + 4)
    for d in (digest("b"), None):  # another video, or none, is still refused
        with pytest.raises(SessionAlreadyUsedError) as e:
            store.consume(c.session_id, T0 + 5, d, "try-4")
        assert "consumed at 1750000000" in e.value.detail  # the first consumption's time
    store.consume(c.session_id, T0 + 6, digest("a"), "try-5")  # the resume
    assert store.record_video_digest(digest("a"), T0 + 6, c.session_id)  # its own digest
    with pytest.raises(SessionAlreadyUsedError):  # once per release
        store.consume(c.session_id, T0 + 7, digest("a"), "try-6")
    store.release(c.session_id, "try-1", T0 + 8)  # the old attempt no longer holds it
    with pytest.raises(SessionAlreadyUsedError):
        store.consume(c.session_id, T0 + 9, digest("a"), "try-7")
    # The digest belongs to its session: another session, or none, has seen it before.
    assert not store.record_video_digest(digest("a"), T0 + 9, other.session_id)
    assert not store.record_video_digest(digest("a"), T0 + 9)
    store.release("never-issued", "try-1", T0 + 9)  # unknown: nothing, nothing created
    assert not store.is_known("never-issued")
    # Consumed without a digest or an attempt: never resumed.
    store.consume(other.session_id, T0)
    with pytest.raises(SessionAlreadyUsedError):
        store.consume(other.session_id, T0 + 2, digest("c"), "try-1")


def test_one_released_session_from_many_threads_is_resumed_once(store):
    c = claims()
    store.record_issued(c)
    store.consume(c.session_id, T0, digest("a"), "first")
    store.release(c.session_id, "first", T0 + 1)
    barrier, won, lock = threading.Barrier(8), [], threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=30)
        try:
            store.consume(c.session_id, T0 + 2, digest("a"), secrets.token_hex(8))
        except SessionAlreadyUsedError:
            return
        with lock:
            won.append(1)

    _in_threads(worker, 8, timeout=60)
    assert len(won) == 1


def test_begin_verification_resumes_a_released_upload(keyring, store):
    ch = issue_challenge(keyring, store, account="alice", now=T0)
    tries = [new_attempt() for _ in range(4)]
    first = begin_verification(keyring, store, ch.token, digest("a"), T0 + 1, attempt=tries[0])
    with pytest.raises(SessionError) as e:  # the same upload again, while it is analysed
        begin_verification(keyring, store, ch.token, digest("a"), T0 + 2, attempt=tries[1])
    assert e.value.code == SESSION_ALREADY_USED
    release_verification(store, first.session_id, tries[1], T0 + 2)  # refused: frees nothing
    # The first try ended without a result (its store went away): released, the person's
    # retry of the same upload is verified.
    release_verification(store, first.session_id, tries[0], T0 + 3)
    again = begin_verification(keyring, store, ch.token, digest("a"), T0 + 10, attempt=tries[2])
    assert again == first
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest("b"), T0 + 11, attempt=tries[3])
    assert e.value.code == SESSION_ALREADY_USED
    assert store.failures("alice", 180, T0 + 11) == 2  # the duplicate and the other video
    # Without an attempt id, a session is never resumed.
    plain = issue_challenge(keyring, store, now=T0 + 12)
    begin_verification(keyring, store, plain.token, digest("p"), T0 + 12)
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, plain.token, digest("p"), T0 + 13)
    assert e.value.code == SESSION_ALREADY_USED
    # A session burnt by a reused video stays refused for that video when resumed.
    later = issue_challenge(keyring, store, account="alice", now=T0 + 20)
    for t in (21, 22):
        attempt = new_attempt()
        with pytest.raises(SessionError) as e:
            begin_verification(keyring, store, later.token, digest("a"), T0 + t, attempt=attempt)
        assert e.value.code == VIDEO_REUSED
        release_verification(store, later.session_id, attempt, T0 + t)


def _in_threads(worker, n: int, timeout: float) -> None:
    """Run ``worker`` on ``n`` threads at once and wait for them (each up to ``timeout``)."""
    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)


def test_one_session_from_many_threads(store):
    c = claims()
    store.record_issued(c)
    n = 12
    barrier = threading.Barrier(n)
    out: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=30)
        try:
            store.consume(c.session_id, T0)
            r = "ok"
        except SessionError as e:
            r = e.code
        with lock:
            out.append(r)

    _in_threads(worker, n, timeout=60)
    assert Counter(out) == {"ok": 1, SESSION_ALREADY_USED: n - 1}


# --- rate limit -----------------------------------------------------------------------------


def test_rate_limit_trips_and_recovers(store):
    assert store.limits == RateLimit(max_failures=5, window=180.0, cooldown=300.0)
    for i in range(4):
        assert store.record_failure("alice", T0 + i) is None
    store.check_rate_limit("alice", T0 + 4)
    assert store.failures("alice", 180, T0 + 4) == 4
    assert store.record_failure("alice", T0 + 4) == T0 + 304
    with pytest.raises(RateLimitedError) as e:
        store.check_rate_limit("alice", T0 + 5)
    assert e.value.code == RATE_LIMITED and e.value.retry_after == pytest.approx(299)
    store.check_rate_limit("bob", T0 + 5)  # other accounts are not affected
    # After the cool-down: free again, and the failures before the block never count again.
    store.check_rate_limit("alice", T0 + 305)
    for i in range(4):
        assert store.record_failure("alice", T0 + 305 + i) is None
    assert store.record_failure("alice", T0 + 310) == T0 + 610


def test_failures_outside_the_window_do_not_add_up(store):
    for i in range(4):
        store.record_failure("alice", T0 + i)
    # 4 old failures + 4 new ones, but never 5 within 180 s.
    for i in range(4):
        assert store.record_failure("alice", T0 + 200 + i) is None
    store.check_rate_limit("alice", T0 + 210)
    assert store.failures("alice", 180, T0 + 210) == 4
    assert store.failures("alice", 1000, T0 + 210) == 8
    assert store.failures("alice", 1000, T0 + 100) == 4  # (now - window, now]


def test_a_block_keeps_the_later_trigger(store):
    assert store.get_block("alice") is None
    store.set_block("alice", T0 + 300, 7)
    store.set_block("alice", T0 + 200, 5)  # an earlier failure's block, arriving late
    assert store.get_block("alice") == Block(T0 + 300, 7)
    store.set_block("alice", T0 + 400, 9)
    assert store.get_block("alice") == Block(T0 + 400, 9)


def test_failure_ids_increase_across_accounts(store):
    ids = [store.add_failure(a, T0) for a in ("a", "b", "a", "c")]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert store.count_failures("a", ids[0], T0 - 1) == 1
    assert store.count_failures("a", 0, T0 - 1) == 2
    assert store.count_failures("a", 0, T0) == 0  # strictly after `since`


def test_odd_account_names_stay_apart(store):
    names = ["a", "a|b", "a:b", "{a}", "ålice ☃", "x" * 256, "fail:a"]
    for i, name in enumerate(names):
        for _ in range(i + 1):
            store.record_failure(name, T0)
    for i, name in enumerate(names):
        assert store.failures(name, 60, T0) == i + 1, name
    assert store.purge(T0 + 1000) >= sum(range(1, len(names) + 1))
    assert all(store.failures(n, 1e9, T0 + 1000) == 0 for n in names)


# --- expiry and purge -----------------------------------------------------------------------


def test_purge_forgets_only_what_no_longer_matters(store):
    old, fresh = claims(exp=60), claims(exp=10_000)
    store.record_issued(old)
    store.record_issued(fresh)
    store.consume(old.session_id, T0 + 1)
    store.record_video_digest(digest(1), T0)
    for i in range(5):
        store.record_failure("alice", T0 + i)  # blocks until T0 + 304
    assert store.purge(T0) == 0
    # An hour of grace after expiry; failures within the window and the block stay.
    assert store.purge(T0 + 61) == 0
    assert store.is_known(old.session_id) and store.get_block("alice") is not None
    # The block stays while failures before its trigger could still be in a window.
    assert store.purge(T0 + 304 + 179) == 5 and store.get_block("alice") is not None
    # Past the grace and the window: the old session and the block (which ran out more than
    # a window ago) go; the fresh session and the digest stay.
    assert store.purge(T0 + 60 + 3600 + 1) == 1 + 1
    assert not store.is_known(old.session_id) and store.is_known(fresh.session_id)
    assert store.get_block("alice") is None
    assert not store.record_video_digest(digest(1), T0 + 3700)  # digests are kept 30 days
    later = T0 + 31 * 24 * 3600
    assert store.purge(later) == 2  # the fresh session (expired long ago) and the digest
    assert store.record_video_digest(digest(1), later)
    assert store.purge(later) == 0  # nothing left to do


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_purge_works_in_batches(backend):
    """The Redis store purges in bounded batches (one Lua script must not stall Redis)."""
    store = backend.open(purge_batch=7)
    for i in range(30):
        c = claims(exp=1)
        store.record_issued(c)
        store.consume(c.session_id, T0, digest(i), f"try-{i}")
        store.record_video_digest(digest(i), T0, c.session_id)
        store.release(c.session_id, f"try-{i}", T0)
        store.record_failure(f"acct{i % 3}", T0)
    assert store.purge(T0 + 10_000) == 30 + 30 + 3  # sessions, failures, 3 accounts' blocks
    assert store.purge(T0 + 10_000) == 0
    assert store.purge(T0 + 31 * 24 * 3600) == 30  # the digests, after their 30 days
    # Nothing is left behind of a session or a digest (consumption, release, owner).
    names = ("sessions", "consumed", "consumedby", "released", "attempt", "digests", "digestby")
    for name in names:
        assert store._r.exists(store._k[name]) == 0, name


# --- content fingerprints: "seen this recording before?" ---------------------------------------


def remember(store, rec: str, now: float, retention: float = 3600.0, same=None) -> bool:
    """The seen-before rule on plain strings: the summary is the first word, the text the
    whole string, equal strings are the same recording."""
    return remember_unless_seen(
        store,
        rec.split()[0],
        rec,
        now,
        maybe_same=lambda summaries: [s == rec.split()[0] for s in summaries],
        same=same or rec.__eq__,
        retention=retention,
    )


def kept_texts(store) -> list[str]:
    ids = [i for i, _ in store.fingerprints_since(0)]
    texts = store.fingerprint_texts(ids)
    return [texts[i] for i in ids]


def test_fingerprints_append_read_and_drop(store):
    a = store.add_fingerprint("00ff", '{"t": [0.0]}', T0)
    b = store.add_fingerprint("abcd" * 16, "b" * 20_000, T0 + 10)  # a long clip: kept whole
    assert b > a
    assert store.fingerprints_since(T0) == [(a, "00ff"), (b, "abcd" * 16)]
    assert store.fingerprints_since(T0 + 5) == [(b, "abcd" * 16)]  # seen at or after
    assert store.fingerprint_texts([b, a, 10**9]) == {a: '{"t": [0.0]}', b: "b" * 20_000}
    assert store.fingerprint_texts([]) == {}
    store.drop_fingerprint(a)
    store.drop_fingerprint(a)  # already gone: no error
    assert store.fingerprints_since(0) == [(b, "abcd" * 16)]
    assert store.fingerprint_texts([a]) == {}
    assert store.add_fingerprint("", "c", T0) > b  # ids never reused


def test_fingerprints_are_bounded_in_count(backend):
    store = backend.open(max_fingerprints=3)
    ids = [store.add_fingerprint(f"s{i}", f"fp {i}", T0 + i) for i in range(5)]
    assert store.fingerprints_since(0) == [(i, f"s{k}") for k, i in enumerate(ids)][2:]
    assert store.fingerprint_texts(ids) == {i: f"fp {k}" for k, i in enumerate(ids) if k >= 2}


def test_fingerprints_expire_with_the_digests(store):
    store.add_fingerprint("s", "old", T0)
    keep = store.add_fingerprint("s", "new", T0 + 10 * 24 * 3600)
    later = T0 + 31 * 24 * 3600  # past the 30-day retention of the first only
    assert store.purge(later) == 1
    assert store.fingerprints_since(0) == [(keep, "s")] and kept_texts(store) == ["new"]


def test_remember_unless_seen_refuses_a_copy_and_keeps_nothing_for_it(store):
    assert remember(store, "clip a", T0)
    assert not remember(store, "clip a", T0 + 1)  # a copy: refused
    assert kept_texts(store) == ["clip a"]  # the copy not kept
    assert remember(store, "clip b", T0 + 2)
    # Only what was seen within the retention counts.
    assert remember(store, "clip a", T0 + 100, retention=50.0)
    assert kept_texts(store) == ["clip a", "clip b", "clip a"]
    # Only the candidates' texts (summary not ruled out) are compared.
    compared = []
    assert remember(store, "other a", T0 + 101, same=lambda t: compared.append(t) or False)
    assert compared == []
    assert remember(store, "clip z", T0 + 102, same=lambda t: compared.append(t) or False)
    assert sorted(compared) == ["clip a", "clip a", "clip b"]

    def broken(text):
        raise RuntimeError("comparison failed")

    with pytest.raises(RuntimeError):
        remember(store, "clip c", T0 + 103, same=broken)
    assert "clip c" not in kept_texts(store)  # dropped again


def test_one_recording_from_many_threads_is_kept_at_most_once(store):
    n, records = 8, [f"recording {i}" for i in range(10)]
    barrier = threading.Barrier(n)
    kept: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=30)
        for rec in records:
            if remember(store, rec, T0):
                with lock:
                    kept.append(rec)

    _in_threads(worker, n, timeout=120)
    assert max(Counter(kept).values(), default=0) <= 1, Counter(kept)
    # Exactly the kept ones are in the store (refused calls dropped their own records)...
    assert sorted(kept_texts(store)) == sorted(kept)
    # ...and every kept recording is refused from now on.
    assert not any(remember(store, rec, T0 + 1) for rec in kept)


# --- shared between objects, processes and restarts -----------------------------------------


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_state_is_shared_by_every_store_on_the_url(backend):
    a, b = backend.open(), backend.open()
    c = claims()
    a.record_issued(c)
    assert b.is_known(c.session_id)
    b.consume(c.session_id, T0)
    with pytest.raises(SessionAlreadyUsedError):
        a.consume(c.session_id, T0)
    assert a.record_video_digest(digest(1), T0) and not b.record_video_digest(digest(1), T0)
    for i in range(5):
        (a if i % 2 else b).record_failure("alice", T0 + i)
    with pytest.raises(RateLimitedError):
        a.check_rate_limit("alice", T0 + 5)


def _race_context():
    """forkserver: children fork from a clean server process that imported the package once,
    so they inherit no pools or threads from pytest and start in milliseconds."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["store_race", "liveness.stores", "liveness.sessions"])
    return ctx


def _race(target, args: tuple, procs: int) -> list:
    """Run ``target(*args, barrier, results)`` in ``procs`` processes started together;
    each puts one tuple whose last item is an error text (or ``None``); returns them."""
    ctx = _race_context()
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(procs)]
    for w in workers:
        w.start()
    got = [results.get(timeout=180) for _ in range(procs)]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert [err for *_, err in got if err] == []
    return got


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_exactly_once_across_processes(backend):
    """Six processes, each with its own store from the URL, race for 30 sessions and 30
    digests at once and record 4 failures each for one account: every session and every
    digest is won by exactly one process, and no failure is lost."""
    procs, n = 6, 30
    store = backend.open()
    sessions = [claims() for _ in range(n)]
    for c in sessions:
        store.record_issued(c)
    sids = [c.session_id for c in sessions]
    digests = [digest(f"race {i}") for i in range(n)]
    got = _race(race, (backend.url, backend.options, sids, digests, "alice", 4, T0), procs)
    won = Counter(s for _, w, _, _ in got for s in w)
    first = Counter(d for _, _, f, _ in got for d in f)
    assert won == Counter(sids), "each session consumed by exactly one process"
    assert first == Counter(digests), "each digest recorded first by exactly one process"
    assert store.failures("alice", 60, T0) == procs * 4
    with pytest.raises(RateLimitedError):
        store.check_rate_limit("alice", T0)
    assert store.get_block("alice").until == T0 + 300


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_one_recording_across_processes_is_kept_at_most_once(backend):
    """Six processes, each with its own store from the URL (as six service instances), offer
    the same 20 recordings at once: each recording is kept by at most one process, the store
    holds exactly the kept ones, and every recording is refused afterwards."""
    procs = 6
    records = [f"recording {i}" for i in range(20)]
    got = _race(race_fingerprints, (backend.url, backend.options, records, T0), procs)
    kept = Counter(r for _, k, _ in got for r in k)
    assert max(kept.values(), default=0) <= 1, kept
    store = backend.open()
    assert sorted(kept_texts(store)) == sorted(kept)
    assert not any(remember(store, r, T0 + 1) for r in kept)


@pytest.mark.parametrize("kind", SERVERS)
def test_unreachable_server_is_store_unavailable(kind):
    port = free_port()  # nothing listens here
    url = (
        f"postgresql://u:secret@127.0.0.1:{port}/db"
        if kind == "postgresql"
        else f"redis://:secret@127.0.0.1:{port}/0"
    )
    t = time.monotonic()
    with pytest.raises(StoreUnavailable) as e:
        store_from_url(url, timeout=1.0)
    assert time.monotonic() - t < 10
    assert isinstance(e.value, LivenessError) and e.value.code == "STORE_UNAVAILABLE"
    assert e.value.retry_after > 0 and "secret" not in str(e.value) + str(e.value.detail)


def _until_available(call, timeout: float) -> float:
    """Seconds until ``call`` stops raising StoreUnavailable."""
    t = time.monotonic()
    while True:
        try:
            call()
            return time.monotonic() - t
        except StoreUnavailable:
            if time.monotonic() - t > timeout:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_server_killed_and_restarted_loses_nothing(backend, request, record_property):
    """SIGKILL the server: calls fail with StoreUnavailable (never a driver error, never a
    hang); after a restart the same store object works again and every consumed session,
    digest and failure is still there."""
    server = request.getfixturevalue(
        "postgres_server" if backend.kind == "postgresql" else "redis_server"
    )
    store = backend.open(timeout=1.0)
    used, unused = claims(), claims()
    store.record_issued(used)
    store.record_issued(unused)
    store.consume(used.session_id, T0)
    store.record_video_digest(digest("kept"), T0)
    store.record_failure("alice", T0)
    server.kill()
    try:
        for call in (
            lambda: store.consume(unused.session_id, T0),
            lambda: store.record_video_digest(digest("new"), T0),
            lambda: store.check_rate_limit("alice", T0),
        ):
            t = time.monotonic()
            with pytest.raises(StoreUnavailable):
                call()
            assert time.monotonic() - t < 15
    finally:
        server.start()
    # A server store reconnects by itself; until it has, calls keep failing cleanly.
    waited = _until_available(lambda: store.is_known(used.session_id), timeout=60)
    record_property("seconds_until_available_after_restart", round(waited, 1))
    print(f"{backend.kind}: available again {waited:.1f} s after the restart")
    assert waited < 60
    with pytest.raises(SessionAlreadyUsedError):
        store.consume(used.session_id, T0 + 1)
    store.consume(unused.session_id, T0 + 1)  # the refused call consumed nothing
    assert not store.record_video_digest(digest("kept"), T0 + 1)
    assert store.record_video_digest(digest("new"), T0 + 1)
    assert store.failures("alice", 60, T0 + 1) == 1


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_a_session_consumed_before_a_restart_is_resumed_by_its_upload(
    backend, request, keyring
):
    """The flaky service test's failure, replayed on the store alone: the session is
    consumed, then the server goes away before the video's digest is recorded (the service
    answers 503). Released once the server is back, the person's retry of the same upload
    is verified, not refused as SESSION_ALREADY_USED; a different video still is."""
    server = request.getfixturevalue(
        "postgres_server" if backend.kind == "postgresql" else "redis_server"
    )
    store = backend.open(timeout=1.0)
    ch = issue_challenge(keyring, store, account="alice", now=T0)
    attempt = new_attempt()
    store.consume(ch.session_id, T0 + 1, digest("upload"), attempt)  # begin's first write
    server.kill()
    try:
        with pytest.raises(StoreUnavailable):
            store.record_video_digest(digest("upload"), T0 + 1, ch.session_id)
        with pytest.raises(StoreUnavailable):
            release_verification(store, ch.session_id, attempt, T0 + 1)
    finally:
        server.start()
    _until_available(lambda: release_verification(store, ch.session_id, attempt, T0 + 2), 60)
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest("other"), T0 + 5, attempt="x")
    assert e.value.code == SESSION_ALREADY_USED
    got = begin_verification(keyring, store, ch.token, digest("upload"), T0 + 6, attempt="y")
    assert got.session_id == ch.session_id
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest("upload"), T0 + 8, attempt="z")
    assert e.value.code == SESSION_ALREADY_USED


def test_sqlite_lock_held_too_long_is_store_unavailable(tmp_path):
    import sqlite3

    path = tmp_path / "s.db"
    store = SQLiteSessionStore(path, busy_timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            store.record_video_digest(digest(1), T0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.record_video_digest(digest(1), T0)


def test_sqlite_file_is_private(tmp_path):
    path = tmp_path / "s.db"
    SQLiteSessionStore(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# The two tables as the first release created them (before a session remembered the video
# that consumed it): a store opened on them adds the columns and reads the old rows as
# "consumed by an unknown video" (never resumed) and "a digest of no known session".
_OLD_TABLES = (
    "CREATE TABLE {p}sessions (id TEXT PRIMARY KEY, account TEXT, actions TEXT NOT NULL, "
    "issued_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, consumed_at DOUBLE PRECISION)",
    "CREATE TABLE {p}video_digests (digest TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL)",
    "INSERT INTO {p}sessions VALUES ('used', NULL, '[]', 0, {exp}, {t0})",
    "INSERT INTO {p}sessions VALUES ('fresh', NULL, '[]', 0, {exp}, NULL)",
    "INSERT INTO {p}video_digests VALUES ('{d}', {t0})",
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_tables_of_the_first_release_are_upgraded(backend):
    fmt = {"exp": int(T0) + 120, "t0": T0, "d": digest("old")}
    if backend.kind == "sqlite":
        import sqlite3

        path = backend.url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            for sql in _OLD_TABLES:
                conn.execute(sql.format(p="", **fmt))
            conn.execute("PRAGMA user_version = 1")
    else:
        import psycopg

        with psycopg.connect(backend.url, autocommit=True) as conn:
            for sql in _OLD_TABLES:
                conn.execute(sql.format(p=backend.options["namespace"] + "_", **fmt))
    store = backend.open()
    with pytest.raises(SessionAlreadyUsedError):
        store.consume("used", T0 + 1, digest("old"))
    assert not store.record_video_digest(digest("old"), T0 + 1, "used")
    store.consume("fresh", T0 + 1, digest("new"), "try-1")
    store.release("fresh", "try-1", T0 + 2)
    store.consume("fresh", T0 + 2, digest("new"), "try-2")  # resumed: the new columns work
    assert store.record_video_digest(digest("new"), T0 + 2, "fresh")
    assert store.record_video_digest(digest("new"), T0 + 3, "fresh")
    backend.open()  # a second open finds the columns there
    if backend.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(path) as conn:  # additive columns: the release before reads it
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


def test_sqlite_file_of_a_newer_release_is_refused(tmp_path):
    import sqlite3

    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 3")
    with pytest.raises(LivenessError, match="newer than this code"):
        SQLiteSessionStore(path)


# --- choosing a store by URL ----------------------------------------------------------------


def test_store_from_url_schemes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(store_from_url("memory://"), MemorySessionStore)
    s = store_from_url("sqlite:///rel.db", limits=RateLimit(max_failures=2))
    assert isinstance(s, SQLiteSessionStore) and s.path == "rel.db" and s.limits.max_failures == 2
    s = store_from_url(f"sqlite:///{tmp_path / 'abs.db'}")
    assert s.path == str(tmp_path / "abs.db")
    assert store_from_url("plain.db").path == "plain.db"  # what --store always took
    for bad in ("mysql://x/y", "memory://x", "sqlite://rel.db", "sqlite:///", "", "  "):
        with pytest.raises(StoreURLError) as e:
            store_from_url(bad)
        assert isinstance(e.value, InputError)
    with pytest.raises(ValueError):
        store_from_url("postgresql://u@127.0.0.1:1/db", namespace="Robert'); DROP TABLE x;--")


def test_passwords_never_shown(postgres_server, redis_server):  # noqa: F811
    for srv in (postgres_server, redis_server):
        assert srv.password not in redact(srv.url) and "***" in redact(srv.url)
        s = store_from_url(srv.url, namespace="t" + secrets.token_hex(4))
        try:
            assert srv.password not in repr(s)
        finally:
            s.close()
    assert redact("postgresql://app@db/x") == "postgresql://app@db/x"


# --- the CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_cli_store_url_for_every_backend(backend, capsys, monkeypatch):
    monkeypatch.setenv("LIVENESS_SECRET_KEY", secrets.token_urlsafe(32))
    if backend.kind != "sqlite":
        # The CLI uses the default namespace; this test's store must too.
        backend.options = {}
    assert cli_main(["challenge", "new", "--account", "bob", "--store", backend.url]) == 0
    issued = json.loads(capsys.readouterr().out)
    assert backend.open().is_known(issued["session_id"])


def test_cli_store_plain_path_and_bad_url(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIVENESS_SECRET_KEY", secrets.token_urlsafe(32))
    path = tmp_path / "s.db"
    assert cli_main(["challenge", "new", "--store", str(path)]) == 0
    sid = json.loads(capsys.readouterr().out)["session_id"]
    assert SQLiteSessionStore(path).is_known(sid)
    assert cli_main(["challenge", "new", "--store", "mysql://x/y"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown session store" in err[0]
    port = free_port()
    assert cli_main(["challenge", "new", "--store", f"redis://127.0.0.1:{port}/0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unavailable" in err[0]


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_redis_out_of_memory_is_store_unavailable(backend):
    """A full Redis (maxmemory reached, no eviction) refuses writes: StoreUnavailable, and
    nothing consumed; once it has room again the same session can be used."""
    import redis

    store = backend.open()
    c = claims()
    store.record_issued(c)
    admin = redis.Redis.from_url(backend.url)
    admin.config_set("maxmemory", 1)
    try:
        for call in (
            lambda: store.consume(c.session_id, T0),
            lambda: store.record_video_digest(digest(1), T0),
            lambda: store.record_failure("alice", T0),
        ):
            with pytest.raises(StoreUnavailable):
                call()
        assert store.is_known(c.session_id)  # reads still work
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
    store.consume(c.session_id, T0)
    assert store.record_video_digest(digest(1), T0)
