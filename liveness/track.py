"""One subject across the video: which detection is the subject, are others present, and
is it the same person throughout."""

from __future__ import annotations

import numpy as np

from .detect import Face


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def subject_face(faces: list[Face], mesh_box: np.ndarray | None) -> Face | None:
    """The detection that is the tracked subject: the one overlapping the landmark mesh
    most, or (without a mesh) the largest."""
    if not faces:
        return None
    if mesh_box is None:
        return max(faces, key=lambda f: f.size)
    best = max(faces, key=lambda f: iou(f.box, mesh_box))
    return best if iou(best.box, mesh_box) > 0.2 else None


def other_faces(
    faces: list[Face], subject: Face | None, min_relative_size: float = 0.35, min_score: float = 0.7
) -> list[Face]:
    """Faces besides the subject big and clear enough to matter: a second person, or a
    photo held up beside the face. Tiny faces far in the background are ignored."""
    if subject is None:
        return []
    return [
        f
        for f in faces
        if f is not subject and f.score >= min_score and f.size >= min_relative_size * subject.size
    ]


def identity_spread(embeddings: np.ndarray) -> float:
    """Lowest cosine similarity between any two of the subject's embeddings over time
    (1.0 with fewer than two). A low figure means a different face came into view."""
    if len(embeddings) < 2:
        return 1.0
    sims = embeddings @ embeddings.T
    return float(sims[np.triu_indices(len(embeddings), 1)].min())
