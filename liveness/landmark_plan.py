"""Which frames the landmarker sees: a sparse first pass, then the frames where the eyes move.

The face landmarker is the costliest stage of a verification (about 12 ms of CPU per frame
on one core, against 2 ms to decode one). Most of a selfie clip is a face holding still,
and its landmarks at 15 fps say nothing that those at 5 fps do not; what needs every frame
is where the eyes move: a blink can close them for a single frame at 15 fps.

So the landmarks are computed in two passes, both while the video is decoded
(:class:`GapPlanner`, run by :class:`liveness.landmarks.LandmarkStream`):

1. **First pass**: frames at about ``first_pass_fps`` (by time, like the decoder's own
   sampling, so a 5 fps clip is landmarked whole), sent to the landmarker as decoded.
2. **Second pass**: the frames between two first-pass frames ``a`` and ``b`` (a *gap*) are
   decided as soon as both ends are landmarked. A frame of the gap is landmarked when

   * ``a`` or ``b`` has no face (where the face was lost is then known to the frame);
   * the eyes are closing or closed at ``a`` or ``b``: the eye closure of
     :mod:`liveness.challenges` (same signal) is at least ``blink_share`` of the blink's
     *exit* threshold at one end, and not deep in a closure at both (``inside`` times the
     enter threshold: a 2-second closure is not landmarked all through);
   * its own pixels around the eyes depart from what ``a`` and ``b`` predict
     (:func:`patch_change` at least ``patch_change``): a blink that starts and ends
     between ``a`` and ``b``, unseen by either, still changes the lids' pixels;
   * with ``held_actions``, also around head turns and tilts, smiles and open mouths (the
     same rule on their signals, ``hold_share`` of their exit thresholds). Off by default:
     in a plain verification these actions are reported but decide nothing, and a
     challenge's steps are checked with every frame landmarked (``Verifier.verify`` uses
     no plan when it is given a challenge token).

   The other frames of the gap are never landmarked.

**Rest values while decoding.** The eye closure is relative to the eyes' rest (open) state,
which the whole clip would give only at its end. The gap ending at first-pass frame ``b``
takes its rest values from the first-pass frames up to ``b``, or, for the gaps of the clip's
first ``rest_after_s`` seconds, from the first-pass frames of those seconds: those gaps
wait until they are landmarked (the only frames held for a decision longer than a gap;
:meth:`LandmarkPlan.hold_frames`). Which frames are landmarked is a function of the
frames alone, never of timing (the first-pass frames go to their own landmarkers in order,
the second-pass frames to others, gap after gap), so the results are repeatable.

Frames that were not landmarked get no mesh at all: nothing is interpolated, and the caller
analyses the landmarked frames only (``LandmarkStream.select``), so that a frame without a
mesh always means "no face found" downstream. Statistics over the whole clip (the action
detector's rest values, the expression motion, the face fraction) are taken from the evenly
spaced first pass (``LandmarkStream.evenly_spaced``): the second pass gathers around the
eyes' movements and would bias them.

Measured on the 56 shared real clips (``python -m benchmarks.landmark_events``; figures,
commands and the held-out choice of ``patch_change`` in ``benchmarks/README.md``, section
"Landmarks on the frames that need them").
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .challenges import DetectorConfig, measure_signals, mode
from .errors import InputError
from .landmarks import FaceMesh
from .video import Frame, Sampler

# Mesh points of each eye: corners, lids and iris centre.
_EYES = (
    (33, 133, 160, 144, 159, 145, 158, 153, 468),
    (263, 362, 387, 373, 386, 374, 385, 380, 473),
)


@dataclass(frozen=True)
class LandmarkPlan:
    """How sparse the first pass is and what sends the landmarker back to the frames between.

    * ``first_pass_fps``: rate of the first pass (seconds between its frames: ``1 / fps``).
    * ``blink_share``: a first-pass frame whose eye closure deviates from rest by this
      share of the blink's exit threshold has the frames around it landmarked;
      ``hold_share``: the same for the held actions (head turns and tilts, smile, open
      mouth), whose events last 0.2 s or more.
    * ``inside``: gaps whose two ends are both past ``inside`` times the enter threshold
      (deep in a long closure or a held action) are not filled.
    * ``held_actions``: fill around turns, tilts, smiles and open mouths too.
    * ``patch_change``: a left-out frame whose eye patches depart from the prediction by
      this share of their contrast (:func:`patch_change`) is landmarked. 0.38: chosen on
      a held-out split of the shared clips' subjects (``benchmarks.landmark_events
      --patch-stats``): 0.8 times the lowest patch change of a closed-eye frame that both
      first-pass neighbours show open, on one half (0.477, a replay clip); on the other
      half the lowest such frame is at 0.80 (2.1 times the threshold) and 6 % of the
      other left-out frames reach it. The other way round (fit 0.64) left three
      closed-eye frames of the replay clip under it: few such frames (12, in 9
      subjects) decide this value.
    * ``rest_after_s``: the gaps of the clip's first seconds wait for the first-pass
      frames of this many seconds, whose rest values they use.
    * ``detector``: the action detector's settings (thresholds and baselines).

    Defaults: see the module docstring and ``benchmarks/README.md``.
    """

    first_pass_fps: float = 5.0
    blink_share: float = 0.5
    hold_share: float = 0.8
    inside: float = 1.15
    held_actions: bool = False
    patch_change: float = 0.38
    rest_after_s: float = 2.0
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.first_pass_fps) and self.first_pass_fps > 0):
            raise InputError("first_pass_fps must be positive")
        if not (0 < self.blink_share <= 1 and 0 < self.hold_share <= 1):
            raise InputError("blink_share and hold_share must be in (0, 1]")
        if not self.patch_change > 0:
            raise InputError("patch_change must be positive")
        if not (math.isfinite(self.rest_after_s) and self.rest_after_s >= 0):
            raise InputError("rest_after_s must be zero or more")

    def hold_frames(self, sample_fps: float | None) -> int:
        """How many frames, from the clip's start, are pushed before the first gap can be
        decided (the first ``rest_after_s`` seconds at ``sample_fps``, 30 fps if not
        given, and one)."""
        return math.ceil(self.rest_after_s * (sample_fps or 30.0)) + 1

    def spacing(self, sample_fps: float | None) -> int:
        """Most sampled frames from one first-pass frame to the next, that one included:
        the decoder's sampler keeps frames at least half a step apart (``1 / (2 *
        sample_fps)``, when it catches up after a gap in the source) and the next
        first-pass frame comes at most ``1 / first_pass_fps`` later (7 at 15 fps)."""
        return math.ceil(2 * (sample_fps or 30.0) / self.first_pass_fps) + 1


# The first pass keeps a frame when its time reaches the next planned instant: the rule of
# the decoder's sampler, so that its rate does not drift.
FirstPass = Sampler


# -- the eye closure and held actions against rest values --------------------------------


def signal_row(mesh: FaceMesh) -> np.ndarray:
    """``(6,)`` signals of one mesh, as :func:`liveness.challenges.measure_signals`: eye
    aspect ratio, blink score, yaw, pitch, smile, jaw."""
    s = measure_signals([mesh])
    return np.array([s.eye_open[0], s.blink_score[0], s.yaw[0], s.pitch[0], s.smile[0], s.jaw[0]])


def activity(rest: np.ndarray, rows: np.ndarray, config: DetectorConfig) -> np.ndarray:
    """``(n, 5)`` deviations from rest of eye closure, yaw, pitch, smile and jaw for each
    row of ``rows`` (:func:`signal_row`), each divided by its action's exit threshold
    (1.0: the level where an event ends). Rest values from ``rest`` (rows, at least one)
    as in :func:`liveness.challenges.detect_actions`: a low percentile for the one-sided
    signals (a high one for the eyes' aspect ratio), the pose mode for yaw and pitch;
    turns count both ways."""
    cfg = config
    p = cfg.rest_percentile
    open_ear = max(float(np.percentile(rest[:, 0], 100.0 - p)), 1e-6)
    rest_score = float(np.percentile(rest[:, 1], p))
    span = max(cfg.blink_score_closed - rest_score, 0.2)

    def closure(r: np.ndarray) -> np.ndarray:
        return 0.5 * ((1.0 - r[:, 0] / open_ear) + (r[:, 1] - rest_score) / span)

    c = closure(rows) - float(np.percentile(closure(rest), p))
    yaw = np.abs(rows[:, 2] - mode(rest[:, 2], cfg.pose_mode_share))
    pitch = np.abs(rows[:, 3] - mode(rest[:, 3], cfg.pose_mode_share))
    smile = rows[:, 4] - float(np.percentile(rest[:, 4], p))
    jaw = rows[:, 5] - float(np.percentile(rest[:, 5], p))
    exits = np.array([t.exit for t in _thresholds(cfg)])
    return np.stack([c, yaw, pitch, smile, jaw], axis=1) / exits


def _thresholds(cfg: DetectorConfig):
    """The detector's thresholds in the order of :func:`activity`'s columns."""
    return (cfg.blink, cfg.turn, cfg.pitch, cfg.smile, cfg.open_mouth)


def near_action(levels: np.ndarray, plan: LandmarkPlan) -> bool:
    """Whether the gap between two first-pass frames with these :func:`activity` rows
    (``(2, 5)``) is filled: one end at least ``blink_share`` (``hold_share`` for the held
    actions, with ``held_actions``) of the exit level, and not both deep inside."""
    cfg = plan.detector
    quiet = np.array([plan.blink_share] + 4 * [plan.hold_share])
    deep = plan.inside * np.array([t.enter / t.exit for t in _thresholds(cfg)])
    near = (levels.max(axis=0) >= quiet) & (levels.min(axis=0) < deep)
    return bool(near[0] or (plan.held_actions and near.any()))


# -- the eyes' pixels ------------------------------------------------------------------------

_PATCH = (32, 20)  # (width, height) every eye patch is resampled to
_SHIFT = 3  # pixels (of the resampled patch) that the frame's patch may be shifted by


def _eye_box(points: np.ndarray, idx: Sequence[int], grow: float = 0.0) -> np.ndarray:
    """``(x1, y1, x2, y2)`` around the eye's landmarks, 1.5 times the eye's width wide and
    0.4 of that high (the lids and little else), centred on the eye; ``grow``: a border of
    that many patch pixels (:data:`_PATCH` scale) added on every side."""
    xy = points[list(idx), :2].astype(np.float64)
    centre = 0.5 * (xy.min(axis=0) + xy.max(axis=0))
    w = 1.5 * max(float(np.ptp(xy[:, 0])), 2.0)
    h = 0.4 * w
    w2 = w * (1 + 2 * grow / _PATCH[0])
    h2 = h * (1 + 2 * grow / _PATCH[1])
    half = np.array([w2 / 2, h2 / 2])
    return np.concatenate([centre - half, centre + half])


def _patch(image: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """Grey pixels of ``box`` resampled to ``size`` (``None`` if the box leaves the image
    or is not finite)."""
    h, w = image.shape[:2]
    if not np.all(np.isfinite(box)):
        return None
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h or x2 - x1 < 2 or y2 - y1 < 2:
        return None
    crop = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def patch_change(a: Frame, f: Frame, b: Frame, mesh_a: FaceMesh, mesh_b: FaceMesh) -> float:
    """How much frame ``f`` (between ``a`` and ``b`` in time) departs, around the eyes, from
    what ``a`` and ``b`` predict for it.

    For each eye: the eye's box in ``a`` and in ``b`` (from their landmarks) and, in ``f``,
    the box interpolated linearly in time between them; the grey patches resampled to
    32x20 pixels. The prediction for ``f`` is the same time-weighted blend of the patches
    of ``a`` and ``b``; ``f``'s patch is compared with it at every shift of up to 3 pixels
    (the head need not move linearly), keeping the best match: root mean square
    difference divided by the prediction's contrast (standard deviation, at least 4 grey
    levels). The larger of the two eyes. A lid that closes and opens again between ``a``
    and ``b`` is far from the blend of two open eyes at any shift; a moving head is not.
    ``inf`` (landmark the frame) where an eye box leaves the image or sizes differ."""
    if f.image.shape[:2] != a.image.shape[:2] or b.image.shape[:2] != a.image.shape[:2]:
        return np.inf
    span = b.t - a.t
    w = 0.5 if span <= 0 else float(np.clip((f.t - a.t) / span, 0.0, 1.0))
    big = (_PATCH[0] + 2 * _SHIFT, _PATCH[1] + 2 * _SHIFT)
    out = 0.0
    for idx in _EYES:
        ba, bb = _eye_box(mesh_a.points, idx), _eye_box(mesh_b.points, idx)
        fa, fb = _eye_box(mesh_a.points, idx, _SHIFT), _eye_box(mesh_b.points, idx, _SHIFT)
        pa, pb = _patch(a.image, ba, _PATCH), _patch(b.image, bb, _PATCH)
        pf = _patch(f.image, (1 - w) * fa + w * fb, big)
        if pa is None or pb is None or pf is None:
            return np.inf
        pred = (1 - w) * pa + w * pb
        contrast = max(float(pred.std()), 4.0)
        # smallest sum of squared differences over the shifts, as an RMS difference
        ssd = cv2.matchTemplate(pf, pred, cv2.TM_SQDIFF)
        best = float(np.sqrt(max(float(ssd.min()), 0.0) / pred.size))
        out = max(out, best / contrast)
    return out


# -- deciding gaps as the first pass comes back ----------------------------------------------


@dataclass(frozen=True)
class Gap:
    """One decided gap: its first-pass frame on the left (``left``, a position among the
    pushed frames, and that frame), the frames between to landmark (``fill``) and those
    never landmarked (``skip``), each as ``(position, frame)``."""

    left: int
    left_frame: Frame
    fill: list[tuple[int, Frame]]
    skip: list[tuple[int, Frame]]


class GapPlanner:
    """The plan of one clip, decided as frames are pushed and first-pass landmarks come back
    (no threads: :class:`liveness.landmarks.LandmarkStream` calls it under its lock).

    ``push`` each frame (says whether it is a first-pass frame), ``result`` each first-pass
    mesh, then ``decide`` gives the gaps that can now be decided, in order; ``end`` once the
    last frame is pushed (the frames after the last first-pass frame are then a gap with a
    missing end: all landmarked). The planner holds the pixels of the frames of undecided
    gaps and of the first-pass frames at their ends, and lets go of them in the :class:`Gap`
    it returns. ``hold``: the first gaps wait until this many frames are pushed (or the
    clip ends) and take their rest values from the first-pass frames among them."""

    def __init__(self, plan: LandmarkPlan, hold: int) -> None:
        self.plan = plan
        self.hold = max(1, int(hold))
        self._first = FirstPass(plan.first_pass_fps)
        self.frames: dict[int, Frame] = {}
        self.first: list[int] = []  # positions of the first-pass frames
        self._ordinal: dict[int, int] = {}
        self.meshes: dict[int, FaceMesh | None] = {}
        self._rows: list[np.ndarray | None] = []
        self._known: list[bool] = []
        self._done = 0  # first-pass frames with results, contiguous from the first
        self.pushed = 0
        self.next_gap = 0
        self.ended = False

    def push(self, frame: Frame) -> bool:
        """Take the next frame; ``True`` when it belongs to the first pass."""
        k = self.pushed
        self.pushed += 1
        self.frames[k] = frame
        if not self._first.keep(frame.t):
            return False
        self._ordinal[k] = len(self.first)
        self.first.append(k)
        self._rows.append(None)
        self._known.append(False)
        return True

    def is_first(self, k: int) -> bool:
        return k in self._ordinal

    def result(self, k: int, mesh: FaceMesh | None) -> None:
        """The landmarks of first-pass frame ``k``."""
        j = self._ordinal[k]
        self.meshes[k] = mesh
        self._rows[j] = None if mesh is None else signal_row(mesh)
        self._known[j] = True
        while self._done < len(self._known) and self._known[self._done]:
            self._done += 1

    def end(self) -> None:
        self.ended = True

    def waits_for_input(self, oldest: int) -> bool:
        """Whether frame ``oldest`` (the oldest not yet given back) and everything after it
        can be decided only with frames not yet pushed: the first ``hold`` frames, or the
        frames from the newest first-pass frame on. The decoder must not wait then."""
        if self.ended:
            return False
        return self.pushed < self.hold or (bool(self.first) and oldest >= self.first[-1])

    def decide(self) -> list[Gap]:
        """The gaps, in order from the next undecided one, that can now be decided."""
        out = []
        while self.next_gap < len(self.first):
            i = self.next_gap
            a = self.first[i]
            last = i == len(self.first) - 1
            if last and not self.ended:
                break
            b = None if last else self.first[i + 1]
            if a not in self.meshes or (b is not None and b not in self.meshes):
                break
            if self.pushed < self.hold and not self.ended:
                break
            # rest values from the first-pass frames up to b, or up to the hold
            limit = max(a if b is None else b, self.hold - 1)
            need = bisect.bisect_right(self.first, limit)
            if self._done < need:
                break
            between = list(range(a + 1, self.pushed if b is None else b))
            fill = set(self._fill(a, b, between, need))
            out.append(
                Gap(
                    a,
                    self.frames.pop(a),
                    [(k, self.frames.pop(k)) for k in between if k in fill],
                    [(k, self.frames.pop(k)) for k in between if k not in fill],
                )
            )
            self.next_gap += 1
        return out

    def _fill(self, a: int, b: int | None, between: list[int], need: int) -> list[int]:
        if not between:
            return []
        ma = self.meshes[a]
        mb = None if b is None else self.meshes[b]
        if ma is None or mb is None:
            return between
        rest = np.array([r for r in self._rows[:need] if r is not None])
        rows = np.stack([self._rows[self._ordinal[a]], self._rows[self._ordinal[b]]])
        if near_action(activity(rest, rows, self.plan.detector), self.plan):
            return between
        fa, fb = self.frames[a], self.frames[b]
        return [
            k
            for k in between
            if patch_change(fa, self.frames[k], fb, ma, mb) >= self.plan.patch_change
        ]
