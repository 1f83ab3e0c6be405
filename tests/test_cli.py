"""The command line and the quickstart example, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from media import frame_at

ROOT = Path(__file__).resolve().parents[1]


def run(args, model_dir, env_extra=None, **kw):
    env = {**os.environ, "LIVENESS_MODEL_DIR": str(model_dir), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "liveness", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kw,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    path = tmp_path_factory.mktemp("ref") / "wda1.png"
    cv2.imwrite(str(path), frame_at(data_dir / "videos/talking_head_wda_1.mp4", 7.5))
    return path


def test_verify_json_accept_exits_0(model_dir, data_dir, reference):
    p = run(
        ["verify", str(data_dir / "videos/talking_head_wda_1.mp4"), str(reference), "--json"],
        model_dir,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["decision"] == "accept" and 0 <= out["score"] <= 1
    assert out["reasons"] == [] and out["match"]["similarity"] > 0.6
    assert out["liveness"]["score"] > 0.75 and out["timings_ms"]["total"] > 0
    assert p.stderr.strip() == ""


def test_verify_mismatch_exits_1_with_reasons(model_dir, data_dir):
    p = run(
        [
            "verify",
            str(data_dir / "videos/talking_head_wda_1.mp4"),
            str(data_dir / "faces/face_recognition/biden.jpg"),
            "--json",
        ],
        model_dir,
    )
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert out["decision"] == "reject"
    assert {"code": "FACE_MISMATCH"}.items() <= out["reasons"][0].items()
    assert out["reasons"][0]["message"]


def test_verify_text_output(model_dir, data_dir):
    p = run(
        [
            "verify",
            str(data_dir / "videos/replay_laptop_b.mp4"),
            str(data_dir / "faces/face_recognition/biden.jpg"),
        ],
        model_dir,
    )
    assert p.returncode == 1
    assert "decision: reject" in p.stdout and "PRESENTATION_ATTACK_SUSPECTED" in p.stdout


def test_unusable_input_exits_2_with_one_line(model_dir, data_dir, tmp_path, reference):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 5000)
    p = run(["verify", str(bad), str(reference)], model_dir)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert "bad.mp4" in p.stderr


def test_missing_models_exit_2_naming_the_fix(data_dir, tmp_path, reference):
    env_dir = tmp_path / "no-models"
    env_dir.mkdir()
    p = run(
        [
            "verify",
            str(data_dir / "videos/talking_head_wda_1.mp4"),
            str(reference),
            "--model-dir",
            str(env_dir),
        ],
        env_dir,
        cwd=tmp_path,
    )
    assert p.returncode == 2
    line = p.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "face_detection_yunet_2023mar.onnx" in line and "LIVENESS_MODEL_DIR" in line


def test_quickstart_example_runs(model_dir):
    env = {**os.environ, "LIVENESS_MODEL_DIR": str(model_dir)}
    p = subprocess.run(
        [sys.executable, str(ROOT / "examples/quickstart.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "decision: accept" in p.stdout
    # nothing from the native libraries (glog "W0000 ...", TFLite "INFO: ...")
    assert p.stderr == "" and p.stdout.startswith("decision: "), p.stdout + p.stderr
