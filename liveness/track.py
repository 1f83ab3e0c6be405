"""One subject across the video: which detection is the subject, are others present, and
is it the same person throughout."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .align import align_face
from .detect import Face
from .quality import measure
from .reasons import Reason, ReasonCode


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


@dataclass(frozen=True)
class IdentityTrack:
    """How the subject's identity holds over the keyframes of one recording.

    ``similarities``: each keyframe's cosine similarity to the anchor keyframe (the one
    most like all the others), in time order; ``changed``: a different person was in view
    (see :func:`identity_track`); ``outliers``: indices of keyframes under the threshold
    that do not make a run (one odd frame: motion blur, a hand, a turned head).
    """

    similarities: list[float]
    anchor: int
    changed: bool
    outliers: list[int]

    @property
    def min_similarity(self) -> float:
        return min(self.similarities) if self.similarities else 1.0


def identity_track(
    embeddings: np.ndarray, different_below: float, min_run: int = 2
) -> IdentityTrack:
    """Is one person in view throughout? ``embeddings``: unit vectors in time order.

    The anchor is the keyframe with the highest median similarity to the others (a frontal,
    typical view of whoever is in view most). A change needs ``min_run`` consecutive
    keyframes under ``different_below`` against it (pick it where the calibration's FMR is
    high, e.g. 10 %: most impostor pairs score below it, while one person seen from another
    angle rarely does). One such frame alone is an outlier, not a different person. The
    anchor is not the mean of the best frames: if those came from two people, their mean
    would sit between them and hide the change.
    """
    e = np.asarray(embeddings, np.float64)
    if len(e) == 0:
        return IdentityTrack([], -1, False, [])
    sims_all = e @ e.T
    np.fill_diagonal(sims_all, np.nan)
    typical = np.nanmedian(sims_all, axis=1) if len(e) > 1 else np.ones(1)
    anchor = int(np.argmax(typical))
    sims = [1.0 if k == anchor else float(sims_all[anchor, k]) for k in range(len(e))]
    low = [s < different_below for s in sims]
    changed, run = False, 0
    for is_low in low:
        run = run + 1 if is_low else 0
        changed = changed or run >= min_run
    outliers = [i for i, is_low in enumerate(low) if is_low]
    return IdentityTrack([round(s, 4) for s in sims], anchor, changed, [] if changed else outliers)


def other_face_kind(
    relative_size: float,
    similarity_to_subject: float | None,
    live: float | None,
    *,
    same_person_above: float,
    flat_below: float,
    background_below: float = 0.6,
) -> str:
    """What a second face probably is: ``reflection`` (the subject's own face, e.g. in a
    mirror or window: similarity to the subject at least ``same_person_above``), ``poster``
    (a flat face, a photo or screen: live score under ``flat_below``), ``background`` (under
    ``background_below`` of the subject's size: someone far behind) or ``person``."""
    if similarity_to_subject is not None and similarity_to_subject >= same_person_above:
        return "reflection"
    if live is not None and live < flat_below:
        return "poster"
    if relative_size < background_below:
        return "background"
    return "person"


def describe_other_faces(
    found: dict, probe: np.ndarray, embedder, pad, *, same_person_above: float, flat_below: float
) -> list[dict]:
    """Each second face at each keyframe: ``{"t", "kind", "relative_size", "similarity",
    "live"}`` with ``kind`` from :func:`other_face_kind`. ``found`` maps a time to
    ``(image, subject_face, other_faces)``; ``embedder`` and ``pad`` are the pipeline's."""
    out = []
    for t, (image, subject, faces) in sorted(found.items()):
        for f in faces:
            e = embedder.embed([align_face(image, f.points)])[0]
            p = np.asarray(probe, np.float64)
            sim = float(e @ p / max(np.linalg.norm(p), 1e-12))
            live = pad.live_probability(image, f.box)
            rel = f.size / max(subject.size, 1e-6)
            kind = other_face_kind(
                rel, sim, live, same_person_above=same_person_above, flat_below=flat_below
            )
            out.append(
                {
                    "t": t,
                    "kind": kind,
                    "relative_size": round(rel, 3),
                    "similarity": round(sim, 4),
                    "live": round(live, 4),
                }
            )
    return out


# The reason for each quality problem of liveness.quality.FaceQuality.problems.
QUALITY_REASONS = {
    "dark": ReasonCode.LOW_QUALITY_DARK,
    "bright": ReasonCode.LOW_QUALITY_BRIGHT,
    "blur": ReasonCode.LOW_QUALITY_BLUR,
    "small": ReasonCode.FACE_TOO_SMALL,
    "pose": ReasonCode.POSE_NOT_FRONTAL,
}


def unfollowed_face_reason(detector, frames: list, thresholds, samples: int = 5) -> Reason:
    """The reason when the landmarker followed no face in any frame.

    YuNet looks at up to ``samples`` frames spread over the recording. Nothing in most of
    them: ``NO_FACE``. A face that fails a quality gate (the median frame's commonest
    problem: too dark, too small, blurred...): that gate's reason, so the person knows what
    to change. A face that passes them: a person is there whose features the landmarker
    cannot follow (a mask or a hand over the face: videos-wild ``nam157 2.mp4``, a masked
    face of 109 px): ``NO_FACE`` as ``review``, with a sentence saying what to change.
    """
    idx = np.linspace(0, len(frames) - 1, min(samples, len(frames))).round().astype(int)
    seen = []
    for i in sorted(set(idx.tolist())):
        faces = detector.detect(frames[i].image)
        if faces:
            main = max(faces, key=lambda f: f.size)
            seen.append(measure(frames[i].image, main.box).problems(thresholds))
    if len(seen) * 2 <= len(idx):
        return Reason.of(ReasonCode.NO_FACE)
    failing = [p for p in seen if p]
    if len(failing) * 2 > len(seen):
        counts = Counter(q for p in failing for q in p)
        return Reason.of(QUALITY_REASONS[counts.most_common(1)[0][0]])
    return Reason.of(
        ReasonCode.NO_FACE,
        "review",
        detail="a face is in view but its features could not be followed",
        message="We could see a face but not follow its features. Remove anything covering "
        "your face (a mask, a hand, hair) and look at the camera.",
    )
