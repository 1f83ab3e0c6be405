"""Challenge-response verification end to end: rendered clips of known actions from a real
photo, real talking-head video, and the session protocol inside ``verify``."""

from __future__ import annotations

import json
import secrets

import cv2
import pytest
from media import frame_at

from benchmarks.render import render_live
from liveness import Verifier
from liveness.cli import main as cli_main
from liveness.sessions import (
    ChallengeClaims,
    ChallengeGate,
    Keyring,
    MemorySessionStore,
    encode_token,
)

PHOTO = "faces/deepface/img33.jpg"


def issue(gate: ChallengeGate, actions, *, ttl=120, now=None, account="alice"):
    """A session for exactly these actions (issue() draws at random; tests need a script)."""
    import time

    iat = int(time.time() if now is None else now)
    claims = ChallengeClaims(
        secrets.token_urlsafe(16),
        secrets.token_urlsafe(16),
        account,
        tuple(actions),
        iat,
        iat + ttl,
        gate.keyring.current,
    )
    gate.store.record_issued(claims)
    return encode_token(gate.keyring, claims)


@pytest.fixture(scope="module")
def gate():
    return ChallengeGate(Keyring.single(b"k" * 32), MemorySessionStore())


@pytest.fixture(scope="module")
def verifier(model_dir, gate):
    with Verifier(model_dir, challenges=gate) as v:
        yield v


@pytest.fixture(scope="module")
def clips(tmp_path_factory, data_dir, model_dir):
    out = tmp_path_factory.mktemp("clips")
    photo = data_dir / PHOTO
    kw = dict(size=(360, 480), fps=15, seed=3, angle_deg=30, model_dir=model_dir)
    return {
        "left_blink_right": render_live(photo, "turn_left,blink,turn_right", out / "lbr.mp4", **kw),
        "right_then_left": render_live(photo, "turn_right,turn_left", out / "rl.mp4", **kw),
        "left_then_right": render_live(photo, "turn_left,turn_right", out / "lr.mp4", **kw),
    }


def test_requested_actions_in_order_complete_the_challenge(verifier, gate, clips, data_dir):
    token = issue(gate, ["turn_left", "blink", "turn_right"])
    result = verifier.verify(clips["left_blink_right"], data_dir / PHOTO, challenge=token)
    ch = result.liveness.challenge
    assert ch["completed"], ch
    assert [s["kind"] for s in ch["steps"]] == ["turn_left", "blink", "turn_right"]
    assert all(s["found"] and s["start"] <= s["peak"] <= s["end"] for s in ch["steps"])
    assert not any(c.startswith("CHALLENGE") for c in result.reason_codes)
    assert result.match.similarity > 0.5


def test_same_video_with_a_fresh_token_is_refused(verifier, gate, clips, data_dir):
    # the clip may already have been used by the test above; submit it twice to be sure
    first = verifier.verify(
        clips["left_then_right"],
        data_dir / PHOTO,
        challenge=issue(gate, ["turn_left", "turn_right"]),
    )
    assert "VIDEO_REUSED" not in first.reason_codes
    again = verifier.verify(
        clips["left_then_right"],
        data_dir / PHOTO,
        challenge=issue(gate, ["turn_left", "turn_right"]),
    )
    assert again.decision == "reject" and again.reason_codes == ["VIDEO_REUSED"]


def test_a_token_works_once(verifier, gate, clips, data_dir):
    token = issue(gate, ["turn_right", "turn_left"])
    first = verifier.verify(clips["right_then_left"], data_dir / PHOTO, challenge=token)
    assert first.liveness.challenge["completed"]
    second = verifier.verify(
        clips["left_blink_right"].read_bytes() + b"\0", data_dir / PHOTO, challenge=token
    )
    assert second.decision == "reject" and second.reason_codes == ["SESSION_ALREADY_USED"]


def test_actions_out_of_order_are_rejected(model_dir, data_dir, tmp_path):
    gate = ChallengeGate(Keyring.single(b"k" * 32), MemorySessionStore())
    photo = data_dir / PHOTO
    clip = render_live(
        photo,
        "turn_right,turn_left",
        tmp_path / "rl.mp4",
        size=(360, 480),
        fps=15,
        seed=5,
        angle_deg=30,
        model_dir=model_dir,
    )
    with Verifier(model_dir, challenges=gate) as v:
        result = v.verify(clip, photo, challenge=issue(gate, ["turn_left", "turn_right"]))
    assert result.decision == "reject"
    assert "CHALLENGE_OUT_OF_ORDER" in result.reason_codes


