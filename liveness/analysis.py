"""The analysis of one recording's faces, as functions of the injected parts.

Given the sampled frames, the landmarker's meshes and the reference, :func:`analyse_faces`
gates quality, chooses keyframes, places the subject among the detector's faces, embeds,
matches, checks that one person is in view throughout, and scores the presentation attack
models; it returns a :class:`FaceAnalysis` and keeps nothing. Each step is a small function
of its own. The attack evidence that follows (3D consistency, fusion, the motion gate) is in
:mod:`liveness.evidence`; the challenge check in :mod:`liveness.challenges`.

:class:`Evidence` collects what one call has found, and :func:`conclude` turns it into a
:class:`~liveness.result.VerificationResult` with :func:`liveness.decision.decide`. Both
:class:`~liveness.verify.Verifier` and :class:`~liveness.stream.LiveSession` run these.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .attack import pool
from .decision import MatchCalibration, Policy, decide
from .detect import Face
from .embed import cosine
from .landmarks import FaceMesh
from .parts import Detector, Embedder, PadEnsemble, Parts
from .quality import FaceQuality, QualityThresholds, best_frames, measure, prepare_for_embedding
from .reasons import Reason, ReasonCode
from .reference import Reference
from .result import LivenessEvidence, MatchEvidence, ModelUse, VerificationResult
from .screen import screen_cue
from .track import (
    QUALITY_REASONS,
    describe_other_faces,
    identity_track,
    other_faces,
    subject_face,
    unfollowed_face_reason,
)
from .video import Frame, Video

if TYPE_CHECKING:
    from .verify import VerifierConfig


@dataclass
class Evidence:
    """What one verification has found so far (each call has its own)."""

    video: dict
    reference: dict
    reasons: list[Reason] = field(default_factory=list)
    quality: dict = field(default_factory=dict)
    match: MatchEvidence = field(default_factory=MatchEvidence)
    liveness: LivenessEvidence = field(default_factory=LivenessEvidence)
    fmr: float | None = None
    live: float | None = None
    challenge_ok: bool | None = None
    head_windows: list[tuple[float, float]] = field(default_factory=list)

    def add_faces(self, fa: FaceAnalysis) -> None:
        """Take in :func:`analyse_faces`' findings."""
        self.reasons.extend(fa.reasons)
        self.quality.update(fa.quality)
        if fa.match is not None:
            self.fmr = fa.match.fmr_estimate
            self.match = fa.match
        if fa.pad is not None:
            self.liveness.screen = fa.pad.screen
            self.live = fa.pad.model_score
            self.liveness.score = fa.pad.model_score
            self.liveness.model_score = fa.pad.model_score
            self.liveness.per_frame = fa.pad.per_frame


class Clock:
    """Adds the wall time of each ``with clock("stage"):`` block to ``timings`` (ms).
    Blocks may run on several threads at once (each ``clock(stage)`` is its own timer)."""

    def __init__(self, timings: dict[str, float] | None = None) -> None:
        self.timings = {} if timings is None else timings
        self.start = time.perf_counter()
        self._lock = threading.Lock()

    def __call__(self, stage: str) -> _Timer:
        return _Timer(self, stage)

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + ms


class _Timer:
    def __init__(self, clock: Clock, stage: str) -> None:
        self._clock, self._stage = clock, stage

    def __enter__(self) -> None:
        self._t = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self._clock.add(self._stage, (time.perf_counter() - self._t) * 1000)


# -- the face analysis ---------------------------------------------------------------------


@dataclass(frozen=True)
class QualityPass:
    """Per-frame quality of the frames with a face: ``measures`` and ``problems`` by frame
    index, the ``good`` frames (no problem) and the ``best`` ones (see
    :func:`liveness.quality.best_frames`)."""

    measures: dict[int, FaceQuality]
    problems: dict[int, list[str]]
    good: set[int]
    best: list[int]


@dataclass(frozen=True)
class Placement:
    """The subject's face among the detector's faces at each keyframe where it was placed,
    the other faces there, and ``unplaced``: keyframes with a clear face (score >= 0.8) but
    none where the landmarks put the subject."""

    subject: dict[int, Face]
    others: dict[int, list[Face]]
    unplaced: int


@dataclass(frozen=True)
class PadScores:
    """The PAD ensemble on the chosen frames: the pooled ``model_score``, each frame's
    scores (``per_frame``) and the screen cue of :mod:`liveness.screen`."""

    model_score: float
    per_frame: list[dict]
    screen: dict


@dataclass(frozen=True)
class FaceAnalysis:
    """What :func:`analyse_faces` found: ``reasons`` and ``quality`` entries, and where the
    analysis got that far, the ``match`` and the ``pad`` scores."""

    reasons: list[Reason]
    quality: dict
    match: MatchEvidence | None = None
    pad: PadScores | None = None


