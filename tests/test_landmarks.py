"""The landmarker's result read from MediaPipe's C result (liveness.landmarks.detect_faces)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from liveness.landmarks import FaceLandmarks, _faces_of, detect_faces
from liveness.video import load_video


def test_the_c_result_read_as_arrays_equals_the_public_result(model_dir, data_dir):
    import mediapipe as mp
    from mediapipe.tasks.python.vision import face_landmarker as fl

    pool = FaceLandmarks(model_dir / "face_landmarker.task", workers=1)
    fast, public = pool._create().landmarker, pool._create().landmarker
    if not hasattr(fl, "MpFaceLandmarkerResultC") or not hasattr(fast, "_lib"):
        pytest.skip("this MediaPipe has no C API binding: the public result is used")
    video = load_video(data_dir / "videos" / "blink_2x_tiny.mp4", sample_fps=15)
    faces = 0
    try:
        for i, frame in enumerate(video.frames):
            rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
            a = detect_faces(fast, mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), 66 * i + 1)
            b = _faces_of(
                public.detect_for_video(
                    mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), 66 * i + 1
                )
            )
            assert len(a.points) == len(b.points)
            for p, q in zip(a.points, b.points, strict=True):
                assert p.shape == (478, 3) and p.dtype == np.float32 and p.flags.owndata
                assert np.array_equal(p, q)
            assert a.shapes == b.shapes
            assert all(len(s) == 52 for s in a.shapes)
            assert all(np.array_equal(m, n) for m, n in zip(a.matrices, b.matrices, strict=True))
            faces += len(a.points)
    finally:
        fast.close()
        public.close()
    assert faces >= len(video.frames) - 2  # the face is in (nearly) every frame
