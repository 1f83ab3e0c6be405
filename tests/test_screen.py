"""The screen cue (liveness.screen): a pixel grid filmed again makes spectral peaks a face
does not have."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.attack_clips import screen_texture
from liveness.screen import face_patch, screen_cue, spectral_peakiness
from liveness.video import frame_at


def _face(data_dir):
    img = frame_at(data_dir / "videos/talking_head_wda_2.mp4", 2.0)
    h, w = img.shape[:2]
    return img, (w * 0.3, h * 0.2, w * 0.7, h * 0.7)


def test_a_face_filmed_off_a_pixel_grid_has_spectral_peaks(data_dir):
    img, box = _face(data_dir)
    direct = spectral_peakiness(face_patch(img, box))
    # the same frame on a 300-pixel-wide screen, filmed at 1.3 camera pixels per texel
    tex = screen_texture(img, 300, 1.2, 0.0)
    filmed = cv2.resize(
        tex, (int(tex.shape[1] / 1.3), int(tex.shape[0] / 1.3)), interpolation=cv2.INTER_LINEAR
    )
    s = filmed.shape[1] / img.shape[1]
    replayed = spectral_peakiness(face_patch(filmed, [v * s for v in box]))
    # measured: 0.67 direct, 0.80 filmed (log10 units above the ring median)
    assert replayed > direct + 0.1, (direct, replayed)


def test_small_faces_are_not_measured():
    img = np.zeros((100, 100, 3), np.uint8)
    assert face_patch(img, (40, 40, 60, 60)) is None
    cue = screen_cue([img], [(40, 40, 60, 60)])
    assert cue.peakiness is None and cue.frames == 0
