"""Challenge sessions: drawing, signed tokens, one use only, video reuse, rate limits, races."""

from __future__ import annotations

import base64
import json
import multiprocessing as mp
import threading
import time
from collections import Counter

import pytest

from liveness.sessions import (
    INSTRUCTIONS,
    RATE_LIMITED,
    SESSION_ALREADY_USED,
    SESSION_EXPIRED,
    TOKEN_INVALID,
    VIDEO_REUSED,
    Action,
    ChallengeClaims,
    ChallengeGate,
    KeyConfigError,
    KeyMissingError,
    Keyring,
    MemorySessionStore,
    RateLimit,
    SessionAlreadyUsedError,
    SessionError,
    SessionStore,
    SQLiteSessionStore,
    TokenInvalidError,
    begin_verification,
    draw_actions,
    issue_challenge,
    verify_token,
    video_digest,
)

T0 = 1_750_000_000.0  # a fixed "now"; every test moves time explicitly
KEY = b"k" * 32
HEAD_MOVES = ("turn_left", "turn_right", "look_up", "look_down")


def digest(i: int | str) -> str:
    return video_digest(f"video {i}".encode())


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.single(KEY, "k1")


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path) -> SessionStore:
    if request.param == "memory":
        return MemorySessionStore()
    return SQLiteSessionStore(tmp_path / "sessions.db")


def code_of(excinfo) -> str:
    assert isinstance(excinfo.value, SessionError)
    return excinfo.value.code


# --- drawing ------------------------------------------------------------------------------


def test_default_challenge_has_three_actions_with_instructions(keyring, store):
    ch = issue_challenge(keyring, store, account="alice", now=T0)
    assert len(ch.actions) == 3
    assert ch.instructions == [INSTRUCTIONS[Action(a)] for a in ch.actions]
    assert ch.issued_at == int(T0) and ch.expires_at == int(T0) + 120
    assert INSTRUCTIONS[Action.TURN_LEFT] == "Turn your head to your left"
    assert set(INSTRUCTIONS) == set(Action)
    assert json.loads(json.dumps(ch.to_dict()))["token"] == ch.token


def test_no_action_twice_in_a_row_and_all_kinds_drawn():
    seen = Counter()
    for _ in range(2000):
        seq = draw_actions(5)
        assert len(seq) == 5
        assert all(a is not b for a, b in zip(seq[:-1], seq[1:], strict=True)), seq
        seen.update(seq)
    # Every kind turns up, none dominates (expected 10000/7 ~ 1430 each).
    assert set(seen) == set(Action)
    assert min(seen.values()) > 1000 and max(seen.values()) < 1900, seen


def test_exclude_is_respected(keyring):
    store = MemorySessionStore()
    drawn = set()
    for _ in range(300):
        ch = issue_challenge(keyring, store, actions=4, exclude=HEAD_MOVES, now=T0)
        assert not set(ch.actions) & set(HEAD_MOVES), ch.actions
        assert all(a != b for a, b in zip(ch.actions[:-1], ch.actions[1:], strict=True))
        drawn.update(ch.actions)
    assert drawn == {"blink", "smile", "open_mouth"}  # everything else is still drawn
    # Enum members work as well as strings.
    for _ in range(100):
        assert Action.BLINK not in draw_actions(3, exclude=[Action.BLINK])


def test_impossible_or_mistyped_exclude_is_refused():
    others = [a for a in Action if a is not Action.SMILE]
    with pytest.raises(ValueError):
        draw_actions(3, exclude=others)  # only smile left: would repeat in a row
    assert draw_actions(1, exclude=others) == [Action.SMILE]
    with pytest.raises(ValueError, match="unknown action"):
        draw_actions(3, exclude=["turn-left"])
    with pytest.raises(ValueError):
        draw_actions(0)


