"""The pipeline: video -> detect -> landmarks -> quality -> align -> embed -> match,
presentation attack, challenge -> decision.

:class:`Verifier` loads each model once and is safe to share between threads: every call
keeps its frames and evidence to itself, ONNX Runtime sessions run concurrently, and the
landmarker instances are pooled.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import models as registry
from .appearance import AppearanceThresholds, seen_in_pixels
from .attack import PresentationAttackDetector, pool
from .challenges import ActionEvent, check_sequence, detect_actions
from .decision import MatchCalibration, Policy, decide
from .detect import Face, FaceDetector
from .embed import cosine, make_embedder
from .errors import InputError, SetupError
from .fusion import FusionParams, fused_score
from .geometry import consistency
from .landmarks import FaceLandmarks, FaceMesh
from .quality import (
    FaceQuality,
    QualityThresholds,
    best_frames,
    measure,
    prepare_for_embedding,
)
from .reasons import Reason, ReasonCode
from .reference import Reference, ReferenceUnusableError  # noqa: F401 (importable from here)
from .reference import enroll as enroll_reference
from .result import LivenessEvidence, MatchEvidence, ModelUse, VerificationResult
from .runtime import Runtime
from .screen import screen_cue
from .sessions import (
    ChallengeClaims,
    ChallengeGate,
    SessionError,
    TokenInvalidError,
    verify_token,
)
from .track import (
    describe_other_faces,
    identity_track,
    other_faces,
    subject_face,
    unfollowed_face_reason,
)
from .video import Video, VideoLimits, load_video

# Quality problems (see quality.FaceQuality.problems) and the reason each one gives.
_QUALITY_REASONS = {
    "dark": ReasonCode.LOW_QUALITY_DARK,
    "bright": ReasonCode.LOW_QUALITY_BRIGHT,
    "blur": ReasonCode.LOW_QUALITY_BLUR,
    "small": ReasonCode.FACE_TOO_SMALL,
    "pose": ReasonCode.POSE_NOT_FRONTAL,
}


@dataclass(frozen=True)
class VerifierConfig:
    """Tunable parts of the pipeline. Defaults are the measured ones."""

    sample_fps: float = 15.0
    limits: VideoLimits = field(default_factory=VideoLimits)
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    policy: Policy = field(default_factory=Policy)
    embedder: str = "w600k_mbf"
    pad_models: tuple[str, ...] = ("minifasnet_v2", "minifasnet_v1se")
    best_k: int = 3
    keyframe_every_s: float = 2.0
    # PAD input: the best frames, then good frames spread over the recording (all pass the
    # quality gates: sharp enough, exposed, frontal), pooled by pad_pooling (see attack.pool).
    max_pad_frames: int = 8
    pad_pooling: str = "median"
    min_face_fraction: float = 0.6
    min_good_frames: int = 3
    min_good_fraction: float = 0.2
    # Identity: SUBJECT_CHANGED needs this many consecutive keyframes (2 s apart) under the
    # similarity of this FMR in the calibration (0.115 at 10 %). Measured on the 49 real
    # live clips (benchmarks/README.md, "Real recordings"): against the typical keyframe the
    # lowest is 0.236; the old all-pairs minimum fell to 0.17 with head turns and masks.
    subject_different_fmr: float = 0.1
    subject_change_run: int = 2
    # YuNet score accepted where the landmarks already show the face, and for a reference
    # photo in which nothing scores 0.6 (masked faces: 0.61-0.70 when found at all, in
    # videos-wild nhtlongcs 2.mp4; a blank picture gives nothing at 0.4).
    low_detection_score: float = 0.4
    # A second face counts as another person (MULTIPLE_FACES) in this many keyframes.
    multiple_faces_keyframes: int = 2
    landmark_workers: int = 2
    landmark_delegate: str = "cpu"  # MediaPipe's "cpu" (XNNPACK) or "gpu" delegate
    # Passive motion evidence: a recording at least this long in which the face neither
    # blinks nor changes expression is not accepted without review (a photo held up).
    motion_check_min_s: float = 3.0
    # Measured: live shared clips 0.039-0.17 (0.05 with no blink); rendered still photo 0.005,
    # printed photo 0.008, screen replay 0.032. 0.02 sits between, away from live faces.
    min_expression_motion: float = 0.02
    # A blink, smile or open mouth counts only when the pixels of the eyes or mouth change
    # this many times more than the nose and forehead after the face's planar motion is
    # taken out (liveness.appearance; measured in benchmarks/README.md, "Appearance check").
    event_appearance: AppearanceThresholds = field(default_factory=AppearanceThresholds)


class Verifier:
    """Verifies selfie videos against reference photos.

    Parameters
    ----------
    model_dir : directory with the model files (else ``LIVENESS_MODEL_DIR``, the cache).
    config : :class:`VerifierConfig`.
    providers : ONNX Runtime providers (``None``: best available).
    challenges : a :class:`~liveness.sessions.ChallengeGate` (keyring + session store);
        needed to verify videos recorded for a server-issued challenge.
    calibration : a :class:`MatchCalibration` for the embedder (default: the shipped one).
    runtime : share a :class:`Runtime` between verifiers.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        *,
        config: VerifierConfig | None = None,
        providers: list[str] | None = None,
        calibration: MatchCalibration | None = None,
        runtime: Runtime | None = None,
        allow_download: bool | None = None,
        challenges: ChallengeGate | None = None,
    ) -> None:
        self.config = config or VerifierConfig()
        self.challenges = challenges
        self.runtime = runtime or Runtime(
            model_dir, providers=providers, allow_download=allow_download
        )
        t = time.perf_counter()
        rt = self.runtime
        self.detector = FaceDetector(rt.onnx("yunet"))
        self._low_detector = FaceDetector(
            self.detector.model, score_threshold=self.config.low_detection_score
        )
        self.embedder = make_embedder(rt, self.config.embedder)
        self.pad = PresentationAttackDetector([rt.onnx(n) for n in self.config.pad_models])
        self.landmarks = FaceLandmarks(
            rt.path("face_landmarker"),
            workers=self.config.landmark_workers,
            delegate=self.config.landmark_delegate,
        )
        self.landmarks.warm_up()
        self._calibration = calibration
        self.fusion = FusionParams.load()  # None: the live score is the PAD score
        self.load_s = time.perf_counter() - t

    @property
    def calibration(self) -> MatchCalibration:
        """The similarity calibration of the embedder (loaded on first use)."""
        if self._calibration is None:
            self._calibration = MatchCalibration.load(model=self.config.embedder)
        return self._calibration

    # -- reference ---------------------------------------------------------------------

    def enroll(self, image, *, require_usable: bool = False) -> Reference:
        """Make a :class:`Reference` template from a photo (path, bytes or BGR array); see
        :func:`liveness.reference.enroll` (unusable: no face, two similar faces, a face far
        too small; weak but used: dim, small, blurred). With ``require_usable`` an unusable
        photo raises :class:`ReferenceUnusableError`."""
        return enroll_reference(
            image,
            self.detector,
            self._low_detector,
            self.embedder,
            self.config.quality,
            require_usable=require_usable,
        )

    # -- verification ------------------------------------------------------------------

    def verify(
        self,
        video,
        reference,
        *,
        fps: float | None = None,
        challenge: str | None = None,
        mirrored: bool = False,
        now: float | None = None,
        account: str | None = None,
    ) -> VerificationResult:
        """Verify that ``video`` shows a live person who matches ``reference``.

        ``video`` is a path, bytes or frames (see :func:`liveness.video.load_video`);
        ``reference`` a :class:`Reference` or a photo. ``challenge`` is the token from
        :meth:`~liveness.sessions.ChallengeGate.issue`: it is checked (signature, expiry,
        one use, video never seen before) and its actions must be found, in order, in the
        recording. ``mirrored`` says the recording is a mirrored front-camera preview
        (left and right swapped). ``account`` names the account the reference belongs to:
        a challenge token issued for another account is refused (``TOKEN_INVALID``), so a
        token for one's own account cannot be spent against someone else's reference.
        Unreadable input raises an
        :class:`~liveness.errors.InputError`; problems with the faces or the session give a
        ``reject`` or ``review`` result with reasons.
        """
        cfg = self.config
        timings: dict[str, float] = {}
        clock = _Clock(timings)
        claims: ChallengeClaims | None = None
        if challenge is not None:
            if self.challenges is None:
                raise SetupError(
                    "a challenge token needs a Verifier made with challenges="
                    "ChallengeGate(keyring, store)"
                )
            try:  # signature and expiry first: a forged token costs no decoding
                early = verify_token(self.challenges.keyring, challenge, now=now)
                if account is not None and early.account != account:
                    raise TokenInvalidError(detail="token issued for another account")
            except SessionError as exc:
                return self._session_refused(exc, timings, clock)
        with clock("reference"):
            ref = reference if isinstance(reference, Reference) else self.enroll(reference)
        if ref.model != self.embedder.model.name:
            raise InputError(
                f"the reference was made with {ref.model}; this verifier "
                f"uses {self.embedder.model.name}"
            )
        if not ref.usable:
            out = _Evidence(video={}, reference=_reference_info(ref))
            out.reasons.append(
                Reason.of(ReasonCode.REFERENCE_UNUSABLE, "review", detail=", ".join(ref.problems))
            )
            return self._finish(out, timings, clock)
        # Landmarks run on their own threads while the video is still being decoded; "video"
        # is the decoding time and "landmarks" the time spent waiting for them afterwards.
        stream = self.landmarks.stream()
        try:
            with clock("video"):
                video = load_video(
                    video,
                    sample_fps=cfg.sample_fps,
                    limits=cfg.limits,
                    fps=fps,
                    on_frame=stream.push,
                )
        except BaseException:
            stream.abort()
            raise
        if challenge is not None:
            try:
                claims = self.challenges.begin(challenge, video.sha256, now, content=video.frames)
            except SessionError as exc:
                stream.abort()
                return self._session_refused(exc, timings, clock)
        out = _Evidence(video=_video_info(video), reference=_reference_info(ref))
        with clock("landmarks"):
            meshes = stream.finish()
        with clock("actions"):
            events, checks = seen_in_pixels(
                detect_actions(meshes, mirrored=mirrored),
                video.frames,
                meshes,
                cfg.event_appearance,
            )
        out.liveness.temporal = _motion_evidence(meshes, events, checks)
        if claims is not None:
            self._check_challenge(claims, events, video, out)
        self._analyse(video, meshes, ref, out, clock)
        with clock("attack_evidence"):
            self._attack_evidence(meshes, out)
        self._motion_gate(video, out)
        return self._finish(out, timings, clock, claims, now)

    def _session_refused(self, exc: SessionError, timings: dict, clock: _Clock):
        out = _Evidence(video={}, reference={})
        out.reasons.append(Reason.of(ReasonCode(exc.code), "reject", message=str(exc)))
        return self._finish(out, timings, clock, None, None)

    def _check_challenge(
        self, claims: ChallengeClaims, events: list[ActionEvent], video: Video, out: _Evidence
    ) -> None:
        """Find the session's actions, in order, inside the recording."""
        # Timed tokens (v2): each step in its window after the recording starts, and few
        # unrequested actions (a clip doing every action in a row finds any sequence).
        seq = check_sequence(
            events,
            claims.actions,
            window=(0.0, video.duration_s + 0.5),
            windows=claims.windows,
            max_other=None if claims.windows is None else 2,
        )
        out.challenge_ok = seq.completed
        out.head_windows = [
            (st.event.start - 0.5, st.event.end + 0.5)
            for st in seq.steps
            if st.event is not None and st.kind.startswith(("turn_", "look_"))
        ]
        out.liveness.challenge = {
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
        if seq.completed:
            return
        if seq.too_many_other:
            detail = f"{seq.other_actions} actions not asked for"
            out.reasons.append(Reason.of(ReasonCode.CHALLENGE_EXTRA_ACTIONS, detail=detail))
        if seq.failed_step is None:
            return
        if seq.out_of_order:
            out.reasons.append(Reason.of(ReasonCode.CHALLENGE_OUT_OF_ORDER))
        else:
            msg = (
                f"{seq.message} (step {seq.failed_step + 1} of {len(claims.actions)}). "
                "Try again with a new set of instructions and do each one clearly."
            )
            code = ReasonCode.CHALLENGE_NOT_COMPLETED
            if seq.mistimed:
                code = ReasonCode.CHALLENGE_OUT_OF_TIME
            out.reasons.append(Reason.of(code, detail=seq.failed_kind, message=msg))

    def _motion_gate(self, video: Video, out: _Evidence) -> None:
        """A face that never blinks or moves its features over several seconds is more
        likely a photo than a person: without a completed challenge, ask for review."""
        cfg = self.config
        m = out.liveness.temporal
        if (
            out.challenge_ok is None
            and video.duration_s >= cfg.motion_check_min_s
            and m.get("frames", 0) > 0
            and m["blinks"] == 0
            and m["expression_motion"] < cfg.min_expression_motion
            and out.live is not None
        ):
            out.reasons.append(
                Reason.of(
                    ReasonCode.LIVENESS_UNCERTAIN,
                    "review",
                    detail="no blink or expression change seen",
                )
            )

    def _analyse(
        self,
        video: Video,
        meshes: list[FaceMesh | None],
        ref: Reference,
        out: _Evidence,
        clock: _Clock,
    ) -> None:
        cfg = self.config
        frames = video.frames
        present = [i for i, m in enumerate(meshes) if m is not None]
        out.quality["face_fraction"] = len(present) / len(frames)
        if not present:
            out.reasons.append(unfollowed_face_reason(self.detector, frames, cfg.quality))
            return
        if len(present) / len(frames) < cfg.min_face_fraction:
            out.reasons.append(Reason.of(ReasonCode.FACE_LOST))

        with clock("quality"):
            q = {
                i: measure(frames[i].image, meshes[i].box, meshes[i].yaw, meshes[i].pitch)
                for i in present
            }
            problems = {i: q[i].problems(cfg.quality) for i in present}
            good = {i for i in present if not problems[i]}
            scores = [q[i].score(cfg.quality) if i in good else 0.0 for i in present]
            best = [
                present[k] for k in best_frames(scores, [frames[i].t for i in present], cfg.best_k)
            ]
        out.quality.update(_quality_summary(q, problems, good))
        # A face that is good in only a moment or two of the recording is not a fair basis
        # for a decision: ask for a better recording, naming the commonest problems.
        if len(good) < max(cfg.min_good_frames, cfg.min_good_fraction * len(present)):
            counts = Counter(p for i in present for p in problems[i])
            for name, _ in counts.most_common(2):
                out.reasons.append(Reason.of(_QUALITY_REASONS[name]))
            return

        # Keyframes: the best frames, plus one every `keyframe_every_s` over the recording,
        # are where YuNet looks for other faces and where identity is followed.
        keyframes = sorted(set(best) | set(_every(present, frames, cfg.keyframe_every_s)))
        with clock("detect"):
            detections = {i: self.detector.detect(frames[i].image) for i in keyframes}
        subject: dict[int, Face] = {}
        others: dict[int, list[Face]] = {}
        unplaced = 0  # keyframes with a clear face, but not where the landmarks put the subject
        for i in keyframes:
            s = subject_face(detections[i], meshes[i].box)
            if s is None and meshes[i] is not None:
                # the landmarks see a face YuNet scores under its threshold (masks, close-ups)
                s = subject_face(self._low_detector.detect(frames[i].image), meshes[i].box)
            if s is not None:
                subject[i] = s
                others[i] = other_faces(detections[i], s)
            elif detections[i] and any(f.score >= 0.8 for f in detections[i]):
                unplaced += 1
        out.quality["keyframes"] = len(keyframes)

        with clock("embed"):
            # best frames are good frames (a failed gate scores 0 and is never chosen)
            usable = [i for i in keyframes if i in subject and i in good]
            aligned = [
                prepare_for_embedding(
                    self.embedder.align(frames[i].image, subject[i].points), q[i].brightness
                )
                for i in usable
            ]
            emb = dict(zip(usable, self.embedder.embed(aligned), strict=True))

        probe_frames = [i for i in best if i in emb]
        if not probe_frames:
            out.reasons.append(Reason.of(ReasonCode.NO_FACE))
            return
        probe = np.mean([emb[i] for i in probe_frames], axis=0)
        self._subject_checks(frames, subject, others, unplaced, usable, emb, probe, out)
        sim = cosine(probe, ref.embedding)
        out.fmr = self.calibration.fmr_at(sim)
        out.match = MatchEvidence(
            similarity=sim,
            fmr_estimate=out.fmr,
            accept_threshold=self.calibration.threshold_for(cfg.policy.accept_fmr),
            frames_compared=[frames[i].t for i in probe_frames],
        )

        with clock("attack"):
            pad_frames = _spread(usable, best, cfg.max_pad_frames)
            crops = [(frames[i].image, subject[i].box) for i in pad_frames]
            # one call per model for all the frames where the model takes a batch
            times = [frames[i].t for i in pad_frames]
            per = list(zip(times, self.pad.per_model_many(crops), strict=True))
            cue = screen_cue(
                [frames[i].image for i in pad_frames], [subject[i].box for i in pad_frames]
            )
        out.liveness.screen = cue.to_dict()
        names = [m.name for m in self.pad.models]
        model_score = pool([float(np.mean(p)) for _, p in per], cfg.pad_pooling)
        out.live = model_score
        out.liveness.score = model_score
        out.liveness.model_score = model_score
        out.liveness.per_frame = [
            {"t": t, "live": float(np.mean(p)), "models": dict(zip(names, p, strict=True))}
            for t, p in per
        ]

    def _subject_checks(self, frames, subject, others, unplaced, usable, emb, probe, out):
        """One person throughout (``SUBJECT_CHANGED`` only for a run of keyframes that look
        like someone else) and nobody else in view (``MULTIPLE_FACES`` only for a second
        person seen in several keyframes; a reflection, poster or face far behind is a
        warning in ``quality["other_faces"]``). See :mod:`liveness.track`."""
        cfg = self.config
        track = identity_track(
            np.stack([emb[i] for i in usable]),
            self.calibration.threshold_for(cfg.subject_different_fmr),
            cfg.subject_change_run,
        )
        out.quality["identity_min_similarity"] = track.min_similarity
        out.quality["identity_to_anchor"] = [
            {"t": frames[i].t, "similarity": s}
            for i, s in zip(usable, track.similarities, strict=True)
        ]
        if track.outliers:
            out.quality["identity_outliers"] = [frames[usable[k]].t for k in track.outliers]
        if track.changed:
            out.reasons.append(Reason.of(ReasonCode.SUBJECT_CHANGED))
        seen = describe_other_faces(
            {frames[i].t: (frames[i].image, subject[i], others[i]) for i in others if others[i]},
            probe,
            self.embedder,
            self.pad,
            same_person_above=self.calibration.threshold_for(cfg.policy.accept_fmr),
            flat_below=cfg.policy.live_reject,
        )
        out.quality["other_faces"] = seen
        persons = {d["t"] for d in seen if d["kind"] == "person"}
        out.quality["keyframes_with_other_faces"] = len(persons) + unplaced
        if len(persons) + unplaced >= cfg.multiple_faces_keyframes:
            out.reasons.append(Reason.of(ReasonCode.MULTIPLE_FACES))

    def _attack_evidence(self, meshes: list[FaceMesh | None], out: _Evidence) -> None:
        """3D consistency over the whole clip and over each head-movement step of the
        challenge (a flat face in any of them is refused), then the fused live score."""
        whole = consistency(meshes)
        steps = [consistency(meshes, window=w) for w in out.head_windows]
        out.liveness.geometry = whole.to_dict() | {"steps": [c.to_dict() for c in steps]}
        flat = [c for c in [whole, *steps] if c.verdict == "flat"]
        if flat:
            out.reasons.append(
                Reason.of(
                    ReasonCode.FLAT_FACE,
                    detail=f"plane/rigid residual ratio {flat[0].ratio:.2f}",
                )
            )
        if out.live is None:
            return
        verdict = "3d" if any(c.verdict == "3d" for c in [whole, *steps]) else whole.verdict
        screen = (out.liveness.screen or {}).get("peakiness")
        motion = out.liveness.temporal.get("expression_motion")
        out.live = fused_score(self.fusion, out.liveness.model_score, verdict, screen, motion)
        out.liveness.score = out.live

    def _finish(
        self,
        out: _Evidence,
        timings: dict,
        clock: _Clock,
        claims: ChallengeClaims | None = None,
        now: float | None = None,
    ) -> VerificationResult:
        with clock("decision"):
            d = decide(
                self.config.policy,
                blocking=out.reasons,
                fmr=out.fmr,
                live=out.live,
                challenge_ok=out.challenge_ok,
            )
        # "review" counts too: ten photo animations in a row must not all reach the human
        # queue (issue 12).
        if claims is not None and d.decision in ("reject", "review"):
            self.challenges.record_failure(claims, now)
        # Wall time of the whole call: stages overlap, so this is less than their sum.
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
            models=self.models_used(),
            reference=out.reference,
        )

    def models_used(self) -> dict[str, ModelUse]:
        """Each model this verifier runs: file hash, ONNX Runtime provider, license."""
        out = {}
        for name, m in self.runtime.loaded().items():
            known = registry.REGISTRY.get(name)
            out[name] = ModelUse(
                name, m.sha256, m.provider, known.license if known else "caller's own model"
            )
        lm = registry.spec("face_landmarker")
        out[lm.name] = ModelUse(lm.name, lm.sha256, self.landmarks.provider, lm.license)
        return out

    def close(self) -> None:
        """Release the landmarker instances and worker threads."""
        self.landmarks.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Evidence:
    """What one verify call has found so far (private to the call)."""

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


