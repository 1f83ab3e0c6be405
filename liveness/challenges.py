"""Active liveness: find requested face actions (blink, head turn, smile, ...) in a video.

:func:`detect_actions` turns the landmarker's per-frame :class:`~liveness.landmarks.FaceMesh`
list into :class:`ActionEvent` s; :func:`check_sequence` says whether the actions a user was
asked for happened, in order, inside a time window; :func:`check_challenge` applies it to a
server-issued challenge (:class:`~liveness.sessions.ChallengeGate` tokens) and gives the
evidence and reasons for the result.

Every signal is measured against the person's own neutral face, estimated from the same
clip, never against a fixed absolute value: a head held slightly turned, narrow eyes,
glasses or a beard shift the neutral value, not the size of an action. An action is a run
of frames whose deviation from that baseline crosses an *enter* threshold and lasts until it
falls below a lower *exit* threshold (hysteresis, so noise around one threshold does not
chatter into many events), with a minimum and maximum duration (a blink is brief, a turn is
held).

Signals (deviation from the baseline; "activity" grows with the action):

* ``blink``: eye closure, the mean of (a) ``1 - EAR / EAR_open`` where EAR is the eye aspect
  ratio of both eyes measured on the 3D mesh (so that a head turn barely changes it) and
  (b) the rise of the ``eyeBlinkLeft/Right`` blendshapes scaled to their closed-eye value.
  The two agree on real video; averaging halves the noise of either.
* ``turn_left`` / ``turn_right``: yaw (degrees); positive is the person's own left in a
  non-mirrored video, so ``mirrored=True`` flips its sign.
* ``look_up`` / ``look_down``: pitch (degrees), positive up.
* ``smile``: mean of ``mouthSmileLeft/Right``.
* ``open_mouth``: ``jawOpen``; the peak must also show a lip gap (inner lips apart by
  ``min_lip_gap`` of the mouth width), so a jaw drop with closed lips does not count.

Baselines: one-sided signals (eyes, smile, jaw) rest at their low end, so the baseline is a
low percentile of the activity (eyes closed for a third of a clip still leave the 20th
percentile open). Head angles are two-sided and a clip may spend much of its time turned,
so their baseline is the *mode*: the centre of the narrowest interval holding a given share
of the samples; a held neutral pose is denser than the ramps and holds of the actions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .actions import ACTION_PHRASES, Action
from .errors import InputError
from .landmarks import FaceMesh
from .reasons import Reason, ReasonCode

if TYPE_CHECKING:
    from .sessions import ChallengeClaims

# Eye landmarks (the person's right / left eye): corners, then three upper/lower lid pairs.
_RIGHT_EYE = (33, 133, ((160, 144), (159, 145), (158, 153)))
_LEFT_EYE = (263, 362, ((387, 373), (386, 374), (385, 380)))
_INNER_LIPS = (13, 14)
_MOUTH_CORNERS = (78, 308)


@dataclass(frozen=True)
class Thresholds:
    """Hysteresis and duration limits for one signal, in the signal's units.

    An event starts when the deviation from baseline reaches ``enter`` and ends at the last
    frame before it drops below ``exit``; it is kept when its duration (first to last frame
    above ``exit``) is within ``[min_s, max_s]``. ``full`` is the deviation that earns
    confidence 1 (confidence grows linearly from 0.5 at ``enter``).
    """

    enter: float
    exit: float
    full: float
    min_s: float = 0.0
    max_s: float = math.inf

    def __post_init__(self) -> None:
        if not (0 < self.exit < self.enter < self.full):
            raise InputError("thresholds need 0 < exit < enter < full")
        if self.min_s < 0 or self.max_s < self.min_s:
            raise InputError("durations need 0 <= min_s <= max_s")


@dataclass(frozen=True)
class DetectorConfig:
    """Detector settings. Defaults were chosen on the real clips in ``tests/test_challenges.py``.

    * blink: eye closure fraction. Hand-checked blinks peak at 0.55-0.95 (one-frame blinks
      of a 96x128 clip at 0.57), open-eye noise stays under 0.2 and the half-open eyes
      between two quick blinks sit at 0.25-0.3; hence enter 0.45, exit 0.3. At most 0.7 s
      (a long eye closure of 2-3 s is not a blink); no minimum, since at 15 fps a blink can
      be a single frame.
    * turn: 20 degrees of yaw to enter, 12 to exit, held 0.2 s. Talking heads sway by
      10 degrees around their mode.
    * look up/down: 15 / 9 degrees of pitch, held 0.2 s (people pitch less than they yaw).
    * smile: +0.4 smile score, held 0.3 s; open mouth: +0.35 jawOpen with lips apart,
      held 0.25 s (speech opens the jaw for shorter than that).
    * ``min_eye_closure``: in a blink each eye on its own must close by this share of its
      open aspect ratio. Measured at the blink peaks: real blinks in every shared live clip
      0.35-0.92 (the smallest on a webcam); blinks read off a print of a man with glasses
      (``benchmarks.attack_clips``) 0.28, 0.34, 0.37. 0.3 drops one of those and no real one;
      the others still need the head movement every challenge has.
    * ``max_gap_s``: frames without a face for longer than this split an event.
    * ``pose_mode_share``: the share of samples whose narrowest interval gives the pose
      baseline; ``rest_percentile``: the percentile of activity taken as rest.
    """

    blink: Thresholds = field(default_factory=lambda: Thresholds(0.45, 0.30, 0.80, 0.0, 0.7))
    turn: Thresholds = field(default_factory=lambda: Thresholds(20.0, 12.0, 30.0, 0.2))
    pitch: Thresholds = field(default_factory=lambda: Thresholds(15.0, 9.0, 25.0, 0.2))
    smile: Thresholds = field(default_factory=lambda: Thresholds(0.40, 0.25, 0.70, 0.3))
    open_mouth: Thresholds = field(default_factory=lambda: Thresholds(0.35, 0.20, 0.60, 0.25))
    min_lip_gap: float = 0.15
    # the blendshape score of a fully closed eye on MediaPipe's model (0.7-0.77 measured)
    blink_score_closed: float = 0.72
    max_gap_s: float = 0.3
    min_eye_closure: float = 0.3
    pose_mode_share: float = 0.4
    rest_percentile: float = 20.0


@dataclass(frozen=True)
class ActionEvent:
    """One detected action.

    ``start`` / ``peak`` / ``end`` are times (s) of the first frame past ``exit``, of the
    strongest frame and of the last frame past ``exit``; ``value`` is the peak deviation
    from ``baseline`` in the signal's units (closure fraction, degrees, score);
    ``start_frame`` / ``peak_frame`` / ``end_frame`` are the frames' indices in the video.
    """

    kind: str
    start: float
    peak: float
    end: float
    confidence: float
    value: float
    baseline: float
    start_frame: int
    peak_frame: int
    end_frame: int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Signals:
    """Per-frame raw signals of the frames with a face (times ``t``, frame indices)."""

    t: np.ndarray
    frame: np.ndarray
    eye_open: np.ndarray  # eye aspect ratio, both eyes
    blink_score: np.ndarray  # mean eyeBlinkLeft/Right
    yaw: np.ndarray  # person's own left positive, mirroring undone
    pitch: np.ndarray
    smile: np.ndarray
    jaw: np.ndarray
    lip_gap: np.ndarray  # inner-lip distance / mouth width


def detect_actions(
    meshes: Sequence[FaceMesh | None],
    *,
    mirrored: bool = False,
    config: DetectorConfig | None = None,
    rest: Sequence[FaceMesh | None] | None = None,
) -> list[ActionEvent]:
    """All actions in a clip, sorted by start time.

    Parameters
    ----------
    meshes : the landmarker's output per analysed frame, in time order; ``None`` where no
        face was found (treated as a gap: it neither starts nor ends an event unless the
        face is missing for longer than ``config.max_gap_s``).
    mirrored : the video is a front-camera preview recording (flipped left-right), so the
        person's left appears as their right; turn directions are swapped back.
    config : :class:`DetectorConfig`.
    rest : the frames whose signals give the rest values (percentiles, pose mode); default
        ``meshes``. Meshes landmarked more densely around movements
        (:mod:`liveness.landmark_plan`) pass their evenly spaced first pass here, so that
        the rest values are those of the whole clip rather than of its busiest moments.
    """
    config = config or DetectorConfig()
    s = measure_signals(meshes, mirrored=mirrored)
    if len(s.t) == 0:
        return []
    r = s if rest is None else measure_signals(rest, mirrored=mirrored)
    if len(r.t) == 0:
        r, rest = s, None
    cfg = config
    events: list[ActionEvent] = []

    closure, closure_base = _eye_closure(s, cfg, r)
    blinks = _events("blink", closure, closure_base, s, cfg.blink, cfg.max_gap_s)
    events += _both_eyes(blinks, meshes, cfg, meshes if rest is None else rest)

    yaw_base = mode(r.yaw, cfg.pose_mode_share)
    events += _events("turn_left", s.yaw - yaw_base, yaw_base, s, cfg.turn, cfg.max_gap_s)
    events += _events("turn_right", yaw_base - s.yaw, yaw_base, s, cfg.turn, cfg.max_gap_s)

    pitch_base = mode(r.pitch, cfg.pose_mode_share)
    events += _events("look_up", s.pitch - pitch_base, pitch_base, s, cfg.pitch, cfg.max_gap_s)
    events += _events("look_down", pitch_base - s.pitch, pitch_base, s, cfg.pitch, cfg.max_gap_s)

    where = {int(f): i for i, f in enumerate(s.frame)}
    jaw_base = float(np.percentile(r.jaw, cfg.rest_percentile))
    smile_base = float(np.percentile(r.smile, cfg.rest_percentile))
    smiles = _events("smile", s.smile - smile_base, smile_base, s, cfg.smile, cfg.max_gap_s)
    # An open mouth stretches the mouth corners too and reads as a smile; a smile whose
    # peak has the jaw dropped past the open-mouth exit level is the open mouth, not a smile
    # (otherwise "open your mouth" would also pass a "smile" step).
    events += [e for e in smiles if s.jaw[where[e.peak_frame]] - jaw_base < cfg.open_mouth.exit]

    gap_base = float(np.percentile(r.lip_gap, cfg.rest_percentile))
    mouth = _events("open_mouth", s.jaw - jaw_base, jaw_base, s, cfg.open_mouth, cfg.max_gap_s)
    # Lips must part at the peak: the jaw score alone also rises with a clenched-lip jaw drop.
    events += [e for e in mouth if s.lip_gap[where[e.peak_frame]] - gap_base >= cfg.min_lip_gap]

    return sorted(events, key=lambda e: (e.start, e.kind))


def _both_eyes(
    blinks: list[ActionEvent],
    meshes: Sequence[FaceMesh | None],
    cfg: DetectorConfig,
    rest: Sequence[FaceMesh | None],
) -> list[ActionEvent]:
    """The blinks in which *each* eye closed by at least ``cfg.min_eye_closure`` of its own
    open aspect ratio (the high percentile over the clip). One eye's landmarks jumping (a
    glint on glasses, a photo's eye read as half shut) does not make a blink."""
    if not blinks:
        return []
    by_frame = {m.frame_index: m for m in meshes if m is not None}
    eyes = (_RIGHT_EYE, _LEFT_EYE)
    ears = np.array([[_one_eye(m.points, eye) for eye in eyes] for m in rest if m is not None])
    open_ear = np.percentile(ears, 100.0 - cfg.rest_percentile, axis=0)
    keep = []
    for e in blinks:
        peak = np.array(
            [_one_eye(by_frame[e.peak_frame].points, eye) for eye in (_RIGHT_EYE, _LEFT_EYE)]
        )
        closure = 1.0 - peak / np.maximum(open_ear, 1e-6)
        if closure.min() >= cfg.min_eye_closure:
            keep.append(e)
    return keep


