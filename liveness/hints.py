"""Hints before recording: is the camera picture good enough, and if not, what to change.

A capture page sends a preview frame (not kept) and shows the hints, so the person fixes
the picture before recording instead of failing afterwards. The same
:class:`~liveness.quality.QualityThresholds` the verifier applies decide ``too_dark``,
``too_bright``, ``too_small`` and ``blurred``; ``two_faces`` uses the verifier's rule for
a second face (:func:`liveness.track.other_faces`). Nothing here is a separate set of
numbers to keep in step by hand, except the centring margin below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect import FaceDetector
from .quality import QualityThresholds, measure
from .track import other_faces

# The face centre may sit this far from the frame centre (fraction of the frame's width or
# height) before "off_centre": a head turned 25 degrees for a challenge moves the face
# centre by about a sixth of the face width, and the face must stay whole in the frame.
MAX_CENTRE_OFFSET = 0.2

MESSAGES = {
    "no_face": "We cannot see your face. Face the camera with your whole face in the picture.",
    "two_faces": "Someone else is in the picture. Make sure only you are in view.",
    "too_small": "Come closer: your face should fill about half the picture.",
    "off_centre": "Move so your face is in the middle of the picture.",
    "too_dark": "It is too dark. Turn on a light or face a window.",
    "too_bright": "It is too bright. Move out of direct light or turn away from the window.",
    "blurred": "The picture is blurry. Hold the camera still and wipe the lens.",
    "ok": "Good: your face is clear. You can start recording.",
}


@dataclass(frozen=True)
class CaptureHint:
    """One hint: a stable ``code`` (a key of :data:`MESSAGES`) and its sentence."""

    code: str
    message: str

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


def capture_hints(
    image: np.ndarray, detector: FaceDetector, thresholds: QualityThresholds
) -> list[CaptureHint]:
    """Hints for one preview frame (BGR, at the resolution that will be recorded): the
    problems in the order a person should fix them, or a single ``ok``."""
    faces = detector.detect(image)
    if not faces:
        return [_hint("no_face")]
    main = max(faces, key=lambda f: f.size)
    out = []
    if other_faces(faces, main):
        out.append(_hint("two_faces"))
    q = measure(image, main.box)
    problems = q.problems(thresholds)
    if "small" in problems:
        out.append(_hint("too_small"))
    h, w = image.shape[:2]
    cx, cy = main.center
    if abs(cx / w - 0.5) > MAX_CENTRE_OFFSET or abs(cy / h - 0.5) > MAX_CENTRE_OFFSET:
        out.append(_hint("off_centre"))
    for p, code in (("dark", "too_dark"), ("bright", "too_bright"), ("blur", "blurred")):
        if p in problems:
            out.append(_hint(code))
    return out or [_hint("ok")]


def _hint(code: str) -> CaptureHint:
    return CaptureHint(code, MESSAGES[code])
