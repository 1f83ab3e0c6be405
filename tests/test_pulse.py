"""The pulse cue (liveness.pulse): the signal functions on traces with a known pulse, and
the region means on a real clip with a visible pulse."""

from __future__ import annotations

import numpy as np
import pytest

from liveness import pulse as P


def trace(seconds=8.0, fps=15.0, hz=1.2, amp=(0.05, 0.25, 0.12), noise=0.05, seed=0,
          jitter=0.0):  # fmt: skip
    """A BGR skin trace at uneven times with a pulse of ``amp`` grey levels per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 1 / fps)
    t = np.sort(t + rng.uniform(-jitter, jitter, len(t)))
    base = np.array([100.0, 130.0, 170.0])
    c = base + np.outer(np.sin(2 * np.pi * hz * t), amp) + rng.normal(0, noise, (len(t), 3))
    return t, c, np.full(len(t), 3000.0)


def test_a_pulse_is_found_at_its_frequency_with_uneven_frame_times():
    t, c, px = trace(hz=1.2, jitter=0.02)
    r = P.pulse(t, c, px)
    assert r.measurable and r.why is None
    assert r.hz == pytest.approx(1.2, abs=0.05)
    assert r.snr_db > 5
    assert r.seconds == pytest.approx(8.0, abs=0.2)


def test_no_pulse_and_a_brightness_swing_give_a_low_snr():
    t, c, px = trace(amp=(0, 0, 0))
    quiet = P.pulse(t, c, px)
    assert quiet.measurable and quiet.snr_db < 0
    # the same swing in every channel (light, exposure): POS cancels it
    t, c, px = trace(amp=(0, 0, 0))
    c = c * (1 + 0.05 * np.sin(2 * np.pi * 1.0 * t))[:, None]
    assert P.pulse(t, c, px).snr_db < 0


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"seconds": 2.0}, "s of face"),
        ({"fps": 3.0}, "frames a second"),
    ],
)
def test_too_little_is_not_measurable_rather_than_a_number(kwargs, why):
    t, c, px = trace(**kwargs)
    r = P.pulse(t, c, px)
    assert not r.measurable and r.snr_db is None and r.hz is None and why in r.why


def test_a_small_face_or_a_lost_face_is_not_measurable():
    t, c, px = trace()
    assert "too small" in P.pulse(t, c, px / 100).why
    c[::2] = np.nan  # half the frames without a face
    assert "face followed in" in P.pulse(t, c, px).why
    assert P.pulse([], np.zeros((0, 3))).why == "no face followed"


def test_a_gap_without_a_face_keeps_the_longest_stretch():
    t, c, px = trace(seconds=12.0)
    c[(t > 3.0) & (t < 4.0)] = np.nan  # 1 s lost: 8 s remain after it
    r = P.pulse(t, c, px)
    assert r.measurable
    assert r.hz == pytest.approx(1.2, abs=0.05)
    tt, cc = P.longest_run(t, c, 0.5)
    assert tt[0] >= 4.0 and np.isfinite(cc).all()


def test_region_means_follow_the_mesh():
    img = np.zeros((200, 200, 3), np.uint8)
    img[:, :, 1] = 80
    pts = np.zeros((478, 3))
    rng = np.random.default_rng(1)
    pts[:, :2] = rng.uniform(60, 140, (478, 2))
    m = P.roi_means(img, pts)
    assert m.shape == (3, 4)
    assert np.allclose(m[:, :3], [0, 80, 0]) and (m[:, 3] > 0).all()
    colour, n = P.pooled(m)
    assert np.allclose(colour, [0, 80, 0]) and n == m[:, 3].sum()
    gone = P.roi_means(img, pts + 1000)  # off the image
    assert (gone[:, 3] == 0).all() and np.isnan(gone[:, :3]).all()


@pytest.fixture(scope="module")
def landmarks(model_dir):
    from liveness.landmarks import FaceLandmarks
    from liveness.runtime import Runtime

    lm = FaceLandmarks(Runtime(model_dir).path("face_landmarker"), workers=1)
    yield lm
    lm.close()


def _clip(landmarks, path):
    from liveness.video import LAB_VIDEO_FORMATS, VideoLimits, load_video

    v = load_video(path, sample_fps=15.0, limits=VideoLimits(formats=LAB_VIDEO_FORMATS))
    return P.pulse_of_frames(v.frames, landmarks.analyse(v.frames))


def test_the_pulse_of_a_real_face_recorded_for_rppg_is_found(landmarks, data_dir):
    # the Eulerian Video Magnification "face" clip: a still face in even light, 10 s, whose
    # pulse is visible once magnified; the strongest pulse of the shared live clips
    r = _clip(
        landmarks,
        data_dir / "videos-wild/rohintangirala__eulerian-remote-heartrate-detection__face.mp4",
    )
    assert r.measurable, r.why
    assert r.snr_db > 6.0
    assert 40 <= 60 * r.hz <= 70  # a resting heart rate
    assert r.seconds == pytest.approx(10.0, abs=0.2)


def test_a_three_second_real_clip_is_not_measurable(landmarks, data_dir):
    r = _clip(landmarks, data_dir / "videos-wild/rizkiarm__LipNet__lbbc2a.mpg")
    assert not r.measurable and r.snr_db is None
    assert "s of face" in r.why and r.frames > 40


def test_the_benchmark_fits_its_threshold_without_the_subject_it_scores():
    from benchmarks.pulse import separation

    rows = [{"kind": "live", "subject": f"s{i}", "scores": {"pos": float(i)}} for i in range(20)]
    rows.append({"kind": "live", "subject": "s0", "scores": {"pos": None}})  # not measurable
    rows.append({"kind": "print", "subject": "s0", "scores": {"pos": 0.5}})
    rows.append({"kind": "print", "subject": "s19", "scores": {"pos": 0.5}})
    sep = separation(rows, "pos", live_pass=0.95)
    # t is the 5 % quantile of the other subjects' measurable live SNRs: without s0 it is 1,
    # so s0's print (0.5) fails; with s0 it is 0, so s19's print passes
    assert sep["loso_pass"]["print"] == {"clips": 2, "passed": 1, "rate": 0.5}
    assert sep["loso_pass"]["live"]["clips"] == 21
    assert sep["loso_pass"]["live"]["passed"] == 19  # s0 (0.0 < 1) and the unmeasurable one
    assert sep["auc_live_above_kind"]["print"] == pytest.approx(19 / 20)