def _one_eye(p: np.ndarray, eye) -> float:
    pts = np.asarray(p, dtype=np.float64)
    a, b, pairs = eye
    width = np.linalg.norm(pts[a] - pts[b])
    return float(np.mean([np.linalg.norm(pts[u] - pts[v]) for u, v in pairs]) / max(width, 1e-6))


def measure_signals(meshes: Sequence[FaceMesh | None], *, mirrored: bool = False) -> Signals:
    """The raw per-frame signals of the frames that have a face."""
    ms = [m for m in meshes if m is not None]
    t = np.array([m.t for m in ms], dtype=np.float64)
    if np.any(np.diff(t) <= 0):
        raise InputError("meshes must be in increasing time order")
    sign = -1.0 if mirrored else 1.0

    def shape(m: FaceMesh, *names: str) -> float:
        return float(np.mean([m.blendshapes.get(n, 0.0) for n in names]))

    return Signals(
        t=t,
        frame=np.array([m.frame_index for m in ms], dtype=np.int64),
        eye_open=np.array([_eye_aspect(m.points) for m in ms]),
        blink_score=np.array([shape(m, "eyeBlinkLeft", "eyeBlinkRight") for m in ms]),
        yaw=np.array([sign * m.yaw for m in ms]),
        pitch=np.array([m.pitch for m in ms]),
        smile=np.array([shape(m, "mouthSmileLeft", "mouthSmileRight") for m in ms]),
        jaw=np.array([shape(m, "jawOpen") for m in ms]),
        lip_gap=np.array([_lip_gap(m.points) for m in ms]),
    )


