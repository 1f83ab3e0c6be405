"""Batched model calls: the same numbers as one face at a time, only where the model allows;
the CUDA path when a GPU is here (skipped, saying why, when not)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from media import read_frames

from liveness import Runtime, Verifier, VerifierConfig
from liveness.attack import PresentationAttackDetector
from liveness.detect import FaceDetector
from liveness.embed import FaceEmbedder
from liveness.errors import SetupError
from liveness.landmarks import FaceLandmarks


@pytest.fixture(scope="module")
def runtime(model_dir):
    return Runtime(model_dir, providers=["cpu"])


@pytest.fixture(scope="module")
def faces(runtime, data_dir):
    """Six (frame, face box) pairs from a shared talking-head clip."""
    frames, _ = read_frames(data_dir / "videos/talking_head_retalk_3.mp4", limit=60)
    det = FaceDetector(runtime.onnx("yunet"))
    out = []
    for image in frames[::10]:
        found = det.detect(image)
        out.append((image, max(found, key=lambda f: f.size)))
    return out


def test_which_shared_models_take_a_batch(runtime):
    assert runtime.onnx("minifasnet_v2").accepts_batch
    assert runtime.onnx("minifasnet_v1se").accepts_batch
    assert not runtime.onnx("yunet").accepts_batch
    assert not runtime.onnx("antispoofing_print_replay").accepts_batch


def test_batched_pad_gives_bit_identical_scores(runtime, faces):
    names = ("minifasnet_v2", "minifasnet_v1se", "antispoofing_print_replay")
    pad = PresentationAttackDetector([runtime.onnx(n) for n in names])
    one_by_one = [pad.live_probability(img, f.box) for img, f in faces]
    batched = pad.live_probabilities([(img, f.box) for img, f in faces])
    assert batched == one_by_one  # exact: batching must not move any decision
    assert pad.live_probabilities([]) == []


def test_int8_embedder_runs_one_face_per_call_and_a_float_contract_batches(runtime, faces):
    from liveness.align import align_face
    from liveness.embed import EmbedderContract

    aligned = [align_face(img, f.points) for img, f in faces]
    emb = FaceEmbedder(runtime.onnx("w600k_mbf"))
    assert not emb.batched  # dynamic int8 quantisation: a batch changes the numbers
    many = emb.embed(aligned)
    assert np.array_equal(many, np.concatenate([emb.embed([a]) for a in aligned]))
    # The same file under a contract that allows batches is batched (and its numbers move,
    # which is why the shipped contract forbids it).
    loose = FaceEmbedder(runtime.onnx("w600k_mbf"), EmbedderContract(max_batch=4))
    assert loose.batched and loose.embed(aligned).shape == many.shape
    assert np.max(np.abs(loose.embed(aligned) - many)) > 1e-3


def test_mediapipe_delegate_is_an_option(model_dir, runtime):
    with pytest.raises(SetupError, match="delegate"):
        FaceLandmarks(runtime.path("face_landmarker"), delegate="tpu")
    cfg = VerifierConfig(landmark_delegate="cpu")
    with Verifier(config=cfg, runtime=runtime) as v:
        assert "CPU" in v.models_used()["face_landmarker"].provider


CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(
    not CUDA,
    reason="no CUDA here: ONNX Runtime offers "
    f"{ort.get_available_providers()}; install the gpu extra on a machine with an NVIDIA GPU",
)
def test_cuda_path_gives_the_cpu_decision(model_dir, data_dir):
    from media import frame_at

    video = data_dir / "videos/talking_head_wda_1.mp4"
    ref = frame_at(video, 7.5)
    with Verifier(model_dir, providers=["cpu"]) as cpu:
        expected = cpu.verify(video, ref)
    cfg = VerifierConfig(landmark_delegate="gpu")
    with Verifier(model_dir, providers=["cuda"], config=cfg) as gpu:
        got = gpu.verify(video, ref)
        used = {m.name: m.provider for m in gpu.models_used().values()}
    assert used["w600k_mbf"] == used["yunet"] == "CUDAExecutionProvider"
    assert got.decision == expected.decision
    assert abs(got.match.similarity - expected.match.similarity) < 0.02


def test_speed_compares_providers_and_reports_a_missing_one(model_dir, data_dir, capsys):
    from benchmarks import speed

    video = data_dir / "videos/blink_2x_tiny.mp4"
    args = ["--video", str(video), "--reference", "frame:1.0", "--repeat", "1"]
    out = speed.main([*args, "--providers", "cpu", "cuda", "--model-dir", str(model_dir)])
    cpu = out["providers"]["cpu"]
    assert cpu["wall_s"] > 0 and cpu["models"]["yunet"] == "CPUExecutionProvider"
    assert cpu["decision"] in ("accept", "review", "reject")
    if CUDA:
        assert out["providers"]["cuda"]["models"]["yunet"] == "CUDAExecutionProvider"
    else:
        assert "onnxruntime-gpu" in out["providers"]["cuda"]["error"]
    assert '"providers"' in capsys.readouterr().out.strip().splitlines()[-1]
