"""Rendered challenge clips: the Face Landmarker sees what the ground truth says."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

# benchmarks/ is not an installed package; plain `pytest` puts only tests/ on sys.path.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import render  # noqa: E402

SIZE = (240, 320)  # small clips keep the file fast
FPS = 15


@dataclass
class Measured:
    """Per-frame Face Landmarker output on a clip."""

    found: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    blink: np.ndarray  # mean of eyeBlinkLeft / eyeBlinkRight
    jaw: np.ndarray


def measure(frames: np.ndarray, fps: float, model_dir) -> Measured:
    """Run the landmarker in VIDEO mode over BGR frames."""
    n = len(frames)
    out = Measured(np.zeros(n, bool), *(np.full(n, np.nan) for _ in range(4)))
    with render.open_landmarker(model_dir, video=True) as lm:
        for i, frame in enumerate(frames):
            res = lm.detect_for_video(render.to_mp_image(frame), int(round(i * 1000 / fps)))
            if not res.face_landmarks:
                continue
            out.found[i] = True
            out.yaw[i], out.pitch[i] = render.yaw_pitch_from_matrix(
                res.facial_transformation_matrixes[0]
            )
            bs = {b.category_name: b.score for b in res.face_blendshapes[0]}
            out.blink[i] = (bs["eyeBlinkLeft"] + bs["eyeBlinkRight"]) / 2
            out.jaw[i] = bs["jawOpen"]
    return out


@pytest.fixture(scope="module")
def face(model_dir, data_dir):
    return render.detect_photo_face(data_dir / "faces/deepface/img33.jpg", model_dir)


@pytest.fixture(scope="module")
def live(face, model_dir):
    clip = render.render_live_frames(
        "", "turn_left,turn_right,blink,open_mouth", size=SIZE, fps=FPS, seed=0, face=face
    )
    return clip, measure(clip.frames, FPS, model_dir)


def _frames_of(truth: render.GroundTruth, kind: str) -> tuple[int, int, int]:
    a = next(a for a in truth.actions if a.kind == kind)
    return tuple(int(round(t * truth.fps)) for t in (a.start, a.peak, a.end))


def _neutral(truth: render.GroundTruth) -> np.ndarray:
    t = np.arange(truth.frames) / truth.fps
    return np.array([not render.active_actions(truth, s) for s in t])


def test_face_found_in_every_frame(live):
    _, m = live
    assert m.found.all()


def test_yaw_follows_script(live):
    clip, m = live
    gt = np.array(clip.truth.yaw_deg)
    err = np.abs(m.yaw - gt)
    assert err.mean() < 3.0, err.mean()
    assert err.max() < 8.0, err.max()


def test_yaw_sign_convention(live):
    """turn_left (person's own left = image right) gives positive yaw, turn_right negative."""
    clip, m = live
    _, peak_l, _ = _frames_of(clip.truth, "turn_left")
    _, peak_r, _ = _frames_of(clip.truth, "turn_right")
    assert m.yaw[peak_l] > 15 and m.yaw[peak_r] < -15
    assert np.sign(m.yaw[peak_l]) == -np.sign(m.yaw[peak_r])


def test_turn_left_moves_nose_to_image_right(face):
    still = render.render_live_frames("", "", size=SIZE, fps=FPS, seed=0, face=face, sway=False)
    rig = render.build_rig(face, SIZE)
    dst0, _ = render.pose_points(rig, rig.head, 0, 0, 0, np.zeros(2))
    dst1, _ = render.pose_points(rig, rig.head, 20, 0, 0, np.zeros(2))
    assert dst1[1, 0] > dst0[1, 0] + 5  # landmark 1 is the nose tip
    assert still.truth.attack is None


def test_blink_closes_eyes(live):
    clip, m = live
    start, _, end = _frames_of(clip.truth, "blink")
    base = np.median(m.blink[_neutral(clip.truth)])
    assert m.blink[start : end + 1].max() > base + 0.15


def test_open_mouth_raises_jaw(live):
    clip, m = live
    _, peak, _ = _frames_of(clip.truth, "open_mouth")
    base = np.median(m.jaw[_neutral(clip.truth)])
    assert m.jaw[peak] > max(0.2, base + 0.15)


def test_deterministic_with_seed(face):
    kw = dict(size=(96, 128), fps=10, face=face, duration=1.5)
    a = render.render_live_frames("", "blink", seed=3, **kw)
    b = render.render_live_frames("", "blink", seed=3, **kw)
    c = render.render_live_frames("", "blink", seed=4, **kw)
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert a.truth == b.truth


def test_ground_truth_json_written(face, tmp_path):
    out = render.render_live(
        "", "smile,turn_right", tmp_path / "clip.mp4", size=(96, 128), fps=10, face=face
    )
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["fps"] == 10 and doc["attack"] is None
    assert [a["kind"] for a in doc["actions"]] == ["smile", "turn_right"]
    for a in doc["actions"]:
        assert a["start"] < a["peak"] < a["end"]
    truth = render.load_ground_truth(out)
    assert truth.frames == doc["frames"] == len(truth.yaw_deg)
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == truth.frames
    cap.release()


@pytest.mark.parametrize("kind", render.ATTACK_KINDS)
def test_attack_clips(face, kind, tmp_path):
    clip = render.render_attack_frames("", kind, size=(96, 128), fps=10, duration=1.0, face=face)
    assert clip.frames.shape == (10, 96, 128, 3)
    assert clip.truth.attack == kind and clip.truth.actions == ()
    out = render.write_clip(clip, tmp_path / f"{kind}.mp4")
    assert render.load_ground_truth(out).attack == kind


def test_unknown_action_rejected():
    with pytest.raises(ValueError):
        render.parse_script("blink,wink")


def test_cli_writes_clip_and_contact_sheet(tmp_path, model_dir, data_dir):
    sheet = tmp_path / "sheet.png"
    rc = render.main(
        [
            "--photo",
            str(data_dir / "faces/deepface/img33.jpg"),
            "--attack",
            "still",
            "--out",
            str(tmp_path),
            "--size",
            "96x128",
            "--fps",
            "10",
            "--duration",
            "1",
            "--model-dir",
            str(model_dir),
            "--contact-sheet",
            str(sheet),
        ]
    )
    assert rc == 0
    assert (tmp_path / "img33_still_s0.mp4").is_file()
    assert (tmp_path / "img33_still_s0.json").is_file()
    assert cv2.imread(str(sheet)) is not None
