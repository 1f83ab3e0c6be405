"""Per-frame face quality: size, sharpness, exposure and pose, and the choice of best frames.

Measures are taken on the face box only, so a dark room behind a well-lit face is fine. The
sharpness measure is the variance of the Laplacian of the face resized to a fixed height,
so it does not depend on how large the face is in the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SHARPNESS_HEIGHT = 128
# Ranking (FaceQuality.score) saturates at these, independent of where the gates sit: a
# face of 120 px and a sharpness of 100 count as fully sharp and large (the values the
# ranking had when the gates were 60 px and 25).
_RANK_FACE_PX = 120.0
_RANK_SHARPNESS = 100.0


@dataclass(frozen=True)
class QualityThresholds:
    """Gates below which a face is not good enough to compare or to judge.

    Each gate sits where recognition itself starts to fail, measured by
    ``python -m benchmarks.gates`` on LFW DevTest (200 pairs; the probe degraded, the
    reference clean; FNMR at the FMR 1e-4 similarity 0.315; clean FNMR 0.03), see
    ``benchmarks/README.md`` "Quality gates":

    * ``min_brightness`` 30: FNMR 0.03 at face brightness 50, 0.07 at 31.5, 0.22 at 20.1
      (interpolated clean + 0.05 at 30.7). It was 45, fitted on darkened clips, and turned
      away real people in dim rooms (faces at 32 and 42.6).
    * ``min_sharpness`` 18: FNMR 0.02 at 23.7, 0.21 at 8.5 (clean + 0.05 at 18.9). Was 25.
    * ``min_face_px`` 28: FNMR 0.03 at 32 px, 0.09 at 24, 0.35 at 16 (clean + 0.05 at 25).
      Was 60. The live score falls earlier (mean 0.69 at 32 px, 0.81 at 48): a small face
      may pass the gate and still end in review on liveness.
    """

    min_face_px: float = 28.0
    min_brightness: float = 30.0
    max_brightness: float = 225.0
    max_clipped: float = 0.35
    min_sharpness: float = 18.0
    max_yaw: float = 35.0
    max_pitch: float = 30.0


@dataclass(frozen=True)
class FaceQuality:
    """Quality measures of one face in one frame."""

    face_px: float
    brightness: float
    clipped: float
    sharpness: float
    yaw: float = 0.0
    pitch: float = 0.0

    def problems(self, th: QualityThresholds) -> list[str]:
        """Names of the gates this face fails: ``small``, ``dark``, ``bright``, ``blur``,
        ``pose``."""
        out = []
        if self.face_px < th.min_face_px:
            out.append("small")
        if self.brightness < th.min_brightness:
            out.append("dark")
        if self.brightness > th.max_brightness or self.clipped > th.max_clipped:
            out.append("bright")
        if self.sharpness < th.min_sharpness:
            out.append("blur")
        if abs(self.yaw) > th.max_yaw or abs(self.pitch) > th.max_pitch:
            out.append("pose")
        return out

    def score(self, th: QualityThresholds) -> float:
        """A [0, 1] figure for ranking frames: frontal, sharp and well exposed is best."""
        frontal = max(0.0, 1.0 - (abs(self.yaw) / 45.0) ** 2 - (abs(self.pitch) / 40.0) ** 2)
        sharp = min(1.0, self.sharpness / _RANK_SHARPNESS)
        exposure = 1.0 - min(1.0, abs(self.brightness - 130.0) / 130.0)
        size = min(1.0, self.face_px / _RANK_FACE_PX)
        return float(frontal * (0.5 + 0.5 * sharp) * (0.5 + 0.5 * exposure) * size)


def measure(
    image: np.ndarray, box: np.ndarray, yaw: float = 0.0, pitch: float = 0.0
) -> FaceQuality:
    """Quality of the face inside ``box`` (x1, y1, x2, y2) of a BGR image."""
    h, w = image.shape[:2]
    x1, y1 = int(max(0, np.floor(box[0]))), int(max(0, np.floor(box[1])))
    x2, y2 = int(min(w, np.ceil(box[2]))), int(min(h, np.ceil(box[3])))
    face_px = float(min(box[2] - box[0], box[3] - box[1]))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return FaceQuality(face_px, 0.0, 0.0, 0.0, yaw, pitch)
    grey = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    brightness = float(grey.mean())
    clipped = float(np.mean(grey >= 250))
    scale = _SHARPNESS_HEIGHT / grey.shape[0]
    fixed = cv2.resize(
        grey,
        (max(4, round(grey.shape[1] * scale)), _SHARPNESS_HEIGHT),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    sharpness = float(cv2.Laplacian(fixed, cv2.CV_64F).var())
    return FaceQuality(face_px, brightness, clipped, sharpness, yaw, pitch)


def best_frames(
    scores: list[float], times: list[float], k: int = 3, min_gap_s: float = 0.5
) -> list[int]:
    """Indices of up to ``k`` highest-scoring frames at least ``min_gap_s`` apart (so that
    one blurry moment or one blink does not supply every frame)."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    chosen: list[int] = []
    for i in order:
        if scores[i] <= 0:
            break
        if all(abs(times[i] - times[j]) >= min_gap_s for j in chosen):
            chosen.append(int(i))
        if len(chosen) == k:
            break
    return chosen


def normalise_exposure(face: np.ndarray, method: str = "gamma", target: float = 110.0):
    """An exposure-normalised copy of a face crop (BGR uint8), for measuring whether it helps.

    ``gamma``: one gamma for all channels that brings the mean grey level to ``target``
    (at most a factor 3 either way in the exponent, so noise is not blown up without limit);
    ``clahe``: contrast-limited adaptive histogram equalisation (clip 2.0, 4x4 tiles) on the
    L channel of Lab. ``none`` returns the crop unchanged.
    """
    if method == "none":
        return face
    if method == "gamma":
        mean = float(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).mean())
        mean = min(max(mean, 1.0), 254.0)
        g = float(np.clip(np.log(target / 255.0) / np.log(mean / 255.0), 1 / 3, 3.0))
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g, 0, 255).astype(np.uint8)
        return cv2.LUT(face, lut)
    if method == "clahe":
        lab = cv2.cvtColor(face, cv2.COLOR_BGR2LAB)
        clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
        lab[:, :, 0] = clahe.apply(lab[:, :, 0])
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    raise ValueError(f"unknown exposure normalisation {method!r}")


# Faces darker than this get CLAHE before the embedder (``prepare_for_embedding``). Measured
# by ``benchmarks.gates`` (CLAHE on every probe): FNMR 0.02 vs 0.03 without at brightness
# 50, 0.02 vs 0.07 at 31.5, 0.07 vs 0.22 at 20.1; at normal exposure (125) it changed
# nothing measurable (FNMR 0.03 both), so it is kept to dim faces only.
CLAHE_BELOW_BRIGHTNESS = 50.0


def prepare_for_embedding(aligned: np.ndarray, brightness: float) -> np.ndarray:
    """The aligned face as the embedder should see it: CLAHE when the face's measured
    brightness (:attr:`FaceQuality.brightness`) is under :data:`CLAHE_BELOW_BRIGHTNESS`,
    else unchanged (the model's own input contract)."""
    if brightness < CLAHE_BELOW_BRIGHTNESS:
        return normalise_exposure(aligned, "clahe")
    return aligned
