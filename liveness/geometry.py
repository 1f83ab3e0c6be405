"""3D consistency: does the face move like a rigid head or like a flat sheet?

A printed or displayed photo is a plane: whatever way it is tilted, turned or moved, the 2D
positions of its landmarks in one frame are one homography of their positions in another,
up to the landmarker's jitter. A real head is not a plane: when it turns, the nose moves
against the cheeks and the sides of the face (parallax), and no homography explains that.

For pairs of frames this module fits, on the landmarks of the rigid part of the face
(forehead, nose, eye corners, cheekbones, temples; not the mouth, eyelids or jaw, which
move with expression):

* a similarity (rotation, scale, shift): what moving the face in the image plane explains;
* a homography: what any plane, tilted in any way, explains;
* a rigid 3D face: the landmarker's 3D points of the first frame seen by an affine camera
  (``x' = A [x, y, z, 1]``), which is how a rigid head projects at selfie distance.

Residuals are measured in units of the face's width (the distance between the outer eye
corners) so they do not depend on resolution or distance.

In a pair where the landmarker's head pose changed by ``min_turn_deg`` or more, a real
head is explained by the rigid 3D model (residual near the landmark jitter) and not by a
plane (the nose moves against the cheeks: parallax), so ``plane / rigid`` is large. For a
sheet the plane explains everything the rigid model does (the landmarker reads a tilted
photo as a turned head, but the points it finds still lie on one plane): the ratio stays
near 1. Over a clip, :func:`consistency` reports:

* ``ratio``: the median, over the pairs with a pose change, of the homography residual
  divided by the rigid-3D residual;
* ``parallax``: the median homography residual over those pairs;
* ``verdict``: ``"3d"``, ``"flat"`` or ``"no_evidence"`` (too few pairs with a pose change
  to tell, e.g. a person holding still: never taken as flat).

Thresholds: see :class:`GeometryThresholds` (measured by ``python -m benchmarks.attacks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .landmarks import FaceMesh

# Landmarks on the rigid part of the face (478-point MediaPipe mesh).
RIGID = (
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,  # midline: forehead to nose tip
    98, 327, 64, 294,  # nostrils' outer edges
    33, 133, 362, 263,  # eye corners
    116, 345, 123, 352, 50, 280,  # cheekbones
    234, 454, 127, 356, 162, 389,  # face sides at eye level
    21, 251, 54, 284, 103, 332, 67, 297,  # temples and upper forehead
)  # fmt: skip
_OUTER_EYES = (33, 263)


@dataclass(frozen=True)
class GeometryThresholds:
    """When a clip is called flat or 3D.

    A pair of frames at most ``max_pair_gap_s`` apart *turns* when the landmarker's yaw and
    pitch differ by ``min_turn_deg`` or more (Euclidean); ``min_pairs`` such pairs are
    needed for any verdict. ``ratio`` (median plane / rigid-3D residual over turning pairs)
    under ``flat_below`` is flat, over ``solid_above`` is 3D.

    Measured (``python -m benchmarks.attacks``, ``benchmarks/README.md``, section "3D
    consistency"): the 16 shared live clips with enough head turn score 1.88-8.15 (median
    4.1) and no live clip is flat; prints tilted by hand up to 40 degrees that reach a
    12-degree pose change score 1.37 (flat), 1.05-1.99 (cut-out eyes) and 1.34-2.59 (bent:
    a bent sheet is not a plane). Flat is a reject, so its threshold sits below the lowest
    live clip with a margin; 3D needs 2.5.
    """

    min_turn_deg: float = 12.0
    min_pairs: int = 3
    flat_below: float = 1.6
    solid_above: float = 2.5
    max_pair_gap_s: float = 2.0
    pair_step: int = 2
    max_pairs: int = 120


@dataclass(frozen=True)
class Consistency:
    """What :func:`consistency` found over a clip (residuals in face widths)."""

    verdict: str  # "3d", "flat" or "no_evidence"
    ratio: float | None  # median plane / rigid-3D residual of turning pairs
    parallax: float | None  # median homography residual of turning pairs
    offplane: float | None  # median similarity residual of turning pairs
    turning_pairs: int
    pose_range_deg: float  # largest pose change between any two frames compared
    jitter: float | None  # median homography residual of neighbouring frames

    def to_dict(self) -> dict:
        return asdict(self)


def similarity_residual(a: np.ndarray, b: np.ndarray) -> float:
    """RMS distance left after the least-squares similarity (Umeyama) mapping ``a`` to ``b``
    (both ``(n, 2)``)."""
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    a0, b0 = a - ma, b - mb
    za = a0[:, 0] + 1j * a0[:, 1]
    zb = b0[:, 0] + 1j * b0[:, 1]
    s = np.vdot(za, zb) / max(np.vdot(za, za).real, 1e-12)  # complex scale-rotation
    r = zb - s * za
    return float(np.sqrt(np.mean(np.abs(r) ** 2)))


def homography_residual(a: np.ndarray, b: np.ndarray) -> float:
    """RMS distance left after the least-squares (DLT, normalised) homography from ``a`` to
    ``b`` (both ``(n, 2)``, n >= 4)."""
    p = _apply(fit_homography(a, b), a)
    return float(np.sqrt(np.mean(np.sum((p - b) ** 2, axis=1))))


def fit_homography(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 3x3 least-squares (normalised DLT) homography taking ``a`` to ``b`` (``(n, 2)``)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ta, tb = _normaliser(a), _normaliser(b)
    an = _apply(ta, a)
    bn = _apply(tb, b)
    n = len(a)
    m = np.zeros((2 * n, 9))
    x, y = an[:, 0], an[:, 1]
    u, v = bn[:, 0], bn[:, 1]
    m[0::2, 0:3] = np.stack([x, y, np.ones(n)], 1)
    m[0::2, 6:9] = -u[:, None] * np.stack([x, y, np.ones(n)], 1)
    m[1::2, 3:6] = np.stack([x, y, np.ones(n)], 1)
    m[1::2, 6:9] = -v[:, None] * np.stack([x, y, np.ones(n)], 1)
    _, _, vt = np.linalg.svd(m)
    return np.linalg.inv(tb) @ vt[-1].reshape(3, 3) @ ta


def _normaliser(p: np.ndarray) -> np.ndarray:
    c = p.mean(axis=0)
    d = np.sqrt(np.mean(np.sum((p - c) ** 2, axis=1)))
    s = np.sqrt(2) / max(d, 1e-9)
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])


def _apply(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.c_[p, np.ones(len(p))] @ h.T
    return q[:, :2] / q[:, 2:3]


def rigid_residual(a3: np.ndarray, b: np.ndarray) -> float:
    """RMS distance left after the least-squares affine camera ``b ~ [a3, 1] @ M`` mapping
    3D points ``a3`` (``(n, 3)``) to 2D points ``b`` (``(n, 2)``)."""
    x = np.c_[a3, np.ones(len(a3))]
    m, *_ = np.linalg.lstsq(x, b, rcond=None)
    return float(np.sqrt(np.mean(np.sum((x @ m - b) ** 2, axis=1))))


def _face_width(a: np.ndarray, b: np.ndarray) -> float:
    """The mean outer-eye-corner distance of meshes ``a`` and ``b`` (at least 1e-6)."""
    width = 0.5 * (
        np.linalg.norm(a[_OUTER_EYES[0], :2] - a[_OUTER_EYES[1], :2])
        + np.linalg.norm(b[_OUTER_EYES[0], :2] - b[_OUTER_EYES[1], :2])
    )
    return max(float(width), 1e-6)


def pair_residuals(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """``(similarity, homography, rigid 3D)`` residuals from mesh ``a`` to mesh ``b`` (both
    ``(478, 3)``) on the rigid landmarks, in face widths (the mean outer-eye-corner
    distance of the two)."""
    ra = np.asarray(a[list(RIGID), :2], np.float64)
    rb = np.asarray(b[list(RIGID), :2], np.float64)
    w = _face_width(a, b)
    a3 = np.asarray(a[list(RIGID)], np.float64)
    return (
        similarity_residual(ra, rb) / w,
        homography_residual(ra, rb) / w,
        rigid_residual(a3, rb) / w,
    )


def pair_homography_residual(a: np.ndarray, b: np.ndarray) -> float:
    """The homography residual of :func:`pair_residuals` alone (the same value)."""
    ra = np.asarray(a[list(RIGID), :2], np.float64)
    rb = np.asarray(b[list(RIGID), :2], np.float64)
    return homography_residual(ra, rb) / _face_width(a, b)


def consistency(
    meshes: Sequence[FaceMesh | None],
    thresholds: GeometryThresholds | None = None,
    window: tuple[float, float] | None = None,
) -> Consistency:
    """Judge a clip's face (or the part of it inside ``window``, seconds): rigid 3D head,
    flat sheet, or not enough head motion to tell.

    Pairs: every frame with every ``pair_step``-th later frame up to ``max_pair_gap_s``
    later. ``jitter`` is the median homography residual of neighbouring frames (the
    landmarker's own noise).
    """
    th = thresholds or GeometryThresholds()
    ms = [m for m in meshes if m is not None]
    if window is not None:
        ms = [m for m in ms if window[0] <= m.t <= window[1]]
    pose = np.array([(m.yaw, m.pitch) for m in ms], np.float64).reshape(-1, 2)
    cand, widest = [], 0.0
    for i, m in enumerate(ms):
        for k in range(i + 1, len(ms), th.pair_step):
            if ms[k].t - m.t > th.max_pair_gap_s:
                break
            d = float(np.hypot(*(pose[k] - pose[i])))
            widest = max(widest, d)
            if d >= th.min_turn_deg:
                cand.append((i, k))
    # the residuals cost a small SVD each: at most ``max_pairs`` pairs, evenly spread
    turning = [
        pair_residuals(ms[i].points, ms[k].points) for i, k in _evenly(cand, th.max_pairs)
    ]
    near = [
        pair_homography_residual(ms[i].points, ms[i + 1].points)
        for i in _evenly(list(range(len(ms) - 1)), th.max_pairs // 2)
    ]
    jitter = float(np.median(near)) if near else None
    if len(turning) < th.min_pairs:
        return Consistency("no_evidence", None, None, None, len(turning), widest, jitter)
    res = np.array(turning)
    ratio = float(np.median(res[:, 1] / np.maximum(res[:, 2], 1e-6)))
    parallax = float(np.median(res[:, 1]))
    offplane = float(np.median(res[:, 0]))
    if ratio < th.flat_below:
        verdict = "flat"
    elif ratio > th.solid_above:
        verdict = "3d"
    else:
        verdict = "no_evidence"
    return Consistency(verdict, ratio, parallax, offplane, len(turning), widest, jitter)


def _evenly(items: list, k: int) -> list:
    """At most ``k`` of ``items``, evenly spread (all of them when there are few)."""
    if len(items) <= k:
        return items
    return [items[int(round(x))] for x in np.linspace(0, len(items) - 1, k)]