def test_draws_are_random():
    # 7 * 6 * 6 = 252 possible sequences of 3; 300 draws from a fixed or low-entropy generator
    # would give few distinct ones, uniform draws about 180.
    draws = [tuple(draw_actions(3)) for _ in range(300)]
    assert len(set(draws)) > 120
    assert Counter(d[0] for d in draws).most_common(1)[0][1] < 100


def test_sessions_and_nonces_are_unique(keyring, store):
    chs = [issue_challenge(keyring, store, now=T0) for _ in range(20)]
    claims = [verify_token(keyring, c.token, now=T0) for c in chs]
    assert len({c.session_id for c in claims}) == 20
    assert len({c.nonce for c in claims}) == 20
    assert len({c.token for c in chs}) == 20


# --- tokens ---------------------------------------------------------------------------------


def test_token_round_trip(keyring, store):
    ch = issue_challenge(keyring, store, account="alice", ttl=60, now=T0)
    c = verify_token(keyring, ch.token, now=T0 + 1)
    assert c.session_id == ch.session_id
    assert c.account == "alice"
    assert list(c.actions) == ch.actions
    assert (c.issued_at, c.expires_at, c.kid) == (int(T0), int(T0) + 60, "k1")
    assert c.instructions == ch.instructions
    # URL-safe and compact: usable as a query parameter as is.
    assert set(ch.token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert len(ch.token) < 400


def _parts(token: str) -> tuple[dict, str]:
    p, s = token.split(".")
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))), s


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def test_forged_token_with_wrong_key_is_invalid(keyring, store):
    forger = Keyring.single(b"f" * 32, "k1")  # same kid, other secret
    ch = issue_challenge(forger, store, now=T0)
    with pytest.raises(TokenInvalidError):
        verify_token(keyring, ch.token, now=T0)
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest(1), now=T0)
    assert code_of(e) == TOKEN_INVALID


def test_altered_payload_is_invalid(keyring, store):
    ch = issue_challenge(keyring, store, account="alice", now=T0)
    payload, sig = _parts(ch.token)
    altered = [
        dict(payload, actions=list(reversed(payload["actions"])) + ["blink"]),
        dict(payload, actions=["blink"]),
        dict(payload, exp=payload["exp"] + 3600),
        dict(payload, account="mallory"),
    ]
    for p in altered:
        tok = _b64(json.dumps(p, separators=(",", ":"), sort_keys=True).encode()) + "." + sig
        with pytest.raises(TokenInvalidError):
            verify_token(keyring, tok, now=T0)
    # The same payload re-serialised differently (spaces) is different bytes: also refused,
    # because the signature is over the exact bytes sent.
    tok = _b64(json.dumps(payload).encode()) + "." + sig
    with pytest.raises(TokenInvalidError):
        verify_token(keyring, tok, now=T0)
    # Control: the untouched token verifies, so the refusals above are about the changes.
    assert verify_token(keyring, ch.token, now=T0).account == "alice"


def test_unsigned_payload_with_valid_signature_of_other_fields_is_invalid(keyring, store):
    # A correctly signed payload that is not a token of ours (wrong fields) is still refused.
    bad = json.dumps({"kid": "k1", "v": 1}).encode()
    tok = _b64(bad) + "." + _b64(keyring.sign(bad))
    with pytest.raises(TokenInvalidError):
        verify_token(keyring, tok, now=T0)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-3],
        lambda t: t[: len(t) // 2],
        lambda t: t.split(".")[0],
        lambda t: t + ".x",
        lambda t: t.replace(".", ".."),
        lambda t: t + "=",
        lambda t: " " + t,
        lambda t: t[:10] + "é" + t[11:],
        lambda t: "",
        lambda t: "garbage",
        lambda t: "a.b",
        lambda t: "." * 5,
        lambda t: "A" * 5000,
        lambda t: _b64(b"[" * 2000) + "." + t.split(".")[1],
        lambda t: _b64(b"not json") + "." + t.split(".")[1],
        lambda t: None,
        lambda t: t.encode(),
    ],
)
def test_truncated_or_garbage_token_is_invalid(keyring, store, mangle):
    ch = issue_challenge(keyring, store, now=T0)
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, mangle(ch.token), digest(1), now=T0)
    assert code_of(e) == TOKEN_INVALID
    assert not isinstance(e.value, SessionAlreadyUsedError)