def test_missing_action_names_the_step(verifier, gate, data_dir):
    video = data_dir / "videos/talking_head_wda_2.mp4"
    token = issue(gate, ["blink", "turn_left", "smile"])
    result = verifier.verify(video, frame_at(video, 7.5), challenge=token)
    assert result.decision == "reject"
    reason = next(r for r in result.reasons if r.code.value == "CHALLENGE_NOT_COMPLETED")
    assert reason.detail == "turn_left"
    assert "turn your head to your left" in reason.message and "step 2 of 3" in reason.message


def test_forged_and_expired_tokens(verifier, gate, data_dir):
    video = data_dir / "videos/talking_head_wda_2.mp4"
    forger = ChallengeGate(Keyring.single(b"x" * 32), gate.store)
    forged = issue(forger, ["blink"])
    r = verifier.verify(video, data_dir / PHOTO, challenge=forged)
    assert r.decision == "reject" and r.reason_codes == ["TOKEN_INVALID"]
    tampered = issue(gate, ["blink"])
    body, sig = tampered.split(".")
    r = verifier.verify(video, data_dir / PHOTO, challenge=body[:-2] + "AA." + sig)
    assert r.reason_codes == ["TOKEN_INVALID"]
    old = issue(gate, ["blink"], ttl=60, now=1_000_000)
    r = verifier.verify(video, data_dir / PHOTO, challenge=old)
    assert r.decision == "reject" and r.reason_codes == ["SESSION_EXPIRED"]


def test_token_without_a_gate_is_a_setup_error(model_dir, data_dir):
    with Verifier(model_dir) as v, pytest.raises(liveness_setup_error()):
        v.verify(data_dir / "videos/talking_head_wda_2.mp4", data_dir / PHOTO, challenge="x.y")


def liveness_setup_error():
    from liveness.errors import SetupError

    return SetupError


def test_cli_challenge_new_verify_and_inspect(model_dir, data_dir, tmp_path, capsys, monkeypatch):
    store = tmp_path / "sessions.sqlite3"
    monkeypatch.delenv("LIVENESS_SECRET_KEY", raising=False)
    assert cli_main(["challenge", "new", "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "LIVENESS_SECRET_KEY" in err and "--key-file" in err

    monkeypatch.setenv("LIVENESS_SECRET_KEY", "Vq8Lr2Xp7Tn4Wc9Kz3Bm6Hd1")
    assert (
        cli_main(["challenge", "new", "--actions", "4", "--ttl", "60", "--store", str(store)]) == 0
    )
    issued = json.loads(capsys.readouterr().out)
    assert len(issued["actions"]) == 4 and len(issued["instructions"]) == 4 and issued["token"]
    assert all(a != b for a, b in zip(issued["actions"], issued["actions"][1:], strict=False))

    video = data_dir / "videos/talking_head_wda_2.mp4"
    ref = tmp_path / "ref.png"
    cv2.imwrite(str(ref), frame_at(video, 7.5))
    verify_args = [
        "verify",
        str(video),
        str(ref),
        "--json",
        "--model-dir",
        str(model_dir),
        "--challenge",
        issued["token"],
        "--store",
        str(store),
    ]
    code = cli_main(verify_args)
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["decision"] == "reject"
    assert out["reasons"][0]["code"] in {"CHALLENGE_NOT_COMPLETED", "CHALLENGE_OUT_OF_ORDER"}
    # the token is spent now
    cli_main(verify_args)
    assert json.loads(capsys.readouterr().out)["reasons"][0]["code"] == "SESSION_ALREADY_USED"

    assert cli_main(["inspect", str(video), "--json", "--model-dir", str(model_dir)]) == 0
    seen = json.loads(capsys.readouterr().out)
    blinks = [a for a in seen["actions"] if a["kind"] == "blink"]
    assert len(blinks) >= 8
    assert all({"kind", "start", "peak", "end", "confidence"} <= set(a) for a in seen["actions"])


def test_cli_refuses_new_sessions_for_a_rate_limited_account(tmp_path, capsys, monkeypatch):
    import time

    from liveness.sessions import SQLiteSessionStore

    store_path = tmp_path / "sessions.sqlite3"
    monkeypatch.setenv("LIVENESS_SECRET_KEY", "Vq8Lr2Xp7Tn4Wc9Kz3Bm6Hd1")
    store = SQLiteSessionStore(store_path)
    for _ in range(5):
        store.record_failure("bob", time.time())
    assert cli_main(["challenge", "new", "--account", "bob", "--store", str(store_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "RATE_LIMITED" in err and "Wait" in err
    assert cli_main(["challenge", "new", "--account", "carol", "--store", str(store_path)]) == 0