class _Clock:
    """Adds the wall time of each ``with clock("stage"):`` block to ``timings`` (ms)."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.start = time.perf_counter()

    def __call__(self, stage: str) -> _Clock:
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._t = time.perf_counter()

    def __exit__(self, *exc) -> None:
        ms = (time.perf_counter() - self._t) * 1000
        self.timings[self._stage] = self.timings.get(self._stage, 0.0) + ms


def _every(present: list[int], frames, every_s: float) -> list[int]:
    out, next_t = [], -1.0
    for i in present:
        if frames[i].t >= next_t:
            out.append(i)
            next_t = frames[i].t + every_s
    return out


def _motion_evidence(meshes: list[FaceMesh | None], events: list[ActionEvent], checks=()) -> dict:
    """What the face did on its own: actions seen, and how much its expression moved
    (the mean standard deviation of the mouth and eye blendshapes over the recording)."""
    present = [m for m in meshes if m is not None]
    names = (
        "jawOpen",
        "mouthSmileLeft",
        "mouthSmileRight",
        "eyeBlinkLeft",
        "eyeBlinkRight",
        "mouthFunnel",
        "mouthPucker",
    )
    motion = 0.0
    if len(present) >= 2:
        series = np.array([[m.blendshapes.get(n, 0.0) for n in names] for m in present])
        motion = float(series.std(axis=0).mean())
    return {
        "frames": len(present),
        "blinks": sum(e.kind == "blink" for e in events),
        "actions": [
            {
                "kind": e.kind,
                "start": e.start,
                "peak": e.peak,
                "end": e.end,
                "confidence": e.confidence,
            }
            for e in events
        ],
        "expression_motion": motion,
        # the appearance check of each blink / smile / open mouth the landmarks showed
        "appearance": [c.to_dict() for c in checks],
    }


def _spread(candidates: list[int], first: list[int], k: int) -> list[int]:
    """``first`` (those in ``candidates``), then others evenly spread, ``k`` at most."""
    chosen = [i for i in first if i in candidates][:k]
    rest = [i for i in candidates if i not in chosen]
    if rest and len(chosen) < k:
        picks = np.linspace(0, len(rest) - 1, min(k - len(chosen), len(rest))).round()
        chosen += [rest[int(p)] for p in picks]
    return sorted(set(chosen))


def _video_info(v: Video) -> dict:
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


def _reference_info(r: Reference) -> dict:
    return {
        "usable": r.usable,
        "problems": list(r.problems),
        "weaknesses": list(r.weaknesses),
        "faces_found": r.faces_found,
        "model": r.model,
    }


def _quality_summary(
    q: dict[int, FaceQuality], problems: dict[int, list[str]], good: set[int]
) -> dict:
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
