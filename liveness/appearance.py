"""Challenge events that a photo cannot make: the pixels of the eyes or mouth must change.

The landmarker fits a face model to every frame, and on a printed or displayed photo that
is moved, tilted or bent it sometimes reads the eyes as closing or the jaw as dropping
(issue 9: 2 of 18 generated prints gave ``open_mouth`` events and 2 gave blinks). The
landmarks move; the pixels of the eyes and mouth do not, except for what the motion of the
whole sheet explains.

:func:`appearance_change` measures that directly. Between a *rest* frame (the same feature
at rest, just before or after the event) and the event's *peak* frame:

1. each frame's face is cut out in a canonical frame (:class:`FaceThumb`, eye corners
   level and a fixed distance apart); the peak face is mapped onto the rest face by the
   similarity of landmarks that a blink, a smile or an open mouth do not move (forehead,
   nose, temples, eye corners), then by the homography that best aligns the pixels
   outside the action's region (ECC). A sheet of paper or a screen is a plane, so a
   homography explains its motion exactly; a real head over the fraction of a second of
   an event is close to one;
2. each face is normalised to zero mean and unit deviation over the face, so that exposure
   changes cancel;
3. the mean absolute difference is taken in the region of the action (both eyes for a
   blink, the lips for a smile or an open mouth) and in a *control* region that no action
   moves (nose and forehead). The ratio of the two is the appearance change.

A real blink covers the iris with the lid; a real open mouth shows the dark mouth cavity or
teeth: the region changes several times more than the control. A photo's "event" changes
both regions by the same noise, a ratio near 1. :func:`confirm_events` keeps the events
whose ratio reaches its kind's threshold (:class:`AppearanceThresholds`); the
measurement behind the defaults is in ``benchmarks/README.md`` (section "Appearance check
of events", ``python -m benchmarks.event_pixels``).

Head turns and looks are not checked here: their physics is the 3D check of
:mod:`liveness.geometry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from .challenges import ActionEvent
from .landmarks import FaceMesh

# Landmarks a blink, smile or open mouth leave in place (MediaPipe face mesh indices):
# forehead, brow-to-nose line, nose, temples and the eye corners.
STABLE = (
    10,
    109,
    338,
    151,
    9,
    8,
    168,
    6,
    197,
    195,
    5,
    4,
    1,
    98,
    327,
    234,
    454,
    127,
    356,
    33,
    133,
    362,
    263,
)
# Regions (polygons of mesh indices).
_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
_CONTROL = (151, 337, 9, 8, 168, 6, 197, 195, 5, 4, 45, 275, 107, 336)
_FACE = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)
# Canonical frame: the eye corners this far apart, in an image this size.
_EYE_SPAN = 64.0
_SIZE = 192
# Which region each action must change, and which blendshapes say "at rest".
REGIONS = {"blink": (_RIGHT_EYE, _LEFT_EYE), "smile": (_LIPS,), "open_mouth": (_LIPS,)}

_REST_SHAPES = {
    "blink": ("eyeBlinkLeft", "eyeBlinkRight"),
    "smile": ("mouthSmileLeft", "mouthSmileRight"),
    "open_mouth": ("jawOpen",),
}
# How far from the event a rest frame may be (s).
_REST_WINDOW_S = 0.6


@dataclass(frozen=True)
class AppearanceThresholds:
    """The smallest appearance ratio that counts as a real action, per kind.

    Measured by ``python -m benchmarks.event_pixels`` (``benchmarks/README.md``, section
    "Appearance check of events"): events the landmarker read off printed photos (generated
    flat, bent and frame-filling prints, rendered prints and stills) reach at most 1.56 for
    a blink and 2.35 for an open mouth; none was a smile. Real events on the 49 real live
    clips: 91 % of blinks at 1.8 or more, every open mouth at 4.25 or more, 81 % of smiles
    at 2.0 or more (the rest are speech or squints read as an action). A print's cut-out
    eyes are real eyes: those blinks pass, and the 3D check and the texture model refuse
    that attack, not this one.
    """

    blink: float = 1.8
    smile: float = 2.0
    open_mouth: float = 3.0

    def of(self, kind: str) -> float:
        return float(getattr(self, kind))


@dataclass(frozen=True)
class AppearanceCheck:
    """One event's appearance change: ``ratio`` (action region / control region) and the
    times of the two frames compared; ``ratio`` is ``None`` when it could not be measured
    (no rest frame near the event, or the faces could not be mapped)."""

    kind: str
    peak: float
    rest: float | None
    ratio: float | None
    kept: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FaceThumb:
    """One frame's face in the canonical frame: the grey pixels (``_SIZE`` square, outer
    eye corners ``_EYE_SPAN`` apart and level) and the landmarks moved with them. 36 KB a
    frame: what a bounded-memory analysis keeps of every frame with a face, instead of
    the frame, for this check."""

    frame_index: int
    image: np.ndarray = field(repr=False)
    points: np.ndarray = field(repr=False)


def face_thumb(image: np.ndarray, mesh: FaceMesh) -> FaceThumb:
    """The :class:`FaceThumb` of ``mesh``'s face in ``image`` (BGR or grey). Only the face's
    surroundings (1.5 face boxes each way, more than the canonical square reaches) are
    converted to grey, and shrunk by area first when the face is large, so that the warp
    does not alias."""
    p = np.asarray(mesh.points[:, :2], np.float64)
    sim = _eye_similarity(p)
    scale = float(np.hypot(sim[0, 0], sim[0, 1]))
    box = mesh.box
    side = 1.5 * max(box[2] - box[0], box[3] - box[1])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0, y0 = int(max(0, cx - side)), int(max(0, cy - side))
    x1, y1 = int(min(image.shape[1], cx + side)), int(min(image.shape[0], cy + side))
    crop = image[y0:y1, x0:x1]
    if not crop.size:  # a mesh off the picture: take the picture as it is
        crop, x0, y0 = image, 0, 0
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    fx = fy = 1.0
    if scale < 0.8:
        k = scale * 1.25
        w, h = max(1, round(grey.shape[1] * k)), max(1, round(grey.shape[0] * k))
        fx, fy = w / grey.shape[1], h / grey.shape[0]
        grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_AREA)
    # image -> canonical is sim; crop (scaled) -> image is ``back``
    back = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]])
    m = (np.vstack([sim, [0, 0, 1]]) @ back)[:2]
    thumb = cv2.warpAffine(
        grey, m, (_SIZE, _SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    pts = p @ sim[:, :2].T + sim[:, 2]
    return FaceThumb(mesh.frame_index, thumb, pts.astype(np.float32))


def _eye_similarity(p: np.ndarray) -> np.ndarray:
    """2x3 similarity putting the outer eye corners ``_EYE_SPAN`` apart, level, above the
    middle of a ``_SIZE`` square."""
    a, b = p[33], p[263]
    v = b - a
    s = _EYE_SPAN / max(float(np.linalg.norm(v)), 1e-6)
    ang = np.arctan2(v[1], v[0])
    c, si = np.cos(-ang) * s, np.sin(-ang) * s
    rot = np.array([[c, -si], [si, c]])
    centre = (a + b) / 2
    shift = np.array([_SIZE / 2, _SIZE * 0.4]) - rot @ centre
    return np.hstack([rot, shift[:, None]])


def _mask(points: np.ndarray, polys: Sequence[Sequence[int]], grow: int = 0) -> np.ndarray:
    m = np.zeros((_SIZE, _SIZE), np.uint8)
    for poly in polys:
        cv2.fillPoly(m, [np.round(points[list(poly)]).astype(np.int32)], 1)
    if grow:
        m = cv2.dilate(m, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return m.astype(bool)


def appearance_change(rest: FaceThumb, peak: FaceThumb, kind: str) -> float | None:
    """Mean absolute change of the action's region over that of the control region between
    the rest and the peak frame. The peak face is mapped onto the rest face by the
    similarity of their stable landmarks, then by the homography that best aligns their
    pixels outside the action's region; each is normalised to zero mean and unit deviation
    over the face. ``None`` when the faces cannot be mapped."""
    src = np.asarray(peak.points[list(STABLE)], np.float64)
    dst = np.asarray(rest.points[list(STABLE)], np.float64)
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None:
        return None
    a = rest.image.astype(np.float32)
    b = cv2.warpAffine(
        peak.image.astype(np.float32),
        m,
        (_SIZE, _SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    pts = np.asarray(rest.points, np.float64)
    pts_peak = np.asarray(peak.points, np.float64) @ m[:, :2].T + m[:, 2]
    face = _mask(pts, (_FACE,))
    if face.sum() < 200:
        return None
    for img in (a, b):
        v = img[face]
        img -= v.mean()
        img /= max(float(v.std()), 1.0)
    # the action's region as the landmarks put it in either frame (an eye closing moves
    # its lower contour; an opening mouth moves its lower lip)
    polys = REGIONS[kind]
    region = (_mask(pts, polys, grow=2) | _mask(pts_peak, polys, grow=2)) & face
    control = _mask(pts, (_CONTROL,)) & face & ~region
    if region.sum() < 8 or control.sum() < 8:
        return None
    b = _register(a, b, face & ~region)
    diff = np.abs(a - b)
    return float(diff[region].mean() / max(float(diff[control].mean()), 0.05))


def _register(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``b`` refined onto ``a`` by the homography that best aligns their pixels outside the
    action's region (OpenCV's ECC, started from the landmark mapping). The landmarks of a
    photo the landmarker reads as changing expression are themselves displaced; the pixels
    of a plane are not, so the image decides the residual motion, not the mesh. When ECC
    does not converge, ``b`` is returned as it is."""
    warp = np.eye(3, dtype=np.float32)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    try:
        _, warp = cv2.findTransformECC(
            a, b, warp, cv2.MOTION_HOMOGRAPHY, crit, where.astype(np.uint8), 3
        )
    except cv2.error:
        return b
    return cv2.warpPerspective(
        b,
        warp,
        (_SIZE, _SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _rest_frame(
    e: ActionEvent, meshes: Sequence[FaceMesh | None], have: Mapping[int, object]
) -> FaceMesh | None:
    """The mesh, within ``_REST_WINDOW_S`` of the event but outside it, whose action
    blendshapes are lowest, counting each degree of head rotation away from the peak's
    pose as 0.02 of a blendshape score (a turned face is not the same picture)."""
    names = _REST_SHAPES[e.kind]
    peak = next((m for m in meshes if m is not None and m.frame_index == e.peak_frame), None)
    best, best_v = None, np.inf
    for m in meshes:
        if m is None or m.frame_index not in have:
            continue
        near_before = e.start - _REST_WINDOW_S <= m.t < e.start
        near_after = e.end < m.t <= e.end + _REST_WINDOW_S
        if not (near_before or near_after):
            continue
        v = float(np.mean([m.blendshapes.get(n, 0.0) for n in names]))
        if peak is not None:
            v += 0.02 * (abs(m.yaw - peak.yaw) + abs(m.pitch - peak.pitch))
        if v < best_v:
            best, best_v = m, v
    return best


def confirm_events(
    events: Sequence[ActionEvent],
    thumbs: Mapping[int, FaceThumb],
    meshes: Sequence[FaceMesh | None],
    *,
    thresholds: AppearanceThresholds,
    pool: Executor | None = None,
) -> tuple[list[ActionEvent], list[AppearanceCheck]]:
    """The events whose eyes or mouth really changed, and the check of each.

    ``thumbs`` maps a frame's index (``Frame.index``, the mesh's ``frame_index``) to its
    :class:`FaceThumb`; ``thresholds`` the ratio each kind must reach. Events of kinds without a
    region (head turns and looks) pass unchecked. An event that cannot be measured (no
    rest frame within 0.6 s, an unmappable face) is not kept: an event is evidence only
    when it is seen in the pixels. ``pool``: where the events are measured side by side
    (each measurement is independent; the same results as without it).
    """
    by_index = {m.frame_index: m for m in meshes if m is not None}
    checked = [e for e in events if e.kind in REGIONS]
    rests = [_rest_frame(e, meshes, thumbs) for e in checked]

    def ratio_of(k: int) -> float | None:
        e, rest = checked[k], rests[k]
        if by_index.get(e.peak_frame) is None or rest is None or e.peak_frame not in thumbs:
            return None
        return appearance_change(thumbs[rest.frame_index], thumbs[e.peak_frame], e.kind)

    jobs = range(len(checked))
    ratios = iter(list(map(ratio_of, jobs) if pool is None else pool.map(ratio_of, jobs)))
    rest_of = iter(rests)
    kept: list[ActionEvent] = []
    checks: list[AppearanceCheck] = []
    for e in events:
        if e.kind not in REGIONS:
            kept.append(e)
            continue
        ratio, rest = next(ratios), next(rest_of)
        ok = ratio is not None and ratio >= thresholds.of(e.kind)
        checks.append(
            AppearanceCheck(
                e.kind,
                e.peak,
                None if rest is None else rest.t,
                None if ratio is None else round(ratio, 3),
                ok,
            )
        )
        if ok:
            kept.append(e)
    return kept, checks


def seen_in_pixels(
    events: Sequence[ActionEvent],
    frames: Sequence,
    meshes: Sequence[FaceMesh | None],
    thresholds: AppearanceThresholds,
) -> tuple[list[ActionEvent], list[AppearanceCheck]]:
    """:func:`confirm_events` over a clip's analysed frames (``Frame`` objects), making the
    thumbnails of only the frames the events need (their peaks and the frames within
    0.6 s around them)."""
    by_index = {m.frame_index: m for m in meshes if m is not None}
    need = set()
    for e in events:
        if e.kind in REGIONS:
            lo, hi = e.start - _REST_WINDOW_S, e.end + _REST_WINDOW_S
            need |= {m.frame_index for m in by_index.values() if lo <= m.t <= hi}
    thumbs = {f.index: face_thumb(f.image, by_index[f.index]) for f in frames if f.index in need}
    return confirm_events(events, thumbs, meshes, thresholds=thresholds)