def test_expired_token(keyring, store):
    ch = issue_challenge(keyring, store, ttl=120, now=T0)
    verify_token(keyring, ch.token, now=T0 + 119)
    for late in (T0 + 120, T0 + 10_000):
        with pytest.raises(SessionError) as e:
            verify_token(keyring, ch.token, now=late)
        assert code_of(e) == SESSION_EXPIRED
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest(1), now=T0 + 121)
    assert code_of(e) == SESSION_EXPIRED
    # Refused before consumption: the store was not touched.
    begin_verification(keyring, store, ch.token, digest(1), now=T0 + 100)


def test_issued_in_the_future_beyond_leeway_is_invalid(keyring, store):
    ch = issue_challenge(keyring, store, ttl=300, now=T0 + 60)
    verify_token(keyring, ch.token, now=T0 + 55)  # 5 s of clock skew is tolerated
    with pytest.raises(TokenInvalidError):
        verify_token(keyring, ch.token, now=T0)


# --- keys -------------------------------------------------------------------------------------


def test_key_rotation(store):
    old = Keyring.single(b"o" * 32, "2025-01")
    ch_old = issue_challenge(old, store, now=T0)
    rotated = old.with_key("2025-02", b"n" * 32)
    assert rotated.current == "2025-02"
    ch_new = issue_challenge(rotated, store, now=T0)
    assert verify_token(rotated, ch_new.token, now=T0).kid == "2025-02"
    assert verify_token(rotated, ch_old.token, now=T0).kid == "2025-01"  # still verifies
    with pytest.raises(TokenInvalidError):
        verify_token(old, ch_new.token, now=T0)  # old servers do not know the new key
    retired = rotated.without_key("2025-01")
    with pytest.raises(TokenInvalidError):
        verify_token(retired, ch_old.token, now=T0)
    assert verify_token(retired, ch_new.token, now=T0).kid == "2025-02"
    with pytest.raises(KeyConfigError):
        retired.without_key("2025-02")  # the current key cannot go


def test_short_or_bad_keys_are_refused():
    with pytest.raises(KeyConfigError, match="at least 16"):
        Keyring.single(b"x" * 15)
    Keyring.single(b"x" * 16)
    with pytest.raises(KeyConfigError):
        Keyring({"a": b"x" * 32}, "b")
    with pytest.raises(KeyConfigError):
        Keyring({"bad kid!": b"x" * 32}, "bad kid!")
    with pytest.raises(KeyConfigError):
        Keyring.single(b"x" * 32).with_key("short", b"y" * 8)


def test_keyring_from_env_and_missing_key():
    with pytest.raises(KeyMissingError) as e:
        Keyring.from_env({})
    assert "LIVENESS_SECRET_KEY" in str(e.value) and "--key-file" in str(e.value)
    with pytest.raises(KeyMissingError):
        Keyring.load(None, {"LIVENESS_SECRET_KEY": ""})
    env_key = "Qm7vX2pL9tR4wZ8kN3cY6bH1"
    kr = Keyring.from_env({"LIVENESS_SECRET_KEY": env_key, "LIVENESS_SECRET_KEY_ID": "prod-1"})
    assert kr.current == "prod-1" and kr.keys["prod-1"] == env_key.encode()
    assert Keyring.from_env({"LIVENESS_SECRET_KEY": env_key}).current == "default"
    with pytest.raises(KeyConfigError):
        Keyring.from_env({"LIVENESS_SECRET_KEY": "short"})
    assert env_key not in repr(kr)


