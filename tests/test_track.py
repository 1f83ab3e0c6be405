"""Subject tracking: one person is never split, a different person is found, and second
faces are told apart (liveness.track), on arrays and on real clips."""

from __future__ import annotations

import numpy as np
import pytest

from liveness.track import identity_track, other_face_kind
from liveness.video import load_video


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def person(rng, centre, n, spread=0.4):
    return [
        unit(centre + spread * rng.normal(size=centre.size) / np.sqrt(centre.size))
        for _ in range(n)
    ]


def test_one_odd_keyframe_is_an_outlier_not_a_change():
    rng = np.random.default_rng(0)
    a = unit(rng.normal(size=128))
    frames = person(rng, a, 6)
    frames.insert(3, unit(rng.normal(size=128)))  # one frame unlike the rest
    t = identity_track(np.stack(frames), different_below=0.115, min_run=2)
    assert not t.changed and t.outliers == [3]


def test_a_run_of_another_face_is_a_change_even_when_it_is_half_the_clip():
    rng = np.random.default_rng(1)
    a, b = unit(rng.normal(size=128)), unit(rng.normal(size=128))
    t = identity_track(np.stack(person(rng, a, 4) + person(rng, b, 4)), 0.115, 2)
    assert t.changed and t.min_similarity < 0.115


def test_second_face_kinds():
    kw = dict(same_person_above=0.315, flat_below=0.1)
    assert other_face_kind(0.9, 0.6, 0.9, **kw) == "reflection"
    assert other_face_kind(0.9, 0.05, 0.02, **kw) == "poster"
    assert other_face_kind(0.4, 0.05, 0.9, **kw) == "background"
    assert other_face_kind(0.9, 0.05, 0.9, **kw) == "person"


@pytest.mark.slow
def test_real_clip_with_head_turns_and_a_mask_is_one_person(verifier, data_dir):
    clip = data_dir / "videos-wild/nhtlongcs__liveness-detection__0.mp4"
    ref = load_video(clip, sample_fps=2.0).frames[4].image
    r = verifier.verify(clip, ref)
    assert "SUBJECT_CHANGED" not in r.reason_codes, r.quality
    assert r.quality["identity_min_similarity"] > 0.115


@pytest.mark.slow
def test_two_real_people_spliced_is_subject_changed(verifier, data_dir):
    a = load_video(data_dir / "videos/talking_head_wda_1.mp4", sample_fps=15.0).frames
    b = load_video(data_dir / "videos/talking_head_wda_2.mp4", sample_fps=15.0).frames
    frames = [(f.t, f.image) for f in a[:60]] + [(4.0 + f.t, f.image) for f in b[:60]]
    r = verifier.verify(frames, a[10].image)
    assert "SUBJECT_CHANGED" in r.reason_codes and r.decision == "reject", r.quality


def side_by_side(left: list, right_of) -> list:
    """(t, image) frames with ``right_of(frame)`` pasted to the right of each frame."""
    out = []
    for f in left:
        h, w = f.image.shape[:2]
        canvas = np.full((h, 2 * w, 3), 100, np.uint8)
        canvas[:, :w] = f.image
        r = right_of(f)
        rh, rw = r.shape[:2]
        canvas[(h - rh) // 2 : (h - rh) // 2 + rh, w + (w - rw) // 2 : w + (w - rw) // 2 + rw] = r
        out.append((f.t, canvas))
    return out


@pytest.mark.slow
def test_a_reflection_is_a_warning_and_a_second_person_is_multiple_faces(verifier, data_dir):
    import cv2

    a = load_video(data_dir / "videos/talking_head_wda_1.mp4", sample_fps=10.0).frames[:50]
    b = load_video(data_dir / "videos/talking_head_wda_2.mp4", sample_fps=10.0).frames[:50]
    ref = a[5].image

    def mirror(f):  # the subject's own face, flipped and smaller: a mirror behind
        return cv2.resize(f.image[:, ::-1], None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)

    r = verifier.verify(side_by_side(a, mirror), ref)
    kinds = {d["kind"] for d in r.quality["other_faces"]}
    assert "MULTIPLE_FACES" not in r.reason_codes and kinds == {"reflection"}, r.quality
    by_index = {round(f.t, 3): f for f in b}

    def other(f):
        return by_index.get(round(f.t, 3), b[-1]).image

    r = verifier.verify(side_by_side(a, other), ref)
    assert "MULTIPLE_FACES" in r.reason_codes and r.decision == "reject", r.quality


@pytest.mark.slow
def test_masked_face_the_landmarker_cannot_follow_goes_to_review(verifier, data_dir):
    clip = data_dir / "videos-wild/nam157__zalo-challenge__2.mp4"
    r = verifier.verify(clip, load_video(clip, sample_fps=4.0).frames[2].image)
    assert r.decision == "review" and r.reason_codes == ["NO_FACE"], r.to_dict()["reasons"]
    assert "covering" in r.reasons[0].message
