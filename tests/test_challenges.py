"""Active-liveness action detection: real clips checked by eye, plus synthetic plumbing.

Blink ground truth below was made by stepping through every frame of each clip (eye crops
upscaled into contact sheets) and writing down the frames where the lids cover the pupils;
nothing here was read off the detector. Frame numbers are indices in the decoded stream
(``Frame.index``, 0-based), so they hold at any sampling rate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from liveness.actions import ACTIONS, Action
from liveness.challenges import (
    ActionEvent,
    DetectorConfig,
    Thresholds,
    check_sequence,
    detect_actions,
    mode,
)
from liveness.landmarks import FaceLandmarks, FaceMesh
from liveness.video import load_video

# --- ground truth checked by eye ------------------------------------------------------------
# (first, last) frame of each blink: from the first frame with the lids clearly lowered to
# the last one before they are back open.
BLINKS_BY_EYE: dict[str, list[tuple[int, int]]] = {
    # 23.86 fps selfie. Blinks at t = 0.42, 1.68, 3.44, 4.65, 9.26, 10.0 s. Frames 137-194
    # (t = 5.7-8.1 s) and 263-327 (t = 11.0-13.7 s) are long deliberate eye closures of 2.4
    # and 2.7 s: not blinks, and the detector must not report them.
    "selfie_blinks.mp4": [(10, 13), (40, 43), (82, 85), (111, 114), (220, 223), (239, 242)],
    # 25 fps. Two closures 0.3 s apart during a laugh (lids down 23-27, half open 28-30,
    # down again 31-34), then two ordinary blinks. The head swings 17 degrees to the
    # person's right at 1.4-2.4 s (frames 35-60).
    "talking_head_wda_1.mp4": [(23, 27), (31, 34), (112, 114), (170, 173)],
    # 25 fps, ten blinks; 24-28 is a shallow one (a slit stays open), 33-37 follows it.
    "talking_head_wda_2.mp4": [
        (9, 12),
        (24, 28),
        (33, 37),
        (55, 58),
        (79, 82),
        (96, 98),
        (109, 112),
        (128, 131),
        (149, 152),
        (176, 179),
    ],  # fmt: skip
    # 96x128 at 25 fps, a woman with glasses: the landmarker does find the face. labels.csv
    # says two blinks: frames 14-17, and 37, where the eyes are closed for a single frame
    # (40 ms); the 15 fps sampling keeps frame 37 (it keeps 35, 37, 39), so both are seen.
    "blink_2x_tiny.mp4": [(14, 17), (37, 37)],
}
TOLERANCE_FRAMES = 2  # a detected peak may sit this far outside the range seen by eye


@pytest.fixture(scope="module")
def meshes_of(model_dir, data_dir):
    """``meshes_of(name, fps)``: landmarker output for a clip, computed once per module."""
    landmarks = FaceLandmarks(model_dir / "face_landmarker.task", workers=2)
    cache: dict[tuple[str, float], list[FaceMesh | None]] = {}

    def get(name: str, fps: float) -> list[FaceMesh | None]:
        if (name, fps) not in cache:
            video = load_video(data_dir / "videos" / name, sample_fps=fps)
            cache[(name, fps)] = landmarks.analyse(video.frames)
        return cache[(name, fps)]

    yield get
    landmarks.close()


@pytest.mark.parametrize(
    ("name", "fps"),
    [
        ("selfie_blinks.mp4", 15),
        ("selfie_blinks.mp4", 0),  # 0: every frame
        ("talking_head_wda_1.mp4", 15),
        ("talking_head_wda_2.mp4", 15),
        ("talking_head_wda_2.mp4", 0),
        ("blink_2x_tiny.mp4", 15),
        ("blink_2x_tiny.mp4", 0),
    ],
)
def test_blinks_match_those_seen_by_eye(meshes_of, name, fps):
    meshes = meshes_of(name, fps)
    assert all(m is not None for m in meshes), "the landmarker should see a face in every frame"
    blinks = [e for e in detect_actions(meshes) if e.kind == "blink"]
    truth = BLINKS_BY_EYE[name]
    unmatched = list(blinks)
    for first, last in truth:
        hits = [
            e
            for e in unmatched
            if first - TOLERANCE_FRAMES <= e.peak_frame <= last + TOLERANCE_FRAMES
        ]
        assert len(hits) == 1, f"blink at frames {first}-{last}: found {hits}"
        unmatched.remove(hits[0])
        assert hits[0].duration < 0.7
    assert not unmatched, f"blinks not seen by eye: {unmatched}"


def test_no_head_turn_in_a_talking_head(meshes_of):
    # wda_2 sways between -9 and +9 degrees of yaw while talking; no turn was asked for.
    events = detect_actions(meshes_of("talking_head_wda_2.mp4", 15))
    assert not [e for e in events if e.kind in ("turn_left", "turn_right")]
    # also not when the same clip is declared mirrored
    events = detect_actions(meshes_of("talking_head_wda_2.mp4", 15), mirrored=True)
    assert not [e for e in events if e.kind in ("turn_left", "turn_right")]


# --- renderer clips with known actions (benchmarks/render.py, issue 5) ---------------------
# Together the two scripts hold every kind, and turn_left / turn_right in both orders.
# Rendered at 30 degrees: the Face Landmarker reads a rendered 25-degree turn to the right
# as 21-24 degrees, too close to the 20-degree enter threshold for a stable test.
RENDER_SCRIPTS = (
    ("blink", "turn_left", "turn_right", "smile"),
    ("turn_right", "turn_left", "look_up", "look_down", "open_mouth"),
)


@pytest.fixture(scope="module")
def rendered(model_dir, data_dir):
    """``[(truth, events)]`` for each script, rendered at 15 fps from a real photo."""
    root = str(Path(__file__).resolve().parents[1])  # benchmarks/ is not an installed package
    if root not in sys.path:
        sys.path.insert(0, root)
    render = pytest.importorskip("benchmarks.render")
    landmarks = FaceLandmarks(model_dir / "face_landmarker.task", workers=2)
    photo = data_dir / "faces" / "face_recognition" / "biden.jpg"
    face = render.detect_photo_face(photo, model_dir)
    out = []
    for script in RENDER_SCRIPTS:
        clip = render.render_live_frames(
            photo, script, face=face, fps=15, size=(480, 360), seed=3, angle_deg=30.0
        )
        frames = [(i / clip.truth.fps, f) for i, f in enumerate(clip.frames)]
        meshes = landmarks.analyse(load_video(frames, sample_fps=15).frames)
        out.append((clip.truth, detect_actions(meshes)))
    landmarks.close()
    return out


@pytest.mark.parametrize("k", range(len(RENDER_SCRIPTS)))
def test_rendered_actions_are_detected_in_order(rendered, k):
    truth, events = rendered[k]
    for a in truth.actions:
        hits = [e for e in events if e.kind == a.kind and a.start <= e.peak <= a.end]
        assert len(hits) == 1, f"{a}: {[e for e in events if e.kind == a.kind]}"
    r = check_sequence(events, [a.kind for a in truth.actions])
    assert r.completed, r


def test_rendered_out_of_order_is_rejected(rendered):
    (_, first), (_, second) = rendered
    assert check_sequence(first, ["turn_left", "turn_right"]).completed
    r = check_sequence(first, ["turn_right", "turn_left"])
    assert not r.completed and r.out_of_order and r.failed_kind == "turn_left"
    assert check_sequence(second, ["turn_right", "turn_left"]).completed
    r = check_sequence(second, ["turn_left", "turn_right"])
    assert not r.completed and r.out_of_order and r.failed_kind == "turn_right"
    # and what the second clip did not show
    assert check_sequence(second, ["blink"]).message == "We did not see you blink"


# --- synthetic meshes: plumbing only --------------------------------------------------------
def _mesh(
    i: int,
    t: float,
    *,
    yaw: float = 0.0,
    pitch: float = 0.0,
    eye: float = 0.3,
    blink: float = 0.05,
    smile: float = 0.0,
    jaw: float = 0.0,
    lips: float = 0.0,
) -> FaceMesh:
    """A mesh with eye aspect ratio ``eye``, lip gap ``lips`` (of mouth width) and scores."""
    p = np.zeros((478, 3), np.float32)
    for outer, inner, pairs, x0 in (
        (33, 133, ((160, 144), (159, 145), (158, 153)), 100.0),
        (263, 362, ((387, 373), (386, 374), (385, 380)), 200.0),
    ):
        p[outer] = (x0, 100, 0)
        p[inner] = (x0 + 40, 100, 0)
        for k, (up, down) in enumerate(pairs):
            p[up] = (x0 + 10 + 10 * k, 100 - 20 * eye, 0)
            p[down] = (x0 + 10 + 10 * k, 100 + 20 * eye, 0)
    p[78], p[308] = (130, 200, 0), (190, 200, 0)
    p[13], p[14] = (160, 200 - 30 * lips, 0), (160, 200 + 30 * lips, 0)
    shapes = {
        "eyeBlinkLeft": blink,
        "eyeBlinkRight": blink,
        "mouthSmileLeft": smile,
        "mouthSmileRight": smile,
        "jawOpen": jaw,
    }
    return FaceMesh(i, t, p, shapes, yaw, pitch, 0.0)


def _clip(n: int, fps: float = 15.0, **tracks) -> list[FaceMesh]:
    """``n`` frames; each keyword is a per-frame array for that argument of :func:`_mesh`."""
    return [_mesh(i, i / fps, **{k: float(v[i]) for k, v in tracks.items()}) for i in range(n)]


def _pulse(n: int, a: int, b: int, base: float, value: float) -> np.ndarray:
    x = np.full(n, base)
    x[a:b] = value
    return x


def _kinds(events: list[ActionEvent]) -> list[str]:
    return [e.kind for e in events]


def test_action_strings():
    assert ACTIONS == (
        "blink", "turn_left", "turn_right", "look_up", "look_down", "smile", "open_mouth",
    )  # fmt: skip
    assert Action("turn_left") == "turn_left"


def test_hysteresis_noise_around_enter_threshold_gives_one_event_at_most():
    # Yaw dithering around the 20-degree enter threshold for 1 s must not chatter into
    # many events: it stays above the 12-degree exit threshold, so it is one held turn.
    n = 60
    rng = np.random.default_rng(0)
    yaw = np.zeros(n)
    yaw[20:35] = 20 + rng.uniform(-3, 3, 15)
    events = detect_actions(_clip(n, yaw=yaw))
    assert _kinds(events) == ["turn_left"]
    # Noise that never reaches enter gives nothing, however often it crosses exit.
    yaw = np.where(np.arange(n) % 2, 16.0, 0.0)
    assert detect_actions(_clip(n, yaw=yaw)) == []


def test_brief_spike_is_not_a_turn_and_long_closure_is_not_a_blink():
    n = 90
    yaw = _pulse(n, 30, 31, 0.0, 30.0)  # one frame at 30 degrees: a tracking glitch
    eye = _pulse(n, 40, 75, 0.3, 0.03)  # eyes shut for 2.3 s
    blink = _pulse(n, 40, 75, 0.05, 0.75)
    assert detect_actions(_clip(n, yaw=yaw, eye=eye, blink=blink)) == []


def test_blink_detected_with_times_and_frames():
    n = 45
    eye = _pulse(n, 20, 23, 0.3, 0.03)
    blink = _pulse(n, 20, 23, 0.05, 0.75)
    (e,) = detect_actions(_clip(n, eye=eye, blink=blink))
    assert (e.kind, e.start_frame, e.end_frame) == ("blink", 20, 22)
    assert e.start == pytest.approx(20 / 15) and e.end == pytest.approx(22 / 15)
    assert 0.5 <= e.confidence <= 1.0 and e.value > 0.8


def test_baseline_of_an_already_turned_face():
    # The person holds their head 25 degrees to their left most of the clip (an off-centre
    # phone), then turns 22 degrees further to their right of that: only a turn_right.
    n = 75
    yaw = _pulse(n, 40, 55, 25.0, 3.0)
    events = detect_actions(_clip(n, yaw=yaw))
    assert _kinds(events) == ["turn_right"]
    assert events[0].baseline == pytest.approx(25.0)
    # Half the clip turned: the baseline is the steadily held neutral pose (mode), not the
    # median or mean (about 14 degrees, which would hide the turn).
    yaw = np.concatenate([np.linspace(-1, 1, 35), np.linspace(0, 28, 5), np.linspace(24, 32, 35)])
    assert abs(mode(yaw, 0.4)) < 1.5
    assert _kinds(detect_actions(_clip(len(yaw), yaw=yaw))) == ["turn_left"]


def test_mirrored_swaps_left_and_right():
    n = 60
    yaw = _pulse(n, 20, 35, 0.0, 28.0)
    assert _kinds(detect_actions(_clip(n, yaw=yaw))) == ["turn_left"]
    assert _kinds(detect_actions(_clip(n, yaw=yaw), mirrored=True)) == ["turn_right"]
    pitch = _pulse(n, 20, 35, 0.0, 20.0)
    assert _kinds(detect_actions(_clip(n, pitch=pitch), mirrored=True)) == ["look_up"]
    assert _kinds(detect_actions(_clip(n, pitch=-pitch))) == ["look_down"]


def test_smile_and_open_mouth_need_hold_and_open_lips():
    n = 60
    smile = _pulse(n, 10, 25, 0.05, 0.8)
    jaw = _pulse(n, 35, 50, 0.02, 0.6)
    lips = _pulse(n, 35, 50, 0.02, 0.5)
    assert _kinds(detect_actions(_clip(n, smile=smile, jaw=jaw, lips=lips))) == [
        "smile",
        "open_mouth",
    ]
    # The jaw drops but the lips stay shut: not an open mouth.
    assert detect_actions(_clip(n, jaw=jaw)) == []


def test_an_open_mouth_that_stretches_the_corners_is_not_also_a_smile():
    n = 60
    # The landmarker scores mouth corners as smiling while the mouth is wide open
    # (rendered open_mouth clips: smile +0.5 with jaw +0.2-0.35).
    jaw = _pulse(n, 20, 40, 0.02, 0.5)
    lips = _pulse(n, 20, 40, 0.02, 0.5)
    corners = _pulse(n, 20, 40, 0.05, 0.7)
    assert _kinds(detect_actions(_clip(n, smile=corners, jaw=jaw, lips=lips))) == ["open_mouth"]
    # the same corners with the jaw closed are a smile
    assert _kinds(detect_actions(_clip(n, smile=corners))) == ["smile"]


def test_missing_faces_are_gaps():
    n = 60
    yaw = _pulse(n, 20, 40, 0.0, 28.0)
    clip: list[FaceMesh | None] = list(_clip(n, yaw=yaw))
    clip[28] = None  # one lost frame inside the turn: still one turn
    assert _kinds(detect_actions(clip)) == ["turn_left"]
    for i in range(26, 34):  # lost for 0.5 s: two separate holds
        clip[i] = None
    assert _kinds(detect_actions(clip)) == ["turn_left", "turn_left"]
    assert detect_actions([None, None]) == []


def test_thresholds_are_validated():
    with pytest.raises(ValueError):
        Thresholds(enter=10, exit=12, full=20)
    cfg = DetectorConfig(turn=Thresholds(10.0, 5.0, 20.0, 0.2))
    yaw = _pulse(60, 20, 35, 0.0, 12.0)
    assert _kinds(detect_actions(_clip(60, yaw=yaw), config=cfg)) == ["turn_left"]


def _ev(kind: str, start: float, peak: float, end: float, conf: float = 0.9) -> ActionEvent:
    f = round(start * 15)
    return ActionEvent(kind, start, peak, end, conf, 1.0, 0.0, f, f, f)


EVENTS = [
    _ev("blink", 0.5, 0.55, 0.6),
    _ev("turn_left", 1.0, 1.5, 2.0),
    _ev("turn_right", 2.1, 2.6, 3.2),
    _ev("smile", 3.5, 4.0, 4.5, conf=0.3),
]


def test_check_sequence_in_order():
    r = check_sequence(EVENTS, ["blink", "turn_left", "turn_right"])
    assert r.completed and not r.out_of_order and r.failed_step is None and r.message is None
    assert [s.event for s in r.steps] == EVENTS[:3]
    # a step may start while the previous one is still returning, after its peak
    r = check_sequence([_ev("turn_left", 1, 1.5, 2.2), _ev("blink", 1.8, 1.8, 1.9)],
                       ["turn_left", "blink"])  # fmt: skip
    assert r.completed


def test_check_sequence_out_of_order():
    r = check_sequence(EVENTS, ["turn_right", "turn_left"])
    assert not r.completed and r.out_of_order
    assert (r.failed_step, r.failed_kind) == (1, "turn_left")
    assert r.steps[0].event is EVENTS[2] and r.steps[1].event is None


def test_check_sequence_missing_step_and_message():
    r = check_sequence(EVENTS, ["blink", "look_up", "turn_left"])
    assert not r.completed and not r.out_of_order
    assert (r.failed_step, r.failed_kind) == (1, "look_up")
    assert r.message == "We did not see you look up"
    r = check_sequence(EVENTS, ["turn_left", "turn_left"])  # one turn cannot count twice
    assert r.failed_step == 1 and not r.out_of_order
    assert check_sequence(EVENTS, ["blink", "blink"]).failed_step == 1
    # low-confidence events do not count
    r = check_sequence(EVENTS, ["smile"])
    assert r.failed_kind == "smile" and r.message == "We did not see you smile"
    assert check_sequence(EVENTS, ["smile"], min_confidence=0.2).completed
    r = check_sequence(EVENTS, ["turn_right", "turn_left"])
    assert r.message == "We saw the actions, but not in the order asked"
    with pytest.raises(ValueError):
        check_sequence(EVENTS, ["wink"])


def test_check_sequence_window():
    assert check_sequence(EVENTS, ["turn_left"], window=(0.8, 2.5)).completed
    r = check_sequence(EVENTS, ["blink", "turn_left"], window=(0.8, 5.0))
    assert (r.failed_step, r.failed_kind) == (0, "blink") and not r.out_of_order
    r = check_sequence(EVENTS, ["turn_right"], window=(0.0, 3.0))  # ends after the window
    assert not r.completed and r.steps[0].event is None


def test_one_eye_closing_is_not_a_blink():
    n = 45
    ms = _clip(n, eye=_pulse(n, 20, 23, 0.3, 0.03), blink=_pulse(n, 20, 23, 0.05, 0.7))
    assert _kinds(detect_actions(ms)) == ["blink"]
    # the same signals with only the right eye's lids moving (a glint, a photo misread)
    for m in ms[20:23]:
        for up, down in ((387, 373), (386, 374), (385, 380)):
            m.points[up, 1], m.points[down, 1] = 100 - 6, 100 + 6
    assert detect_actions(ms) == []
