"""ONNX Runtime module: provider choice, one session per model, caller's own models."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from liveness import MatchCalibration, Verifier, VerifierConfig
from liveness.errors import SetupError
from liveness.runtime import Runtime, choose_providers


def test_providers_end_with_cpu_and_follow_requests(monkeypatch):
    assert choose_providers()[-1] == "CPUExecutionProvider"
    assert choose_providers(["cpu"]) == ["CPUExecutionProvider"]
    monkeypatch.setenv("LIVENESS_ORT_PROVIDERS", "cpu")
    assert choose_providers() == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(SetupError, match="onnxruntime-gpu"):
            choose_providers(["cuda"])


def test_sessions_are_created_once_and_shared(model_dir):
    rt = Runtime(model_dir, intra_op_threads=1)
    a, b = rt.onnx("yunet"), rt.onnx("yunet")
    assert a is b and a.provider == "CPUExecutionProvider"
    assert a.sha256 == "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


def test_a_callers_own_arcface_model_plugs_in(model_dir, data_dir):
    # The shared w600k file under another name stands in for "your own ArcFace ONNX".
    rt = Runtime(model_dir, model_paths={"my_arcface": model_dir / "w600k_mbf_int8.onnx"})
    cfg = VerifierConfig(embedder="my_arcface")
    with Verifier(config=cfg, runtime=rt) as v:
        ref = v.enroll(data_dir / "faces/face_recognition/obama.jpg")
        assert ref.model == "my_arcface" and ref.usable
        assert v.models_used()["my_arcface"].license == "caller's own model"
        with pytest.raises(SetupError, match="benchmarks.calibrate"):
            v.verify(data_dir / "videos/blink_2x_tiny.mp4", ref)
    calibrated = MatchCalibration.load(model="w600k_mbf")
    with Verifier(config=cfg, runtime=rt, calibration=calibrated) as v:
        again = v.enroll(data_dir / "faces/face_recognition/obama.jpg")
        assert np.allclose(again.embedding, ref.embedding, atol=1e-5)
