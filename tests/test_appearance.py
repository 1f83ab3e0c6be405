"""Events a photo cannot make (issue 9, item 3): a blink, smile or open mouth counts only
when the pixels of the eyes or mouth change beyond what the face's planar motion explains.

The prints replayed here are the generated attacks whose landmarks showed an open mouth or
a blink before the appearance check (``python -m benchmarks.event_pixels``): a frame-filling
lip-reading speaker printed flat and bent, and a small webcam face printed flat."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.attack_clips import load_victim, make_attack, write_clip
from liveness import Verifier, VerifierConfig
from liveness.actions import ACTIONS
from liveness.appearance import AppearanceThresholds, confirm_events, seen_in_pixels
from liveness.challenges import check_sequence, detect_actions
from liveness.video import LAB_VIDEO_FORMATS, VideoLimits, frame_at, load_video

LAB = VideoLimits(formats=LAB_VIDEO_FORMATS)
# (victim clip, attack kind, seed) as benchmarks.attacks makes them (seed 100 * victim + kind)
PRINTS = [
    ("videos/talking_head_retalk_3.mp4", "print_flat", 100),
    ("videos-wild/rizkiarm__LipNet__lbbc2a.mpg", "print_bent", 301),
    ("videos-wild/hemantghuge__Face_Landmark_dlib__face.avi", "print_flat", 500),
]


@pytest.fixture(scope="module")
def verifier(model_dir):
    config = VerifierConfig(limits=replace(VerifierConfig().limits, formats=LAB_VIDEO_FORMATS))
    with Verifier(model_dir, config=config) as v:
        yield v


def _analyse(verifier, path):
    video = load_video(path, sample_fps=15, limits=LAB)
    return video, verifier.landmarks.analyse(video.frames)


@pytest.fixture(scope="module", params=PRINTS, ids=lambda p: f"{p[1]}-{p[0].split('/')[-1]}")
def print_events(request, verifier, data_dir, tmp_path_factory):
    victim_clip, kind, seed = request.param
    victim = load_victim(data_dir / victim_clip, verifier.landmarks, seconds=4.0)
    out = tmp_path_factory.mktemp("prints") / f"{kind}.mp4"
    video, meshes = _analyse(
        verifier, write_clip(make_attack(victim, kind, seed=seed), victim.fps, out)
    )
    return video, meshes


def test_events_the_landmarker_reads_off_a_print_are_not_seen_in_the_pixels(print_events):
    video, meshes = print_events
    raw = [e for e in detect_actions(meshes) if e.kind in ("blink", "smile", "open_mouth")]
    assert raw  # the landmarks alone see an action in each of these prints
    kept, checks = seen_in_pixels(raw, video.frames, meshes, AppearanceThresholds())
    assert [e for e in kept if e.kind in ("blink", "smile", "open_mouth")] == []
    assert len(checks) == len(raw)
    for kind in ACTIONS:
        if kind in ("blink", "smile", "open_mouth"):
            assert not check_sequence(kept, [kind]).completed


def test_real_blinks_and_expressions_are_kept(verifier, data_dir):
    for clip in ("videos/selfie_blinks.mp4", "videos/talking_head_wda_1.mp4"):
        video, meshes = _analyse(verifier, data_dir / clip)
        raw = [e for e in detect_actions(meshes) if e.kind in ("blink", "smile", "open_mouth")]
        kept, checks = seen_in_pixels(raw, video.frames, meshes, AppearanceThresholds())
        assert raw and len(kept) == len(raw), [c.to_dict() for c in checks]
        # far above the thresholds, not just over them
        assert min(c.ratio for c in checks) > 2 * AppearanceThresholds().smile


def test_an_event_without_pixels_to_check_is_not_kept(verifier, data_dir):
    video, meshes = _analyse(verifier, data_dir / "videos/selfie_blinks.mp4")
    raw = [e for e in detect_actions(meshes) if e.kind == "blink"]
    kept, checks = confirm_events(raw, {}, meshes, thresholds=AppearanceThresholds())
    assert raw and kept == [] and all(c.ratio is None and not c.kept for c in checks)


def test_verify_reports_the_check_of_each_event(verifier, data_dir):
    clip = data_dir / "videos/selfie_blinks.mp4"
    result = verifier.verify(clip, frame_at(clip, "last"))
    checks = result.liveness.temporal["appearance"]
    blinks = [c for c in checks if c["kind"] == "blink"]
    assert blinks and all(c["kept"] and c["ratio"] is not None for c in blinks)
    assert result.liveness.temporal["blinks"] == len(blinks)