def analyse_faces(
    video: Video,
    meshes: Sequence[FaceMesh | None],
    ref: Reference,
    parts: Parts,
    calibration: MatchCalibration,
    config: VerifierConfig,
    clock: Clock | None = None,
    *,
    measures: dict[int, FaceQuality] | None = None,
    no_face_samples: Sequence[Frame] | None = None,
    face_fraction: float | None = None,
    pool: Executor | None = None,
) -> FaceAnalysis:
    """Quality, keyframes, subject placement, embedding, match, one-person checks and PAD
    of one recording (``meshes``: one per frame of ``video.frames``). Stops early, with the
    reason, when no face was followed, too few frames pass the quality gates, or no best
    frame could be embedded.

    ``measures``: each face frame's quality, when already measured as the frames were
    decoded (:class:`liveness.keep.FrameKeeper`, whose frames carry pixels only where a
    later step looks); ``no_face_samples``: the frames to look at when no face was
    followed (default: all of ``video.frames``); ``face_fraction``: the share of frames
    with a face when ``video.frames`` are not evenly spaced (a landmark plan's first
    pass, :mod:`liveness.landmark_plan`; default: over ``video.frames``).

    ``pool``: where the model calls may run side by side (the detector at each keyframe,
    then the PAD ensemble while this thread embeds); its tasks never wait on each other,
    so two workers suffice. Each call is the one a serial run makes, with the same
    arguments: the results are the same (``tests/test_analysis_pool.py``). The parts must
    be safe to call from several threads, as :class:`~liveness.verify.Verifier` requires."""
    clock = clock or Clock()
    cfg = config
    frames = video.frames
    reasons: list[Reason] = []
    quality: dict = {}
    present = [i for i, m in enumerate(meshes) if m is not None]
    fraction = len(present) / len(frames) if face_fraction is None else face_fraction
    quality["face_fraction"] = fraction
    if not present:
        samples = frames if no_face_samples is None else no_face_samples
        reasons.append(unfollowed_face_reason(parts.detector, samples, cfg.quality))
        return FaceAnalysis(reasons, quality)
    if fraction < cfg.min_face_fraction:
        reasons.append(Reason.of(ReasonCode.FACE_LOST))

    with clock("quality"):
        qp = quality_pass(frames, meshes, present, cfg.quality, cfg.best_k, measures)
    quality.update(quality_summary(qp.measures, qp.problems, qp.good))
    # A face that is good in only a moment or two of the recording is not a fair basis
    # for a decision: ask for a better recording, naming the commonest problems.
    if len(qp.good) < max(cfg.min_good_frames, cfg.min_good_fraction * len(present)):
        counts = Counter(p for i in present for p in qp.problems[i])
        for name, _ in counts.most_common(2):
            reasons.append(Reason.of(QUALITY_REASONS[name]))
        return FaceAnalysis(reasons, quality)

    # Keyframes: the best frames, plus one every `keyframe_every_s` over the recording,
    # are where the detector looks for other faces and where identity is followed.
    keyframes = sorted(set(qp.best) | set(every(present, frames, cfg.keyframe_every_s)))
    with clock("detect"):
        placed = place_subject(keyframes, frames, meshes, parts.detector, parts.low_detector, pool)
    quality["keyframes"] = len(keyframes)

    # best frames are good frames (a failed gate scores 0 and is never chosen)
    usable = [i for i in keyframes if i in placed.subject and i in qp.good]
    pad_frames = spread(usable, qp.best, cfg.max_pad_frames)
    pad_args = (parts.pad, frames, placed.subject, pad_frames, cfg.pad_pooling)
    pad_job = pool.submit(pad_scores, *pad_args) if pool is not None and pad_frames else None
    with clock("embed"):
        emb = embed_frames(parts.embedder, frames, placed.subject, qp.measures, usable)

    probe_frames = [i for i in qp.best if i in emb]
    if not probe_frames:
        reasons.append(Reason.of(ReasonCode.NO_FACE))
        return FaceAnalysis(reasons, quality)
    probe = np.mean([emb[i] for i in probe_frames], axis=0)
    one_reasons, one_quality = subject_checks(
        frames, placed, usable, emb, probe, parts, calibration, cfg
    )
    reasons += one_reasons
    quality.update(one_quality)
    sim = cosine(probe, ref.embedding)
    fmr = calibration.fmr_at(sim)
    match = MatchEvidence(
        similarity=sim,
        fmr_estimate=fmr,
        accept_threshold=calibration.threshold_for(cfg.policy.accept_fmr),
        frames_compared=[frames[i].t for i in probe_frames],
    )

    with clock("attack"):  # with a pool: the wait for the scores begun before embedding
        scores = pad_job.result() if pad_job is not None else pad_scores(*pad_args)
    return FaceAnalysis(reasons, quality, match, scores)


