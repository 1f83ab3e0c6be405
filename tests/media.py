"""Small helpers for reading the shared videos in tests."""

from __future__ import annotations

import cv2
import numpy as np

from liveness.video import frame_at  # noqa: F401  (re-exported for the tests)


def read_frames(path, limit: int | None = None) -> tuple[list[np.ndarray], float]:
    """The first ``limit`` frames of a video and its frame rate."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while limit is None or len(frames) < limit:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames, fps