FILE_KEY_A = "u8Jd3kQp0xVb7nRt2mLw5sYe"
FILE_KEY_B = "Zr4hT9cWq1yF6gK2vB8nM3xP"


def test_keyring_from_file(tmp_path):
    plain = tmp_path / "key"
    plain.write_text(FILE_KEY_A + "\n")
    plain.chmod(0o600)
    assert Keyring.from_file(plain).keys == {"default": FILE_KEY_A.encode()}
    multi = tmp_path / "keys.json"
    multi.write_text(json.dumps({"current": "b", "keys": {"a": FILE_KEY_A, "b": FILE_KEY_B}}))
    multi.chmod(0o600)
    kr = Keyring.load(multi, {})
    assert kr.current == "b" and set(kr.keys) == {"a", "b"}
    with pytest.raises(KeyMissingError, match="--key-file"):
        Keyring.from_file(tmp_path / "absent")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(KeyMissingError):
        Keyring.from_file(tmp_path / "empty")
    (tmp_path / "broken.json").write_text('{"current": "a"}')
    (tmp_path / "broken.json").chmod(0o600)
    with pytest.raises(KeyConfigError):
        Keyring.from_file(tmp_path / "broken.json")


# --- one use, video reuse -------------------------------------------------------------------


def test_second_use_is_refused(keyring, store):
    ch = issue_challenge(keyring, store, account="alice", now=T0)
    claims = begin_verification(keyring, store, ch.token, digest(1), now=T0 + 5)
    assert list(claims.actions) == ch.actions
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest(2), now=T0 + 6)
    assert code_of(e) == SESSION_ALREADY_USED
    assert "already been used" in e.value.message


def test_same_video_with_fresh_token_is_refused(keyring, store):
    first = issue_challenge(keyring, store, account="alice", now=T0)
    begin_verification(keyring, store, first.token, digest("same"), now=T0)
    fresh = issue_challenge(keyring, store, account="alice", now=T0 + 10)
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, fresh.token, digest("same").upper(), now=T0 + 11)
    assert code_of(e) == VIDEO_REUSED
    # A different video with another fresh token is fine.
    other = issue_challenge(keyring, store, account="alice", now=T0 + 20)
    begin_verification(keyring, store, other.token, digest("other"), now=T0 + 21)


def test_valid_token_from_another_store_is_invalid(keyring, store):
    elsewhere = MemorySessionStore()
    ch = issue_challenge(keyring, elsewhere, now=T0)
    assert not store.is_known(ch.session_id)
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest(1), now=T0)
    assert code_of(e) == TOKEN_INVALID


def test_bad_digest_is_a_programming_error(keyring, store):
    ch = issue_challenge(keyring, store, now=T0)
    with pytest.raises(ValueError):
        begin_verification(keyring, store, ch.token, "not a digest", now=T0)
    begin_verification(keyring, store, ch.token, digest(1), now=T0)  # still unused


def test_video_digest_sources_agree(tmp_path):
    data = bytes(range(256)) * 5000
    p = tmp_path / "v.mp4"
    p.write_bytes(data)
    with p.open("rb") as f:
        from_file = video_digest(f)
    assert video_digest(data) == video_digest(p) == video_digest(str(p)) == from_file
    assert video_digest(data) != video_digest(data[:-1])


def test_sqlite_store_survives_reopening(keyring, tmp_path):
    path = tmp_path / "s.db"
    ch = issue_challenge(keyring, SQLiteSessionStore(path), now=T0)
    begin_verification(keyring, SQLiteSessionStore(path), ch.token, digest(1), now=T0)
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, SQLiteSessionStore(path), ch.token, digest(2), now=T0)
    assert code_of(e) == SESSION_ALREADY_USED
    with pytest.raises(ValueError):
        SQLiteSessionStore(":memory:")