def quality_pass(
    frames: Sequence[Frame],
    meshes: Sequence[FaceMesh | None],
    present: list[int],
    thresholds: QualityThresholds,
    best_k: int,
    measures: dict[int, FaceQuality] | None = None,
) -> QualityPass:
    """Measure each frame with a face (:func:`liveness.quality.measure` in the mesh's box
    and pose; or take ``measures``), its problems under ``thresholds``, and the ``best_k``
    best good frames spread over time."""
    q = measures
    if q is None:
        q = {
            i: measure(frames[i].image, meshes[i].box, meshes[i].yaw, meshes[i].pitch)
            for i in present
        }
    problems = {i: q[i].problems(thresholds) for i in present}
    good = {i for i in present if not problems[i]}
    scores = [q[i].score(thresholds) if i in good else 0.0 for i in present]
    best = [present[k] for k in best_frames(scores, [frames[i].t for i in present], best_k)]
    return QualityPass(q, problems, good, best)


def place_subject(
    keyframes: list[int],
    frames: Sequence[Frame],
    meshes: Sequence[FaceMesh | None],
    detector: Detector,
    low_detector: Detector,
    pool: Executor | None = None,
) -> Placement:
    """At each keyframe, the detected face where the landmarks put the subject (tried again
    with ``low_detector`` when none scores above the main threshold there: masks,
    close-ups), and the other faces. ``pool``: where the keyframes are detected side by
    side (in order, one call each, as without it)."""
    images = [frames[i].image for i in keyframes]
    found = map(detector.detect, images) if pool is None else pool.map(detector.detect, images)
    detections = dict(zip(keyframes, found, strict=True))
    subject: dict[int, Face] = {}
    others: dict[int, list[Face]] = {}
    unplaced = 0  # keyframes with a clear face, but not where the landmarks put the subject
    for i in keyframes:
        s = subject_face(detections[i], meshes[i].box)
        if s is None and meshes[i] is not None:
            # the landmarks see a face the detector scores under its threshold
            s = subject_face(low_detector.detect(frames[i].image), meshes[i].box)
        if s is not None:
            subject[i] = s
            others[i] = other_faces(detections[i], s)
        elif detections[i] and any(f.score >= 0.8 for f in detections[i]):
            unplaced += 1
    return Placement(subject, others, unplaced)


def embed_frames(
    embedder: Embedder,
    frames: Sequence[Frame],
    subject: dict[int, Face],
    measures: dict[int, FaceQuality],
    indices: list[int],
) -> dict[int, np.ndarray]:
    """The subject's embedding at each frame of ``indices``, aligned by the embedder and
    brightness-normalised (:func:`liveness.quality.prepare_for_embedding`)."""
    aligned = [
        prepare_for_embedding(
            embedder.align(frames[i].image, subject[i].points), measures[i].brightness
        )
        for i in indices
    ]
    return dict(zip(indices, embedder.embed(aligned), strict=True))


def subject_checks(
    frames: Sequence[Frame],
    placed: Placement,
    usable: list[int],
    emb: dict[int, np.ndarray],
    probe: np.ndarray,
    parts: Parts,
    calibration: MatchCalibration,
    cfg: VerifierConfig,
) -> tuple[list[Reason], dict]:
    """One person throughout (``SUBJECT_CHANGED`` only for a run of keyframes that look
    like someone else) and nobody else in view (``MULTIPLE_FACES`` only for a second
    person seen in several keyframes; a reflection, poster or face far behind is a
    warning in ``quality["other_faces"]``). See :mod:`liveness.track`. Returns the reasons
    and the ``quality`` entries."""
    reasons: list[Reason] = []
    quality: dict = {}
    track = identity_track(
        np.stack([emb[i] for i in usable]),
        calibration.threshold_for(cfg.subject_different_fmr),
        cfg.subject_change_run,
    )
    quality["identity_min_similarity"] = track.min_similarity
    quality["identity_to_anchor"] = [
        {"t": frames[i].t, "similarity": s} for i, s in zip(usable, track.similarities, strict=True)
    ]
    if track.outliers:
        quality["identity_outliers"] = [frames[usable[k]].t for k in track.outliers]
    if track.changed:
        reasons.append(Reason.of(ReasonCode.SUBJECT_CHANGED))
    subject, others = placed.subject, placed.others
    seen = describe_other_faces(
        {frames[i].t: (frames[i].image, subject[i], others[i]) for i in others if others[i]},
        probe,
        parts.embedder,
        parts.pad,
        same_person_above=calibration.threshold_for(cfg.policy.accept_fmr),
        flat_below=cfg.policy.live_reject,
    )
    quality["other_faces"] = seen
    persons = {d["t"] for d in seen if d["kind"] == "person"}
    quality["keyframes_with_other_faces"] = len(persons) + placed.unplaced
    if len(persons) + placed.unplaced >= cfg.multiple_faces_keyframes:
        reasons.append(Reason.of(ReasonCode.MULTIPLE_FACES))
    return reasons, quality


