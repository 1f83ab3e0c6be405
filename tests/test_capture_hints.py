"""Capture hints (liveness.hints) and the recovery service's /capture-hints endpoint, on
real frames with the real detector."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from media import frame_at

from examples.recovery_service import ServiceConfig, create_app
from liveness.hints import capture_hints
from liveness.quality import QualityThresholds
from liveness.sessions import Keyring

GENUINE = "videos/talking_head_wda_1.mp4"


@pytest.fixture(scope="module")
def client(model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("hints") / "recovery.sqlite3"
    app = create_app(
        ServiceConfig(db=db, model_dir=model_dir),
        keyring=Keyring.single(b"test-key-" * 4),
        operator_key="op-hints-3JmQ7wZ1kRt5Xc9V",
    )
    with TestClient(app) as c:
        yield c


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def codes(client, image: np.ndarray) -> set[str]:
    r = client.post("/capture-hints", content=jpeg(image), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    hints = r.json()["hints"]
    assert all(h["message"] for h in hints)
    return {h["code"] for h in hints}


def test_a_clear_centred_face_is_ok(client, data_dir):
    assert codes(client, frame_at(data_dir / GENUINE, 2.0)) == {"ok"}


def test_dark_small_off_centre_and_two_faces(client, data_dir):
    frame = frame_at(data_dir / GENUINE, 2.0)
    dark = (frame.astype(np.float32) * 0.18).astype(np.uint8)
    assert "too_dark" in codes(client, dark)
    # The same picture at a tenth of its size in the corner of a 640x480 grey one.
    canvas = np.full((480, 640, 3), 120, np.uint8)
    small = cv2.resize(frame, (52, 52), interpolation=cv2.INTER_AREA)
    canvas[10:62, 10:62] = small
    assert {"too_small", "off_centre"} <= codes(client, canvas)
    couple = cv2.imread(str(data_dir / "faces/deepface/couple.jpg"))
    assert "two_faces" in codes(client, couple)
    assert codes(client, np.full((480, 640, 3), 128, np.uint8)) == {"no_face"}


def test_hints_follow_the_verifier_thresholds(client, data_dir):
    verifier = client.app.state.service.verifier
    frame = frame_at(data_dir / GENUINE, 2.0)
    strict = QualityThresholds(min_brightness=250.0)
    hints = capture_hints(frame, verifier.detector, strict)
    assert [h.code for h in hints] == ["too_dark"]


def test_bad_frame_is_a_typed_refusal_and_the_page_loads_the_script(client):
    r = client.post(
        "/capture-hints", content=b"not an image", headers={"Content-Type": "image/jpeg"}
    )
    assert r.status_code == 422 and r.json()["error"] == "PHOTO_UNREADABLE"
    assert '<script src="/static/hints.js"' in client.get("/").text
    assert "/capture-hints" in client.get("/static/hints.js").text