def test_purge_forgets_only_what_no_longer_matters(keyring, store):
    ch = issue_challenge(keyring, store, ttl=60, now=T0)
    store.record_video_digest(digest(1), T0)
    store.purge(T0 + 61)
    assert store.is_known(ch.session_id)
    assert not store.record_video_digest(digest(1), T0 + 61)
    assert store.purge(T0 + 400 * 24 * 3600) >= 2
    assert not store.is_known(ch.session_id)
    assert store.record_video_digest(digest(1), T0 + 400 * 24 * 3600)


# --- rate limit -----------------------------------------------------------------------------


def test_rate_limit_trips_after_n_failures_and_recovers(keyring, store):
    assert store.limits == RateLimit(max_failures=5, window=180.0, cooldown=300.0)
    for i in range(4):
        assert store.record_failure("alice", T0 + i) is None
    store.check_rate_limit("alice", T0 + 4)
    assert store.failures("alice", 180, T0 + 4) == 4
    # a session issued before the block trips
    ch = issue_challenge(keyring, store, account="alice", ttl=1000, now=T0 + 4)
    until = store.record_failure("alice", T0 + 4)
    assert until == T0 + 4 + 300
    with pytest.raises(SessionError) as e:
        store.check_rate_limit("alice", T0 + 5)
    assert code_of(e) == RATE_LIMITED
    assert e.value.retry_after == pytest.approx(299)
    assert "Wait 5 minutes" in e.value.message
    store.check_rate_limit("bob", T0 + 5)  # other accounts are not affected

    # No new session while blocked, and it says so.
    with pytest.raises(SessionError) as e:
        issue_challenge(keyring, store, account="alice", now=T0 + 6)
    assert code_of(e) == RATE_LIMITED and "Wait" in e.value.message
    # begin_verification refuses while blocked, without consuming the session.
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest(1), now=T0 + 250)
    assert code_of(e) == RATE_LIMITED
    assert "54 seconds" in e.value.message
    # After the cool-down the same (still valid) token works; old failures do not re-block.
    begin_verification(keyring, store, ch.token, digest(1), now=T0 + 304)
    issue_challenge(keyring, store, account="alice", now=T0 + 304)
    assert store.record_failure("alice", T0 + 305) is None
    store.check_rate_limit("alice", T0 + 305)


def test_replays_count_as_failures(keyring, tmp_path):
    store = SQLiteSessionStore(tmp_path / "s.db", limits=RateLimit(max_failures=2))
    ch = issue_challenge(keyring, store, account="alice", now=T0)
    begin_verification(keyring, store, ch.token, digest(1), now=T0)
    for i in range(2):
        with pytest.raises(SessionError) as e:
            begin_verification(keyring, store, ch.token, digest(2), now=T0 + 1 + i)
        assert code_of(e) == SESSION_ALREADY_USED
    with pytest.raises(SessionError) as e:
        begin_verification(keyring, store, ch.token, digest(2), now=T0 + 3)
    assert code_of(e) == RATE_LIMITED


def test_gate_records_failures_for_the_account(keyring):
    gate = ChallengeGate(keyring, MemorySessionStore(limits=RateLimit(max_failures=1)))
    ch = gate.issue(account="alice", now=T0)
    claims = gate.begin(ch.token, digest(1), now=T0)
    gate.record_failure(claims, now=T0 + 1)
    with pytest.raises(SessionError) as e:
        gate.begin(gate.issue(account="alice", now=T0 + 2).token, digest(2), now=T0 + 2)
    assert code_of(e) == RATE_LIMITED


def test_every_error_has_a_code_and_an_actionable_sentence():
    from liveness import sessions

    classes = [
        sessions.TokenInvalidError,
        sessions.SessionExpiredError,
        sessions.SessionAlreadyUsedError,
        sessions.VideoReusedError,
        sessions.RateLimitedError,
    ]
    assert {c.code for c in classes} == {
        TOKEN_INVALID,
        SESSION_EXPIRED,
        SESSION_ALREADY_USED,
        VIDEO_REUSED,
        RATE_LIMITED,
    }
    for cls in classes:
        err = cls(detail="for the log")
        assert issubclass(cls, SessionError)
        assert str(err) == err.message and err.message.endswith(".")
        assert "for the log" not in str(err)