def pad_scores(
    pad: PadEnsemble,
    frames: Sequence[Frame],
    subject: dict[int, Face],
    indices: list[int],
    pooling: str,
) -> PadScores:
    """The PAD ensemble on the subject's face at ``indices`` (one call per model for all
    the frames where the model takes a batch), pooled by ``pooling`` (see
    :func:`liveness.attack.pool`), and the screen cue on the same crops."""
    crops = [(frames[i].image, subject[i].box) for i in indices]
    times = [frames[i].t for i in indices]
    per = list(zip(times, pad.per_model_many(crops), strict=True))
    cue = screen_cue([frames[i].image for i in indices], [subject[i].box for i in indices])
    names = [m.name for m in pad.models]
    model_score = pool([float(np.mean(p)) for _, p in per], pooling)
    per_frame = [
        {"t": t, "live": float(np.mean(p)), "models": dict(zip(names, p, strict=True))}
        for t, p in per
    ]
    return PadScores(model_score, per_frame, cue.to_dict())


# -- result --------------------------------------------------------------------------------


def conclude(
    out: Evidence, policy: Policy, clock: Clock, models: dict[str, ModelUse]
) -> VerificationResult:
    """The decision (:func:`liveness.decision.decide`) on the evidence, as a result with
    the timings so far (``total``: wall time since the clock started; stages overlap, so
    it is less than their sum)."""
    timings = clock.timings
    with clock("decision"):
        d = decide(
            policy,
            blocking=out.reasons,
            fmr=out.fmr,
            live=out.live,
            challenge_ok=out.challenge_ok,
        )
    timings["total"] = (time.perf_counter() - clock.start) * 1000
    return VerificationResult(
        decision=d.decision,
        score=d.score,
        reasons=d.reasons,
        match=out.match,
        liveness=out.liveness,
        quality=out.quality,
        video=out.video,
        timings_ms={k: round(v, 2) for k, v in timings.items()},
        models=models,
        reference=out.reference,
    )


# -- small helpers -------------------------------------------------------------------------


def every(present: list[int], frames: Sequence[Frame], every_s: float) -> list[int]:
    """The first of ``present`` (frame indices, in time order), then the next one at least
    ``every_s`` seconds later, and so on."""
    out, next_t = [], -1.0
    for i in present:
        if frames[i].t >= next_t:
            out.append(i)
            next_t = frames[i].t + every_s
    return out


def spread(candidates: list[int], first: list[int], k: int) -> list[int]:
    """``first`` (those in ``candidates``), then others evenly spread, ``k`` at most."""
    chosen = [i for i in first if i in candidates][:k]
    rest = [i for i in candidates if i not in chosen]
    if rest and len(chosen) < k:
        picks = np.linspace(0, len(rest) - 1, min(k - len(chosen), len(rest))).round()
        chosen += [rest[int(p)] for p in picks]
    return sorted(set(chosen))


def video_info(v: Video) -> dict:
    """The ``video`` block of a result."""
    return {
        "duration_s": v.duration_s,
        "fps": v.fps,
        "width": v.width,
        "height": v.height,
        "frames_decoded": v.frames_decoded,
        "frames_analysed": len(v.frames),
        "rotation": v.rotation,
        "sha256": v.sha256,
    }


def reference_info(r: Reference) -> dict:
    """The ``reference`` block of a result."""
    return {
        "usable": r.usable,
        "problems": list(r.problems),
        "weaknesses": list(r.weaknesses),
        "faces_found": r.faces_found,
        "model": r.model,
    }


def quality_summary(
    q: dict[int, FaceQuality], problems: dict[int, list[str]], good: set[int]
) -> dict:
    """Counts of frames with a face and passing, problem counts, median face size,
    brightness and sharpness."""
    vals = list(q.values())
    counts = Counter(p for ps in problems.values() for p in ps)
    return {
        "frames_with_face": len(q),
        "frames_passing": len(good),
        "problems": dict(counts),
        "median_face_px": float(np.median([v.face_px for v in vals])),
        "median_brightness": float(np.median([v.brightness for v in vals])),
        "median_sharpness": float(np.median([v.sharpness for v in vals])),
    }
