"""Small helpers for reading the shared videos in tests."""

from __future__ import annotations

import cv2
import numpy as np


def frame_at(path, seconds: float) -> np.ndarray:
    """The frame shown at ``seconds`` (decoded in order: seeking is unreliable in webm)."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    chosen, index = None, 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 or index / fps
        chosen = image
        index += 1
        if t >= seconds:
            break
    cap.release()
    assert chosen is not None, f"no frame in {path}"
    return chosen


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