# --- concurrency ----------------------------------------------------------------------------


def _race_in_process(db_path, key, tokens, barrier, results):
    """Child process: open the shared SQLite file itself and try every token once, starting
    each round together with the other process."""
    kr = Keyring.single(key, "k1")
    store = SQLiteSessionStore(db_path)
    for i, tok in enumerate(tokens):
        barrier.wait(timeout=30)
        try:
            # Distinct videos: only the session can make one of the two lose.
            begin_verification(kr, store, tok, digest(f"{mp.current_process().pid}-{i}"), T0)
            results.put((i, "ok"))
        except SessionError as e:
            results.put((i, e.code))


def test_one_token_consumed_from_two_processes(keyring, tmp_path):
    db = tmp_path / "shared.db"
    store = SQLiteSessionStore(db)
    rounds = 5
    tokens = [issue_challenge(keyring, store, now=T0).token for _ in range(rounds)]
    # fork where there is one (fast: the package is already imported); each child opens its
    # own connections, so only the file is shared. spawn elsewhere.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race_in_process, args=(str(db), KEY, tokens, barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in range(2 * rounds)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    by_round = {i: sorted(code for j, code in got if j == i) for i in range(rounds)}
    for i, codes in by_round.items():
        assert codes == [SESSION_ALREADY_USED, "ok"], (i, codes)


def _race_in_threads(keyring, store, token, n=16) -> list[str]:
    barrier = threading.Barrier(n)
    out: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        barrier.wait(timeout=30)
        try:
            begin_verification(keyring, store, token, digest(f"{token}-{k}"), T0)
            r = "ok"
        except SessionError as e:
            r = e.code
        with lock:
            out.append(r)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_one_token_consumed_from_many_threads(keyring, store):
    for _ in range(3):
        token = issue_challenge(keyring, store, now=T0).token
        out = _race_in_threads(keyring, store, token)
        assert len(out) == 16
        assert out.count("ok") == 1, Counter(out)
        assert out.count(SESSION_ALREADY_USED) == 15


class _RacyStore(MemorySessionStore):
    """Check-then-set without a lock: the bug the race tests exist to catch."""

    def consume(self, session_id, now, digest=None, attempt=None):
        if self._sessions[session_id].consumed_at is not None:
            raise SessionAlreadyUsedError()
        time.sleep(0.05)  # widen the gap between the check and the set
        self._sessions[session_id].consumed_at = now


def test_race_harness_catches_a_non_atomic_store(keyring):
    store = _RacyStore()
    token = issue_challenge(keyring, store, now=T0).token
    out = _race_in_threads(keyring, store, token, n=8)
    assert out.count("ok") > 1  # so the race test above can fail


def test_claims_are_plain_data(keyring, store):
    ch = issue_challenge(keyring, store, account="a", now=T0)
    c = verify_token(keyring, ch.token, now=T0)
    assert ChallengeClaims.from_payload(c.to_payload()) == c


def test_every_drawn_challenge_has_a_head_movement():
    heads = {Action.TURN_LEFT, Action.TURN_RIGHT, Action.LOOK_UP, Action.LOOK_DOWN}
    for count in (1, 2, 3, 5):
        for _ in range(300):
            seq = draw_actions(count)
            assert heads & set(seq), seq
            assert all(a is not b for a, b in zip(seq[:-1], seq[1:], strict=True)), seq
    # Turns excluded (accessibility): looking up or down is the head movement.
    no_turns = [Action.TURN_LEFT, Action.TURN_RIGHT]
    for _ in range(300):
        seq = draw_actions(3, exclude=no_turns)
        assert {Action.LOOK_UP, Action.LOOK_DOWN} & set(seq), seq
