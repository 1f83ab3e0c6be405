"""Live sessions (liveness.stream) on the real models, fed by scripted clients
(benchmarks.stream) on a simulated clock: a real live clip answering the prompts passes only
with the screen's light on the face; replayed, rendered, early and late answers fail."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
from media import frame_at

from benchmarks.render import render_live_frames
from benchmarks.stream import EVERY_ACTION, Client, Early, Late, Loop, load_source, run_session
from liveness import Verifier
from liveness.stream import LiveSession, StreamConfig, StreamInputError

HEAD_POSE = "videos-wild/AlaaAElshafei__Head-Pose-Estimation__test_video.mp4"
PHOTO = "faces/deepface/img33.jpg"
STEPS = ["turn_right", "turn_left"]


@pytest.fixture(scope="module")
def verifier(model_dir):
    with Verifier(model_dir) as v:
        yield v


@pytest.fixture(scope="module")
def live(verifier, data_dir):
    """The head-pose clip (a real person turning right, left, up, down) and its reference."""
    path = data_dir / HEAD_POSE
    return load_source(path, verifier), verifier.enroll(frame_at(path, 2.0))


@pytest.fixture(scope="module")
def rendered(verifier, data_dir):
    """A clip rendered from one photo doing every action in a row, and the photo's template."""
    clip = render_live_frames(data_dir / PHOTO, EVERY_ACTION, size=(480, 360), fps=10, seed=7)
    src = load_source([(i / 10, f) for i, f in enumerate(clip.frames)], verifier)
    return src, verifier.enroll(data_dir / PHOTO)


def test_live_clip_answering_prompts_with_screen_light_passes(verifier, live):
    src, ref = live
    result, session = run_session(verifier, ref, Client(src), actions=STEPS, seed=11)
    ch = result.liveness.challenge
    assert result.decision == "accept", (result.reason_codes, ch)
    assert ch["completed"] and ch["outcome"] == "complete"
    assert ch["screen_light"]["followed"] and ch["screen_light"]["correlation"] > 0.8
    for step in ch["steps"]:  # each response began after its prompt, within a reaction time
        assert step["prompt_at"] + 0.2 <= step["response_start"] <= step["prompt_at"] + 3.0
    # a step is revealed only after the previous one was seen, after a pause
    kinds = [(m.type, m.step) for m in session.messages if m.type in ("prompt", "seen")]
    assert kinds == [("prompt", 0), ("seen", 0), ("prompt", 1), ("seen", 1)]
    seen0 = next(m.at for m in session.messages if m.type == "seen" and m.step == 0)
    prompt1 = next(m.at for m in session.messages if m.type == "prompt" and m.step == 1)
    assert prompt1 - seen0 >= StreamConfig().pause_s[0] - 0.11
    assert result.match.similarity > 0.5 and result.liveness.score is not None
    assert session._frames == []  # frames are dropped once finished


def test_same_frames_without_the_screen_light_fail(verifier, live):
    src, ref = live
    result, _ = run_session(verifier, ref, Client(src, light=0.0), actions=STEPS, seed=11)
    assert result.decision == "reject"
    assert "SCREEN_LIGHT_NOT_REFLECTED" in result.reason_codes
    assert not result.liveness.challenge["screen_light"]["followed"]


@pytest.mark.parametrize("seed", [1, 2])
def test_universal_clip_played_whatever_the_prompts_fails(verifier, rendered, seed):
    src, ref = rendered
    result, _ = run_session(verifier, ref, Loop(src), actions=STEPS, seed=seed)
    assert result.decision == "reject", result.reason_codes
    assert "SCREEN_LIGHT_NOT_REFLECTED" in result.reason_codes


def test_photo_animation_following_the_prompts_fails(verifier, rendered):
    src, ref = rendered
    result, _ = run_session(verifier, ref, Client(src, light=0.0), actions=STEPS, seed=3)
    assert result.decision == "reject", result.reason_codes
    assert "SCREEN_LIGHT_NOT_REFLECTED" in result.reason_codes


def test_correct_clip_sent_too_early_fails_naming_the_step(verifier, live):
    src, ref = live
    result, session = run_session(verifier, ref, Early(src), actions=STEPS, seed=5)
    assert result.decision == "reject"
    timing = [r for r in result.reasons if r.code.value.startswith("CHALLENGE")]
    assert timing and timing[0].code.value == "CHALLENGE_OUT_OF_TIME", result.reason_codes
    assert "step 1" in timing[0].message and "before" in timing[0].message
    assert session.outcome == "failed"


def test_correct_clip_sent_too_late_fails(verifier, live):
    src, ref = live
    result, session = run_session(verifier, ref, Late(src), actions=STEPS, seed=5)
    assert result.decision == "reject"
    assert session.outcome == "failed"
    codes = result.reason_codes
    assert "CHALLENGE_OUT_OF_TIME" in codes or "CHALLENGE_NOT_COMPLETED" in codes, codes
    assert "step 1" in (result.reasons[0].detail or "")


def test_bad_frames_get_typed_errors_and_frames_after_the_end_are_ignored(verifier, live):
    _, ref = live
    s = LiveSession(verifier, ref, actions=["blink"], rng=random.Random(0))
    with s:
        with pytest.raises(RuntimeError):
            s.push(b"x", now=0.0)  # not started
        s.start(now=0.0)
        with pytest.raises(StreamInputError):
            s.push(b"not a jpeg", now=0.1)
        with pytest.raises(StreamInputError):
            s.push(b"\xff" * (s.config.max_frame_bytes + 1), now=0.2)
        with pytest.raises(StreamInputError):
            s.push(np.zeros((10, 10), np.float32), now=0.3)
        ok, jpg = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))
        s.push(jpg.tobytes(), now=0.4)
        # past the time limit: the session ends, later frames are ignored
        msgs = s.push(jpg.tobytes(), now=s.config.max_duration_s + 1)
        assert msgs[-1].type == "end" and s.outcome == "timeout"
        assert s.push(jpg.tobytes(), now=s.config.max_duration_s + 2) == []
        result = s.finish()
    assert result.decision == "reject"
