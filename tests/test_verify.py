"""End-to-end verification on the real models and the shared videos and photos."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from media import frame_at, read_frames

import liveness
from liveness import ReasonCode, Verifier
from liveness.errors import ImageDecodeError, InputError, VideoDecodeError, VideoLimitError
from liveness.video import VideoLimits


@pytest.fixture(scope="session")
def verifier(model_dir):
    with Verifier(model_dir) as v:
        yield v


@pytest.fixture(scope="session")
def videos(data_dir):
    return data_dir / "videos"


@pytest.fixture(scope="session")
def genuine(verifier, videos):
    """wda_1 against a frame from its own last second (the only photo of that person)."""
    video = videos / "talking_head_wda_1.mp4"
    return verifier.verify(video, frame_at(video, 7.5))


def codes(result):
    return set(result.reason_codes)


def test_live_video_matches_reference_from_the_same_person(genuine):
    assert genuine.decision == "accept", genuine.to_dict()["reasons"]
    assert genuine.match.similarity > 0.6
    assert genuine.match.fmr_estimate <= 1e-4
    assert genuine.liveness.score >= 0.75
    assert 0.0 <= genuine.score <= 1.0


@pytest.mark.parametrize(
    "name,ref_t",
    [("talking_head_retalk_1.mp4", 5.0), ("selfie_blinks.mp4", 12.0), ("live_webcam_a.webm", 10.0)],
)
def test_other_live_videos_are_not_rejected(verifier, videos, name, ref_t):
    result = verifier.verify(videos / name, frame_at(videos / name, ref_t))
    assert result.decision in {"accept", "review"}, result.to_dict()["reasons"]
    assert ReasonCode.FACE_MISMATCH.value not in result.reason_codes


def test_result_carries_evidence_timings_and_model_hashes(genuine):
    d = genuine.to_dict()
    for stage in ("video", "landmarks", "detect", "embed", "attack", "total"):
        assert d["timings_ms"][stage] >= 0
    assert d["models"]["yunet"]["sha256"] == liveness.models.REGISTRY["yunet"].sha256
    assert d["models"]["w600k_mbf"]["provider"].endswith("ExecutionProvider")
    assert d["video"]["frames_analysed"] > 50 and d["video"]["sha256"]
    assert d["liveness"]["per_frame"] and d["match"]["frames_compared"]
    import json

    assert json.loads(genuine.to_json())["decision"] == "accept"


def test_different_person_is_rejected_as_mismatch(verifier, videos, data_dir):
    result = verifier.verify(
        videos / "talking_head_wda_1.mp4", data_dir / "faces/face_recognition/biden.jpg"
    )
    assert result.decision == "reject"
    assert ReasonCode.FACE_MISMATCH.value in codes(result)
    assert result.match.fmr_estimate > 1e-2


@pytest.mark.parametrize(
    "name,ref",
    [
        ("replay_screen_a.webm", ("live_webcam_a.webm", 10.0)),
        ("replay_laptop_b.mp4", ("replay_laptop_b.mp4", 12.0)),
    ],
)
def test_screen_replays_are_not_accepted(verifier, videos, name, ref):
    result = verifier.verify(videos / name, frame_at(videos / ref[0], ref[1]))
    assert result.decision != "accept", result.to_dict()
    assert codes(result) & {"PRESENTATION_ATTACK_SUSPECTED", "LIVENESS_UNCERTAIN"}


def test_two_people_reference_is_unusable(verifier, videos, data_dir):
    result = verifier.verify(
        videos / "talking_head_wda_1.mp4", data_dir / "faces/deepface/couple.jpg"
    )
    assert result.decision == "review"  # the person cannot fix the photo on file
    assert codes(result) == {"REFERENCE_UNUSABLE"}
    with pytest.raises(liveness.ReferenceUnusableError, match="more than one face"):
        verifier.enroll(data_dir / "faces/deepface/couple.jpg", require_usable=True)


def test_reference_template_round_trip(verifier, data_dir):
    ref = verifier.enroll(data_dir / "faces/face_recognition/obama.jpg")
    assert ref.usable and ref.faces_found == 1
    again = liveness.Reference.from_dict(ref.to_dict())
    assert np.allclose(again.embedding, ref.embedding)


# -- bad input ---------------------------------------------------------------------------


def test_corrupt_empty_and_wrong_type_inputs_raise_typed_errors(
    verifier, videos, tmp_path, data_dir
):
    ref = data_dir / "faces/face_recognition/obama.jpg"
    with pytest.raises(VideoDecodeError):
        verifier.verify(b"", ref)
    with pytest.raises(VideoDecodeError):
        verifier.verify(b"\x00\x01garbage" * 1000, ref)
    truncated = (videos / "talking_head_wda_1.mp4").read_bytes()[:3000]
    with pytest.raises(VideoDecodeError):
        verifier.verify(truncated, ref)
    with pytest.raises(VideoDecodeError):
        verifier.verify(tmp_path / "missing.mp4", ref)
    with pytest.raises(InputError):
        verifier.verify(12345, ref)
    with pytest.raises(InputError):
        verifier.verify(np.zeros((10, 10, 3), np.uint8), ref)
    with pytest.raises(InputError):
        verifier.verify([np.zeros((10, 10), np.float32)] * 5, ref, fps=10)
    with pytest.raises(ImageDecodeError):
        verifier.verify(videos / "talking_head_wda_1.mp4", b"not an image")
    with pytest.raises(ImageDecodeError):
        verifier.verify(videos / "talking_head_wda_1.mp4", tmp_path / "missing.jpg")


def test_limits_raise_before_work_is_done(model_dir, videos, data_dir):
    ref = data_dir / "faces/face_recognition/obama.jpg"
    cfg = liveness.VerifierConfig(limits=VideoLimits(max_bytes=100_000))
    with Verifier(model_dir, config=cfg) as v:
        with pytest.raises(VideoLimitError, match="bytes"):
            v.verify(videos / "talking_head_wda_1.mp4", ref)
    cfg = liveness.VerifierConfig(limits=VideoLimits(max_duration_s=3.0))
    with Verifier(model_dir, config=cfg) as v:
        with pytest.raises(VideoLimitError, match="longer"):
            v.verify(videos / "talking_head_wda_1.mp4", ref)
    cfg = liveness.VerifierConfig(limits=VideoLimits(max_pixels=320 * 240))
    with Verifier(model_dir, config=cfg) as v:
        with pytest.raises(VideoLimitError, match="pixel"):
            v.verify(videos / "talking_head_wda_1.mp4", ref)


def test_no_face_gives_no_face_reason(verifier, data_dir):
    frames = [np.full((240, 320, 3), 120, np.uint8) for _ in range(30)]
    result = verifier.verify(frames, data_dir / "faces/face_recognition/obama.jpg", fps=15)
    assert result.decision == "reject" and codes(result) == {"NO_FACE"}


def test_many_faces_give_multiple_faces(verifier, data_dir):
    crowd = cv2.imread(str(data_dir / "faces/face_recognition/two_people.jpg"))
    frames = [(i / 15, crowd) for i in range(30)]
    result = verifier.verify(frames, data_dir / "faces/face_recognition/biden.jpg")
    assert result.decision == "reject"
    assert "MULTIPLE_FACES" in codes(result)


def test_dark_video_is_rejected_as_too_dark(verifier, videos):
    frames, fps = read_frames(videos / "talking_head_wda_1.mp4", limit=75)
    dark = [(f * 0.12).astype(np.uint8) for f in frames]
    result = verifier.verify(dark, frame_at(videos / "talking_head_wda_1.mp4", 7.5), fps=fps)
    assert result.decision == "reject"
    assert "LOW_QUALITY_DARK" in codes(result) or "NO_FACE" in codes(result)


def test_blurred_video_is_rejected_as_blurred(verifier, videos):
    frames, fps = read_frames(videos / "talking_head_wda_1.mp4", limit=75)
    ref = frame_at(videos / "talking_head_wda_1.mp4", 7.5)
    blurred = [cv2.GaussianBlur(f, (0, 0), 9) for f in frames]
    result = verifier.verify(blurred, ref, fps=fps)
    assert result.decision == "reject"
    assert "LOW_QUALITY_BLUR" in codes(result)
    # Less blur (sharpness ~20, over the gate of 18): still recognised, never accepted on a
    # live score the blur has pulled down (benchmarks/README.md, "Quality gates").
    result = verifier.verify([cv2.GaussianBlur(f, (0, 0), 6) for f in frames], ref, fps=fps)
    assert result.decision != "accept" and result.match.similarity > 0.5


def test_tiny_video_is_rejected_with_a_reason(verifier, videos, data_dir):
    result = verifier.verify(
        videos / "blink_2x_tiny.mp4", data_dir / "faces/face_recognition/obama.jpg"
    )
    assert result.decision == "reject"
    assert codes(result) & {"FACE_TOO_SMALL", "NO_FACE", "FACE_MISMATCH"}


def test_rotated_video_is_not_accepted_silently(verifier, videos):
    frames, fps = read_frames(videos / "talking_head_wda_1.mp4", limit=75)
    rotated = [cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE) for f in frames]
    result = verifier.verify(rotated, frame_at(videos / "talking_head_wda_1.mp4", 7.5), fps=fps)
    # Sideways faces are found by neither detector reliably; whatever happens, a reason is
    # given and the result is never a silent accept of a face not seen upright.
    assert result.decision != "accept" or result.match.similarity > 0.6
    assert result.decision == "accept" or result.reasons


def test_caller_frames_are_not_modified(verifier, videos):
    frames, fps = read_frames(videos / "talking_head_wda_1.mp4", limit=40)
    before = [f.copy() for f in frames]
    verifier.verify(frames, frames[-1], fps=fps)
    assert len(frames) == 40
    assert all(np.array_equal(a, b) for a, b in zip(frames, before, strict=True))


def test_four_threads_give_the_same_results_as_one_at_a_time(verifier, videos):
    jobs = [
        (videos / "talking_head_wda_1.mp4", frame_at(videos / "talking_head_wda_1.mp4", 7.5)),
        (videos / "talking_head_wda_2.mp4", frame_at(videos / "talking_head_wda_2.mp4", 7.5)),
        (videos / "talking_head_retalk_2.mp4", frame_at(videos / "talking_head_retalk_1.mp4", 5)),
        (videos / "replay_laptop_b.mp4", frame_at(videos / "replay_laptop_b.mp4", 12.0)),
    ]
    sequential = [verifier.verify(v, r) for v, r in jobs]
    parallel: list = [None] * len(jobs)

    def run(k):
        parallel[k] = verifier.verify(*jobs[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(sequential, parallel, strict=True):
        assert a.decision == b.decision and a.reason_codes == b.reason_codes
        assert a.match.similarity == pytest.approx(b.match.similarity, abs=1e-3)
        assert a.liveness.score == pytest.approx(b.liveness.score, abs=1e-3)


def test_a_different_person_half_way_is_subject_changed(verifier, videos):
    a, fps = read_frames(videos / "talking_head_wda_1.mp4", limit=100)
    b, _ = read_frames(videos / "talking_head_wda_2.mp4", limit=100)
    spliced = a[:100] + b[:100]
    result = verifier.verify(spliced, a[10], fps=fps)
    assert result.decision == "reject"
    assert "SUBJECT_CHANGED" in result.reason_codes


def test_face_leaving_the_frame_is_face_lost(verifier, videos):
    frames, fps = read_frames(videos / "talking_head_wda_1.mp4", limit=100)
    blank = [np.full_like(f, 90) for f in frames[40:]]
    result = verifier.verify(frames[:40] + blank, frames[10], fps=fps)
    assert result.decision == "reject"
    assert "FACE_LOST" in result.reason_codes


def test_a_5_fps_recording_without_a_blink_says_to_record_at_the_usual_rate(verifier, data_dir):
    """The 5 fps real clip of videos-wild shows no blink (one falls between frames): the
    review names the frame rate, which the person can change, instead of only "no blink"."""
    clip = (
        data_dir / "videos-wild" / "Trainingdata-datamarket__Selfies-and-video-dataset__"
        "samples_0001d815c0--61dc1afaeae6cc347caa18b2_8.mp4"
    )
    result = verifier.verify(clip, frame_at(clip, 2.0))
    assert result.video["fps"] < 10
    reason = next(r for r in result.reasons if r.code.value == "LIVENESS_UNCERTAIN")
    assert reason.detail.endswith("at 5 fps")
    assert "frame rate" in reason.message and reason.severity.value == "review"
    assert result.decision == "review"
