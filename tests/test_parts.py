"""Stages as replaceable parts (liveness.parts): a second detector and a second embedder
plugged into a Verifier without touching verify.py, on a real clip and the real models."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from media import frame_at

from liveness import Verifier
from liveness.analysis import every, spread
from liveness.challenges import ActionEvent, check_challenge
from liveness.detect import FaceDetector, ScrfdDetector
from liveness.embed import DlibResNetEmbedder
from liveness.errors import SetupError
from liveness.parts import (
    PARTS,
    Detector,
    Embedder,
    Landmarker,
    PadEnsemble,
    build_detector,
    build_embedder,
    build_pad,
    calibration_for,
    part,
)
from liveness.reasons import ReasonCode
from liveness.runtime import Runtime

CLIP = "videos/talking_head_wda_1.mp4"


@pytest.fixture(scope="module")
def runtime(model_dir):
    return Runtime(model_dir)


@pytest.fixture(scope="module")
def plugged(model_dir, verifier):
    """SCRFD and dlib's ResNet in place of YuNet and w600k, on a runtime of their own (so
    that the result lists the models this verifier ran); the landmarker is the session
    verifier's (injected, so this verifier does not close it)."""
    runtime = Runtime(model_dir)
    with Verifier(
        runtime=runtime,
        detector=build_detector(runtime, "scrfd_500m"),
        embedder=build_embedder(runtime, "dlib_resnet"),
        landmarker=verifier.landmarks,
    ) as v:
        yield v


def test_every_registered_part_names_a_registered_model_of_its_kind():
    for name, spec in PARTS.items():
        assert spec.model.name == name
        assert spec.model.kind == spec.kind, name
    assert part("dlib_resnet", "embedder").cls is DlibResNetEmbedder
    with pytest.raises(KeyError, match="scrfd_500m"):
        part("w600k_mbf", "detector")  # the message lists the detectors there are


def test_default_parts_meet_their_protocols(verifier):
    assert isinstance(verifier.detector, Detector)
    assert isinstance(verifier.embedder, Embedder)
    assert isinstance(verifier.pad, PadEnsemble)
    assert isinstance(verifier.landmarks, Landmarker)
    assert verifier.parts.low_detector.score_threshold == verifier.config.low_detection_score


def test_an_object_that_is_not_a_part_is_refused_naming_what_it_lacks(runtime):
    with pytest.raises(SetupError, match="detect"):
        Verifier(runtime=runtime, detector=object())


def test_scrfd_finds_the_same_face_and_points_as_yunet(runtime, data_dir):
    image = frame_at(data_dir / CLIP, 1.0)
    yunet = FaceDetector(runtime.onnx("yunet")).detect(image)
    scrfd = build_detector(runtime, "scrfd_500m")
    assert isinstance(scrfd, ScrfdDetector) and scrfd.score_threshold == 0.5
    found = scrfd.detect(image)
    assert len(yunet) == len(found) == 1
    size = yunet[0].size
    # the 5 points agree to a few percent of the face (measured: at most 4.5 % on wda_1)
    assert np.abs(found[0].points - yunet[0].points).max() < 0.08 * size
    assert scrfd.with_threshold(0.99).detect(image) == []
    assert scrfd.detect(np.zeros((240, 320, 3), np.uint8)) == []


def test_pad_ensemble_is_built_from_the_registry_contracts(runtime):
    pad = build_pad(runtime, ["minifasnet_v2", "minifasnet_v1se"])
    assert [c.scale for c in pad.contracts] == [2.7, 4.0]
    assert calibration_for("dlib_resnet").model == "dlib_resnet"


def test_plugged_detector_and_embedder_verify_a_real_clip(plugged, data_dir):
    video = data_dir / CLIP
    result = plugged.verify(video, frame_at(video, 7.5))
    assert result.decision == "accept", result.to_dict()["reasons"]
    assert result.reference["model"] == "dlib_resnet"
    assert {"scrfd_500m", "dlib_resnet"} <= set(result.models)
    assert not {"yunet", "w600k_mbf"} & set(result.models)  # the defaults were never built
    # dlib's calibration: similarities of one person sit near 1 (embed.DlibResNetEmbedder)
    assert result.match.similarity > plugged.calibration.threshold_for(1e-4)
    assert plugged.calibration.model == "dlib_resnet"


def test_plugged_verifier_still_tells_people_apart(plugged, data_dir):
    video = data_dir / CLIP
    other = data_dir / "videos" / "talking_head_retalk_1.mp4"
    result = plugged.verify(video, frame_at(other, 5.0))
    assert ReasonCode.FACE_MISMATCH.value in result.reason_codes


def test_challenge_check_finds_the_token_actions_in_order():
    def event(kind, start):
        return ActionEvent(kind, start, start + 0.2, start + 0.5, 0.9, 1.0, 0.0, 0, 1, 2)

    claims = SimpleNamespace(session_id="s", actions=("blink", "smile"), windows=None)
    ok = check_challenge(claims, [event("blink", 1.0), event("smile", 3.0)], 5.0)
    assert ok.completed and ok.reasons == [] and ok.evidence["completed"]
    assert [s["found"] for s in ok.evidence["steps"]] == [True, True]
    swapped = check_challenge(claims, [event("smile", 1.0), event("blink", 3.0)], 5.0)
    assert not swapped.completed
    assert [r.code for r in swapped.reasons] == [ReasonCode.CHALLENGE_OUT_OF_ORDER]
    turns = SimpleNamespace(session_id="s", actions=("turn_left",), windows=None)
    assert check_challenge(turns, [event("turn_left", 1.0)], 5.0).head_windows == [(0.5, 2.0)]


def test_keyframe_and_pad_frame_choice():
    frames = [SimpleNamespace(t=0.5 * i) for i in range(10)]
    assert every([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], frames, 2.0) == [0, 4, 8]
    assert spread([1, 2, 3, 4, 5, 6, 7], [5, 9], 4) == [1, 3, 5, 7]
    assert spread([1, 2], [1], 8) == [1, 2]

