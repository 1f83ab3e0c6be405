"""3D consistency (liveness.geometry): planes are flat, rigid heads are 3D, still people give
no evidence either way; measured on real clips and on prints made from them."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.attack_clips import load_victim, make_attack
from liveness.geometry import (
    RIGID,
    consistency,
    homography_residual,
    pair_homography_residual,
    pair_residuals,
    rigid_residual,
)
from liveness.landmarks import FaceLandmarks
from liveness.runtime import Runtime
from liveness.video import Frame, load_video


def test_residuals_on_exact_models():
    rng = np.random.default_rng(0)
    plane = rng.uniform(-1, 1, (40, 2))
    h = np.array([[1.1, 0.2, 0.3], [-0.1, 0.9, 0.1], [0.05, -0.08, 1.0]])
    q = np.c_[plane, np.ones(40)] @ h.T
    assert homography_residual(plane, q[:, :2] / q[:, 2:]) < 1e-9
    # A rigid 3D shape turned by 20 degrees: an affine camera explains it, a plane does not.
    pts = rng.uniform(-1, 1, (40, 3)) * [1, 1, 0.6]
    a = np.radians(20)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    turned = (pts @ rot.T)[:, :2]
    assert rigid_residual(pts, turned) < 1e-9
    assert homography_residual(pts[:, :2], turned) > 0.05


def test_pair_residuals_of_the_same_mesh_are_zero():
    rng = np.random.default_rng(1)
    mesh = rng.uniform(0, 100, (478, 3))
    assert max(pair_residuals(mesh, mesh)) < 1e-6
    assert len(RIGID) >= 30


@pytest.fixture(scope="module")
def landmarks(model_dir):
    lm = FaceLandmarks(Runtime(model_dir).path("face_landmarker"), workers=1)
    yield lm
    lm.close()


def meshes_of(frames, fps, landmarks):
    return landmarks.analyse([Frame(i, i / fps, f) for i, f in enumerate(frames)])


def test_a_turning_real_head_is_3d(landmarks, data_dir):
    v = load_video(data_dir / "videos/talking_head_wda_2.mp4", sample_fps=15)
    c = consistency(landmarks.analyse(v.frames))
    # measured: ratio 3.8 over 59 turning pairs (benchmarks/README.md, "3D consistency")
    assert c.verdict == "3d", c
    assert c.ratio > 2.5


def test_a_still_real_person_is_not_called_flat(landmarks, data_dir):
    v = load_video(data_dir / "videos/selfie_blinks.mp4", sample_fps=15)
    c = consistency(landmarks.analyse(v.frames[:60]))
    assert c.verdict == "no_evidence", c
    assert c.turning_pairs < 3


def test_a_print_tilted_to_fake_a_turn_is_flat(landmarks, data_dir):
    victim = load_victim(data_dir / "videos/talking_head_wda_2.mp4", landmarks, seconds=4.0)
    frames = make_attack(victim, "print_flat", seed=3)
    c = consistency(meshes_of(frames, victim.fps, landmarks))
    # measured: ratio 1.37 (live clips that turn: 1.87-6.6)
    assert c.verdict == "flat", c
    assert c.ratio < 1.6


def test_the_homography_residual_alone_is_the_one_of_all_three():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.normal(size=(478, 3)) * 50 + 200
        b = a + rng.normal(size=(478, 3))
        assert pair_homography_residual(a, b) == pair_residuals(a, b)[1]