def mode(values: np.ndarray, share: float) -> float:
    """Centre (median) of the narrowest interval that holds ``share`` of ``values``.

    A robust estimate of where a signal rests when other stretches of the clip are taken by
    actions (turned head) on either side.
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    k = max(1, min(len(v), math.ceil(share * len(v))))
    widths = v[k - 1 :] - v[: len(v) - k + 1]
    i = int(np.argmin(widths))
    return float(np.median(v[i : i + k]))


def _eye_aspect(p: np.ndarray) -> float:
    pts = np.asarray(p, dtype=np.float64)
    ratios = []
    for a, b, pairs in (_RIGHT_EYE, _LEFT_EYE):
        width = np.linalg.norm(pts[a] - pts[b])
        lids = np.mean([np.linalg.norm(pts[u] - pts[v]) for u, v in pairs])
        ratios.append(lids / max(width, 1e-6))
    return float(np.mean(ratios))


def _lip_gap(p: np.ndarray) -> float:
    pts = np.asarray(p, dtype=np.float64)
    width = np.linalg.norm(pts[_MOUTH_CORNERS[0]] - pts[_MOUTH_CORNERS[1]])
    return float(np.linalg.norm(pts[_INNER_LIPS[0]] - pts[_INNER_LIPS[1]]) / max(width, 1e-6))


def _eye_closure(
    s: Signals, cfg: DetectorConfig, rest: Signals | None = None
) -> tuple[np.ndarray, float]:
    """Closure in [0, 1]-ish per frame and the open-eye aspect ratio it is relative to
    (rest values from ``rest``, default ``s``)."""
    r = s if rest is None else rest
    # Open eyes are the rest state: a high percentile of the aspect ratio.
    open_ear = float(np.percentile(r.eye_open, 100.0 - cfg.rest_percentile))
    from_shape = 1.0 - s.eye_open / max(open_ear, 1e-6)
    rest_score = float(np.percentile(r.blink_score, cfg.rest_percentile))
    span = max(cfg.blink_score_closed - rest_score, 0.2)
    from_score = (s.blink_score - rest_score) / span
    return 0.5 * (from_shape + from_score), open_ear


def _events(
    kind: str,
    dev: np.ndarray,
    baseline: float,
    s: Signals,
    th: Thresholds,
    max_gap_s: float,
) -> list[ActionEvent]:
    """Hysteresis runs of ``dev`` (deviation from baseline) that pass the duration limits."""
    out: list[ActionEvent] = []
    n = len(dev)
    i = 0
    while i < n:
        if dev[i] < th.enter:
            i += 1
            continue
        # Walk back to where the deviation first crossed the exit threshold ...
        a = i
        while a > 0 and dev[a - 1] >= th.exit and s.t[a] - s.t[a - 1] <= max_gap_s:
            a -= 1
        # ... and forward until it falls below it (or the face is lost too long).
        b = i
        while b + 1 < n and dev[b + 1] >= th.exit and s.t[b + 1] - s.t[b] <= max_gap_s:
            b += 1
        duration = s.t[b] - s.t[a]
        if th.min_s <= duration <= th.max_s:
            k = a + int(np.argmax(dev[a : b + 1]))
            value = float(dev[k])
            conf = 0.5 + 0.5 * (value - th.enter) / (th.full - th.enter)
            out.append(
                ActionEvent(
                    kind=kind,
                    start=float(s.t[a]),
                    peak=float(s.t[k]),
                    end=float(s.t[b]),
                    confidence=float(np.clip(conf, 0.0, 1.0)),
                    value=value,
                    baseline=float(baseline),
                    start_frame=int(s.frame[a]),
                    peak_frame=int(s.frame[k]),
                    end_frame=int(s.frame[b]),
                )
            )
        i = b + 1
    return out


@dataclass(frozen=True)
class StepResult:
    """One requested action and the event that satisfied it (``None`` if none did)."""

    kind: str
    event: ActionEvent | None


@dataclass(frozen=True)
class SequenceResult:
    """Outcome of :func:`check_sequence`.

    ``completed``: every step was matched, in order, each inside its own window when step
    windows were given, and no more than ``max_other`` other actions were seen.
    ``out_of_order``: not completed, yet every requested action occurred (as often as
    requested) in the window, only in another order. ``failed_step`` / ``failed_kind``: the
    first step that could not be matched. ``mistimed``: ``"early"`` or ``"late"`` when that
    step's action did happen, but before or after its own window. ``other_actions``: events
    that no step used (blinks not counted: people blink on their own);
    ``too_many_other``: more of them than ``max_other``.
    """

    steps: tuple[StepResult, ...]
    completed: bool
    out_of_order: bool
    failed_step: int | None
    failed_kind: str | None
    mistimed: str | None = None
    other_actions: int = 0
    too_many_other: bool = False

    @property
    def message(self) -> str | None:
        """A sentence for the user about the first failed step, or ``None`` if completed."""
        if self.completed:
            return None
        phrase = ACTION_PHRASES.get(self.failed_kind or "", str(self.failed_kind))
        if self.mistimed == "early":
            return f"You started to {phrase} before you were asked to"
        if self.mistimed == "late":
            return f"You did {phrase} too long after you were asked to"
        if self.out_of_order:
            return "We saw the actions, but not in the order asked"
        if self.failed_step is None and self.too_many_other:
            return "We saw many movements that were not asked for"
        return f"We did not see you {phrase}"


def check_sequence(
    events: Sequence[ActionEvent],
    requested: Sequence[str],
    *,
    window: tuple[float, float] | None = None,
    min_confidence: float = 0.5,
    windows: Sequence[tuple[float, float]] | None = None,
    max_other: int | None = None,
) -> SequenceResult:
    """Match the ``requested`` action kinds, in order, against detected ``events``.

    Each step takes the earliest event of its kind that starts after the previous
    step's peak (so a turn back to the other side, which begins as the first turn is still
    returning, counts), lies inside ``window`` (``start >= window[0]`` and
    ``end <= window[1]``, seconds) and has ``confidence >= min_confidence``. Taking the
    earliest match never loses a later step, so a sequence is found whenever one exists.

    Timed steps: with ``windows`` (one ``(lo, hi)`` per step, seconds on the events' clock)
    a step's event must also *start* within ``lo <= start <= hi``: the prompt's time plus
    the shortest and the longest human reaction. An action done before its prompt (a
    pre-recorded clip) or long after it does not count, and ``mistimed`` says which.

    Strict matching: with ``max_other``, more than that many events that no step used
    (blinks excepted) fail the sequence: a recording that does every action in a row finds
    any requested sequence inside it, and is refused this way. Without ``windows`` and
    ``max_other`` other actions in between are allowed, as before.
    """
    kinds = [str(Action(k).value) for k in requested]  # raises ValueError on unknown kinds
    if windows is not None and len(windows) != len(kinds):
        raise ValueError(f"{len(windows)} windows for {len(kinds)} steps")
    lo, hi = window if window is not None else (-math.inf, math.inf)
    usable = sorted(
        (e for e in events if e.confidence >= min_confidence and e.start >= lo and e.end <= hi),
        key=lambda e: (e.start, e.peak),
    )
    steps: list[StepResult] = []
    after = -math.inf
    failed: int | None = None
    mistimed: str | None = None
    for i, kind in enumerate(kinds):
        match = None
        if failed is None:
            w_lo, w_hi = windows[i] if windows is not None else (-math.inf, math.inf)
            candidates = [e for e in usable if e.kind == kind and e.start > after]
            match = next((e for e in candidates if w_lo <= e.start <= w_hi), None)
            if match is None:
                failed = i
                if candidates:
                    mistimed = "early" if candidates[0].start < w_lo else "late"
            else:
                after = match.peak
        steps.append(StepResult(kind, match))
    used = {id(st.event) for st in steps if st.event is not None}
    other = sum(1 for e in usable if id(e) not in used and e.kind != "blink")
    too_many = max_other is not None and other > max_other
    completed = failed is None and not too_many
    have = Counter(e.kind for e in usable)
    present = all(have[k] >= c for k, c in Counter(kinds).items())
    return SequenceResult(
        steps=tuple(steps),
        completed=completed,
        out_of_order=failed is not None and mistimed is None and present,
        failed_step=failed,
        failed_kind=None if failed is None else kinds[failed],
        mistimed=mistimed,
        other_actions=other,
        too_many_other=too_many,
    )


def head_windows(seq: SequenceResult, margin_s: float = 0.5) -> list[tuple[float, float]]:
    """``(start, end)`` of each matched head-movement step (turns and looks), widened by
    ``margin_s`` each side: where 3D consistency is checked step by step
    (:mod:`liveness.geometry`)."""
    return [
        (st.event.start - margin_s, st.event.end + margin_s)
        for st in seq.steps
        if st.event is not None and st.kind.startswith(("turn_", "look_"))
    ]


@dataclass(frozen=True)
class ChallengeCheck:
    """What :func:`check_challenge` found: ``completed``, the head-movement windows, the
    evidence for ``liveness.challenge`` and the reasons when not completed."""

    completed: bool
    head_windows: list[tuple[float, float]]
    evidence: dict
    reasons: list[Reason]


def check_challenge(
    claims: ChallengeClaims, events: Sequence[ActionEvent], duration_s: float
) -> ChallengeCheck:
    """Find a challenge token's actions, in order, inside a recording of ``duration_s``.

    Timed tokens (v2, ``claims.windows``): each step must start in its window after the
    recording starts, and at most 2 unrequested actions (blinks excepted) are tolerated (a
    clip doing every action in a row finds any sequence). Version 1 tokens: only the order.
    """
    seq = check_sequence(
        events,
        claims.actions,
        window=(0.0, duration_s + 0.5),
        windows=claims.windows,
        max_other=None if claims.windows is None else 2,
    )
    evidence = {
        "session_id": claims.session_id,
        "actions": list(claims.actions),
        "completed": seq.completed,
        "steps": [
            {"kind": st.kind, "found": st.event is not None}
            | (
                {}
                if st.event is None
                else {
                    "start": st.event.start,
                    "peak": st.event.peak,
                    "end": st.event.end,
                    "confidence": st.event.confidence,
                }
            )
            for st in seq.steps
        ],
    }
    return ChallengeCheck(
        seq.completed, head_windows(seq), evidence, challenge_reasons(seq, len(claims.actions))
    )


def challenge_reasons(seq: SequenceResult, n_steps: int) -> list[Reason]:
    """The reasons a token's sequence was not completed (none when it was)."""
    reasons: list[Reason] = []
    if seq.completed:
        return reasons
    if seq.too_many_other:
        detail = f"{seq.other_actions} actions not asked for"
        reasons.append(Reason.of(ReasonCode.CHALLENGE_EXTRA_ACTIONS, detail=detail))
    if seq.failed_step is None:
        return reasons
    if seq.out_of_order:
        reasons.append(Reason.of(ReasonCode.CHALLENGE_OUT_OF_ORDER))
    else:
        msg = (
            f"{seq.message} (step {seq.failed_step + 1} of {n_steps}). "
            "Try again with a new set of instructions and do each one clearly."
        )
        code = ReasonCode.CHALLENGE_NOT_COMPLETED
        if seq.mistimed:
            code = ReasonCode.CHALLENGE_OUT_OF_TIME
        reasons.append(Reason.of(code, detail=seq.failed_kind, message=msg))
    return reasons
