"""A screen-replay cue that is not a texture network: the face crop's spectrum.

A face shown on a screen and filmed again carries the screen's pixel grid. The camera
samples that grid at a slightly different pitch, so it folds into *moiré*: strong, narrow
peaks in the 2D spectrum of the face crop, away from the centre, that a real face (skin,
hair, soft shading) does not have. :func:`spectral_peakiness` measures the strongest such
peak against the spectrum around it at the same frequency radius.

Compression puts peaks of its own on the axes at multiples of 1/8 cycle per pixel (8x8
block edges); those rows and columns of the spectrum are left out.

The measurement is per frame; :func:`screen_cue` takes the median over a clip's frames, so
one frame with a patterned shirt in the crop does not decide. Figures:
``python -m benchmarks.screen`` (``benchmarks/README.md``, section "Screen cue").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

# The crop: the face box grown by this factor around its centre, cut to a square of
# ``_SIZE`` pixels at the video's own resolution (never upscaled: upscaling hides the grid).
_GROW = 1.0
_SIZE = 128


@dataclass(frozen=True)
class ScreenCue:
    """Per clip: the median peakiness over frames, and how many frames were measured."""

    peakiness: float | None
    frames: int

    def to_dict(self) -> dict:
        return asdict(self)


def face_patch(image: np.ndarray, box: Sequence[float], size: int = _SIZE) -> np.ndarray | None:
    """The grey central part of the face, ``size`` pixels square at the image's own scale
    (scaled down only when the face is larger); ``None`` when the face is smaller than
    ``size / 2`` pixels (too little to see a grid in)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = _GROW * max(x2 - x1, y2 - y1)
    if side < size / 2:
        return None
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = min(side, 2 * size) / 2  # a face larger than 2x the patch: take its middle
    a, b = int(round(cx - half)), int(round(cy - half))
    h, w = image.shape[:2]
    a, b = max(0, min(a, w - 1)), max(0, min(b, h - 1))
    crop = image[b : b + int(2 * half), a : a + int(2 * half)]
    if min(crop.shape[:2]) < size / 2:
        return None
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def spectral_peakiness(patch: np.ndarray) -> float:
    """How far the strongest mid/high-frequency spectral peak of ``patch`` stands above the
    median of its ring (same radius), in log10 units.

    The patch is Hann-windowed; frequencies below 1/16 cycle per pixel (face shape, shading)
    and the axis rows/columns at multiples of 1/8 (compression blocks) are ignored.
    """
    n = patch.shape[0]
    win = np.outer(np.hanning(n), np.hanning(n))
    x = (patch - patch.mean()) * win
    mag = np.log10(np.abs(np.fft.fftshift(np.fft.fft2(x))) + 1e-3)
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    r = np.hypot(xx, yy).astype(int)
    valid = (r >= n // 16) & (r < n // 2)
    blocks = np.zeros_like(valid)
    for k in range(-4, 5):
        c = n // 2 + k * n // 8
        for d in (-1, 0, 1):
            if 0 <= c + d < n:
                blocks[:, c + d] |= np.abs(yy[:, c + d]) <= 1
                blocks[c + d, :] |= np.abs(xx[c + d, :]) <= 1
    blocks |= (np.abs(xx) <= 1) | (np.abs(yy) <= 1)  # the axes themselves (edges, borders)
    valid &= ~blocks
    ring_median = np.zeros(n, np.float64)
    for radius in range(n // 16, n // 2):
        ring = mag[(r == radius) & valid]
        ring_median[radius] = np.median(ring) if ring.size else np.inf
    excess = np.where(valid, mag - ring_median[r], -np.inf)
    return float(excess.max())


def screen_cue(images: Sequence[np.ndarray], boxes: Sequence[Sequence[float]]) -> ScreenCue:
    """Median :func:`spectral_peakiness` over the frames whose face is large enough."""
    vals = []
    for img, box in zip(images, boxes, strict=True):
        p = face_patch(img, box)
        if p is not None:
            vals.append(spectral_peakiness(p))
    return ScreenCue(float(np.median(vals)) if vals else None, len(vals))
