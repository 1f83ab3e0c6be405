"""Timed steps (token version 2) and strict matching: protocol, check_sequence, verify."""

from __future__ import annotations

import base64
import json
import secrets
import time

import pytest

from benchmarks.render import load_ground_truth, render_live
from liveness import Verifier
from liveness.challenges import ActionEvent, check_sequence
from liveness.sessions import (
    ChallengeClaims,
    ChallengeGate,
    Keyring,
    MemorySessionStore,
    StepTiming,
    TokenInvalidError,
    encode_token,
    issue_challenge,
    verify_token,
)

KEY = Keyring.single(b"t" * 32)


def ev(kind, start, end=None, peak=None):
    end = start + 0.3 if end is None else end
    peak = (start + end) / 2 if peak is None else peak
    return ActionEvent(kind, start, peak, end, 0.9, 1.0, 0.0, 0, 0, 0)


# -- tokens ---------------------------------------------------------------------------------


def test_timed_token_carries_step_windows_and_untimed_tokens_still_work():
    store = MemorySessionStore()
    timed = issue_challenge(KEY, store, actions=3, timed=True)
    claims = verify_token(KEY, timed.token)
    assert claims.version == 2
    assert claims.windows == StepTiming().windows(3) == tuple(map(tuple, timed.windows))
    lo = [w[0] for w in claims.windows]
    assert lo == sorted(lo) and all(b - a == pytest.approx(2.8) for a, b in claims.windows)
    assert timed.to_dict()["windows"] == timed.windows
    plain = issue_challenge(KEY, store, actions=3)
    c1 = verify_token(KEY, plain.token)
    assert c1.version == 1 and c1.windows is None and "windows" not in plain.to_dict()


def _forge(payload: dict) -> str:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return b64(body) + "." + b64(KEY.sign(body))


@pytest.mark.parametrize(
    "change",
    [
        {"win": None},  # v2 without windows
        {"win": [[1, 2]]},  # fewer windows than actions
        {"win": [[2, 1], [3, 4]]},  # lo > hi
        {"win": [[5, 6], [1, 2]]},  # out of order
        {"win": [[-1, 2], [3, 4]]},
        {"win": [[1, 2], [3, 1e9]]},
        {"win": [[1, True], [3, 4]]},
        {"v": 1},  # windows on a version 1 token
        {"v": 3},
    ],
)
def test_malformed_windows_are_refused_even_when_signed(change):
    now = int(time.time())
    payload = {
        "v": 2,
        "kid": KEY.current,
        "sid": "s" * 22,
        "nonce": "n" * 22,
        "account": None,
        "actions": ["blink", "smile"],
        "iat": now,
        "exp": now + 60,
        "win": [[1.2, 4.0], [5.2, 8.0]],
    }
    assert verify_token(KEY, _forge(payload)).windows == ((1.2, 4.0), (5.2, 8.0))
    payload.update(change)
    if payload.get("win", 0) is None:
        del payload["win"]
    with pytest.raises(TokenInvalidError):
        verify_token(KEY, _forge(payload))


# -- check_sequence -------------------------------------------------------------------------

WINDOWS = [(1.2, 4.0), (5.2, 8.0)]


def test_steps_inside_their_windows_complete():
    seq = check_sequence([ev("blink", 2.0), ev("smile", 6.0)], ["blink", "smile"], windows=WINDOWS)
    assert seq.completed and seq.mistimed is None


def test_an_action_before_its_window_is_early():
    seq = check_sequence([ev("blink", 0.5), ev("smile", 6.0)], ["blink", "smile"], windows=WINDOWS)
    assert not seq.completed and seq.failed_step == 0 and seq.mistimed == "early"
    assert "before" in seq.message


def test_an_action_after_its_window_is_late():
    seq = check_sequence([ev("blink", 2.0), ev("smile", 8.5)], ["blink", "smile"], windows=WINDOWS)
    assert not seq.completed and seq.failed_step == 1 and seq.mistimed == "late"


def test_a_recording_full_of_other_actions_fails_strict_matching():
    every = ["turn_left", "turn_right", "look_up", "look_down", "open_mouth"]
    events = [ev("blink", 2.0), ev("smile", 6.0)] + [ev(k, 2.5 + i) for i, k in enumerate(every)]
    loose = check_sequence(events, ["blink", "smile"], windows=WINDOWS)
    strict = check_sequence(events, ["blink", "smile"], windows=WINDOWS, max_other=2)
    assert loose.completed and not strict.completed
    assert strict.too_many_other and strict.other_actions == 5 and strict.failed_step is None
    # natural blinks are not "other actions"
    blinks = [ev("blink", t) for t in (0.2, 4.5, 8.5, 9.5)]
    ok = check_sequence(
        [ev("blink", 2.0), ev("smile", 6.0), *blinks], ["blink", "smile"], max_other=0
    )
    assert ok.completed


# -- verify with timed tokens ---------------------------------------------------------------

PHOTO = "faces/deepface/img33.jpg"


@pytest.fixture(scope="module")
def gate():
    return ChallengeGate(KEY, MemorySessionStore())


@pytest.fixture(scope="module")
def verifier(model_dir, gate):
    with Verifier(model_dir, challenges=gate) as v:
        yield v


def _token(gate, actions, windows):
    iat = int(time.time())
    claims = ChallengeClaims(
        secrets.token_urlsafe(16),
        secrets.token_urlsafe(16),
        None,
        tuple(actions),
        iat,
        iat + 120,
        gate.keyring.current,
        version=2,
        windows=tuple(windows),
    )
    gate.store.record_issued(claims)
    return encode_token(gate.keyring, claims)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, data_dir, model_dir):
    out = tmp_path_factory.mktemp("timed") / "lb.mp4"
    kw = dict(size=(360, 480), fps=15, seed=3, angle_deg=30, model_dir=model_dir)
    return render_live(data_dir / PHOTO, "turn_left,blink", out, **kw)


def test_verify_passes_actions_on_time_and_refuses_the_same_actions_at_other_times(
    verifier, gate, clip, data_dir, tmp_path
):
    truth = load_ground_truth(clip)
    starts = [a.start for a in truth.actions]
    on_time = [(max(0.0, s - 0.8), s + 1.0) for s in starts]
    result = verifier.verify(
        clip, data_dir / PHOTO, challenge=_token(gate, ["turn_left", "blink"], on_time)
    )
    assert result.liveness.challenge["completed"], result.liveness.challenge
    # the same recording for a token whose steps come 2 s later: done too early
    later = [(s + 2.0, s + 4.0) for s in starts]
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clip.read_bytes() + b"\0")  # a new digest, so the reuse check lets it in
    result = verifier.verify(
        copy, data_dir / PHOTO, challenge=_token(gate, ["turn_left", "blink"], later)
    )
    assert result.decision == "reject"
    assert "CHALLENGE_OUT_OF_TIME" in result.reason_codes, result.reason_codes
    assert "before" in next(
        r.message for r in result.reasons if r.code.value == "CHALLENGE_OUT_OF_TIME"
    )
