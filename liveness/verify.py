"""The pipeline: video -> detect -> landmarks -> quality -> align -> embed -> match,
presentation attack, challenge -> decision.

:class:`Verifier` loads each model once and is safe to share between threads: every call
keeps its frames and evidence to itself, ONNX Runtime sessions run concurrently, and the
landmarker instances are pooled.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from . import models as registry
from .analysis import Clock, Evidence, analyse_faces, conclude, reference_info, video_info
from .appearance import AppearanceThresholds
from .decision import MatchCalibration, Policy
from .decoders import Decoders
from .errors import InputError, SetupError
from .evidence import attack_evidence, mesh_evidence, motion_evidence, motion_gate
from .fusion import FusionParams
from .keep import FrameKeeper
from .landmark_plan import LandmarkPlan
from .parts import (
    Detector,
    Embedder,
    Landmarker,
    PadEnsemble,
    Parts,
    build_detector,
    build_embedder,
    build_landmarker,
    build_pad,
    calibration_for,
    check_part,
)
from .quality import QualityThresholds
from .reasons import Reason, ReasonCode
from .reference import Reference, ReferenceUnusableError  # noqa: F401 (importable from here)
from .reference import enroll as enroll_reference
from .result import ModelUse, VerificationResult
from .runtime import Runtime
from .sessions import (
    ChallengeClaims,
    ChallengeGate,
    SessionError,
    TokenInvalidError,
    new_attempt,
    verify_token,
)
from .stores import StoreUnavailable
from .video import VideoLimits, load_video


@dataclass(frozen=True)
class VerifierConfig:
    """Tunable parts of the pipeline. Defaults are the measured ones."""

    sample_fps: float = 15.0
    limits: VideoLimits = field(default_factory=VideoLimits)
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    policy: Policy = field(default_factory=Policy)
    embedder: str = "w600k_mbf"
    detector: str = "yunet"  # a detector part (liveness.parts.PARTS)
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
    # Threads on which the work after decoding runs side by side (the detector at each
    # keyframe, the PAD models while the faces are embedded, the appearance check of each
    # event); 0 or 1: one after the other. Same results either way (analysis.analyse_faces).
    face_workers: int = 2
    # Frames decoded ahead of the landmarker, at most (liveness.keep: the memory bound).
    max_pending_frames: int = 8
    landmark_delegate: str = "cpu"  # MediaPipe's "cpu" (XNNPACK) or "gpu" delegate
    # Which frames get landmarks without a challenge token (liveness.landmark_plan: a 5 fps
    # first pass, then the frames where the eyes move); None: every sampled frame. Off by
    # default: on the 56 shared clips it changes no decision and keeps every blink checked
    # by eye, but one marginal blink and three open mouths are not found again, and without
    # a challenge one more frame-filling print is accepted (benchmarks.attacks: print_fill
    # APCER 0.5 -> 0.67, its expression motion measured on the 5 fps first pass is 0.0201
    # against 0.0187 on every frame, over the 0.02 gate; benchmarks/README.md, "Landmarks
    # on the frames that need them").
    landmark_plan: LandmarkPlan | None = None
    # Passive motion evidence: a recording in which the face neither blinks nor changes
    # expression is not accepted without review (a photo held up), whatever its length;
    # under this length the reason asks for a longer recording (a blink comes every 2-10 s).
    # Before issue 9's last pass clips under 3 s were exempt: a 2.9 s frame-filling print
    # (lbbc2a print_fill, motion 0.014) and a 2 s wild replay (nam157 5) were accepted.
    motion_check_min_s: float = 3.0
    # Measured: live shared clips 0.039-0.17 (0.05 with no blink); rendered still photo 0.005,
    # printed photo 0.008, screen replay 0.032. 0.02 sits between, away from live faces.
    min_expression_motion: float = 0.02
    # Below this frame rate the motion gate's reason says that a blink is easily missed and
    # asks for a recording at the camera's usual rate: a blink closes the eyes for about
    # 100-150 ms, so at under 10 fps most blinks fall between two frames (the 5 fps
    # videos-wild clip 61dc1afa shows none).
    blink_min_fps: float = 10.0
    # A blink, smile or open mouth counts only when the pixels of the eyes or mouth change
    # this many times more than the nose and forehead after the face's planar motion is
    # taken out (liveness.appearance; measured in benchmarks/README.md, "Appearance check").
    event_appearance: AppearanceThresholds = field(default_factory=AppearanceThresholds)


class Verifier:
    """Verifies selfie videos against reference photos.

    Its stage parts are injected when given and built by default when not (see
    :mod:`liveness.parts`); the analysis itself is :func:`liveness.analysis.analyse_faces`
    and :mod:`liveness.evidence`, functions of those parts.

    Parameters
    ----------
    model_dir : directory with the model files (else ``LIVENESS_MODEL_DIR``, the cache).
    config : :class:`VerifierConfig`.
    providers : ONNX Runtime providers (``None``: best available).
    challenges : a :class:`~liveness.sessions.ChallengeGate` (keyring + session store);
        needed to verify videos recorded for a server-issued challenge.
    calibration : a :class:`MatchCalibration` for the embedder (default: the one its
        registry entry ships).
    runtime : share a :class:`Runtime` between verifiers.
    detector, landmarker, embedder, pad : stage parts (:class:`~liveness.parts.Detector`,
        :class:`~liveness.parts.Landmarker`, :class:`~liveness.parts.Embedder`,
        :class:`~liveness.parts.PadEnsemble`); each not given is built from ``config``
        (``detector``, ``embedder``, ``pad_models``, ``landmark_workers``,
        ``landmark_delegate``). A given landmarker stays the caller's to close.
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
        detector: Detector | None = None,
        landmarker: Landmarker | None = None,
        embedder: Embedder | None = None,
        pad: PadEnsemble | None = None,
    ) -> None:
        self.config = cfg = config or VerifierConfig()
        self.challenges = challenges
        self.runtime = rt = runtime or Runtime(
            model_dir, providers=providers, allow_download=allow_download
        )
        t = time.perf_counter()
        for given, kind in (
            (detector, "detector"),
            (embedder, "embedder"),
            (pad, "pad"),
            (landmarker, "landmarker"),
        ):
            if given is not None:
                check_part(given, kind)
        self.detector = detector if detector is not None else build_detector(rt, cfg.detector)
        self.embedder = embedder if embedder is not None else build_embedder(rt, cfg.embedder)
        self.pad = pad if pad is not None else build_pad(rt, cfg.pad_models)
        self._owns_landmarks = landmarker is None
        self.landmarks = landmarker or build_landmarker(
            rt, workers=cfg.landmark_workers, delegate=cfg.landmark_delegate
        )
        self._low_detector = self.detector.with_threshold(cfg.low_detection_score)
        self.landmarks.warm_up()
        self.decoders = Decoders()  # forks each video's decoder from a loaded zygote
        self._calibration = calibration
        self.fusion = FusionParams.load()  # None: the live score is the PAD score
        self.load_s = time.perf_counter() - t

    @property
    def calibration(self) -> MatchCalibration:
        """The similarity calibration of the embedder (loaded on first use)."""
        if self._calibration is None:
            self._calibration = calibration_for(self.embedder.model.name)
        return self._calibration

    @property
    def parts(self) -> Parts:
        """The stage parts the analysis runs."""
        return Parts(self.detector, self._low_detector, self.embedder, self.pad)

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
        attempt: str | None = None,
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
        ``reject`` or ``review`` result with reasons. A session store that cannot be reached
        raises :class:`~liveness.stores.StoreUnavailable` (answer ``503``); the session, if
        this call consumed it, is then released for this video
        (:func:`liveness.sessions.release_verification`, tried once), so that the retry of
        the same upload is verified. ``attempt`` names this try (made here when not given);
        a server that retries the release while the store is down passes its own.

        Memory: frames are analysed as they are decoded; at most
        :func:`liveness.keep.frame_bound` frames' pixels are held at once (74 with the
        defaults: 347 MiB of 1280x1280 frames), whatever the clip's length.
        """
        cfg = self.config
        clock = Clock()
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
                return self._session_refused(exc, clock)
        with clock("reference"):
            ref = reference if isinstance(reference, Reference) else self.enroll(reference)
        if ref.model != self.embedder.model.name:
            raise InputError(
                f"the reference was made with {ref.model}; this verifier "
                f"uses {self.embedder.model.name}"
            )
        if not ref.usable:
            out = Evidence(video={}, reference=reference_info(ref))
            out.reasons.append(
                Reason.of(ReasonCode.REFERENCE_UNUSABLE, "review", detail=", ".join(ref.problems))
            )
            return self._finish(out, clock)
        # Landmarks run on their own threads while the video is still being decoded; "video"
        # is the decoding time and "landmarks" the time spent waiting for them afterwards.
        # Each frame's pixels are kept only while a later stage can use them (liveness.keep).
        keeper = FrameKeeper(
            cfg.quality,
            best_k=cfg.best_k,
            keyframe_every_s=cfg.keyframe_every_s,
            sample_fps=cfg.sample_fps,
            max_pending=cfg.max_pending_frames,
            thumbnails=challenge is not None,  # only a challenge fingerprints the content
        )
        plan = cfg.landmark_plan if challenge is None else None  # a challenge: every frame
        if plan is None:
            stream = self.landmarks.stream(on_mesh=keeper.on_mesh)
        else:
            stream = self.landmarks.stream(
                on_mesh=keeper.on_mesh, plan=plan, on_skip=keeper.on_skip, sample_fps=cfg.sample_fps
            )
        keeper.start(stream)
        try:
            with clock("video"):
                video = load_video(
                    video,
                    sample_fps=cfg.sample_fps,
                    limits=cfg.limits,
                    fps=fps,
                    on_frame=keeper.push,
                    keep_frames=False,
                    decoders=self.decoders,
                )
        except BaseException:
            stream.abort()
            raise
        if challenge is not None:
            attempt = attempt or new_attempt()
            try:
                claims = self.challenges.begin(
                    challenge, video.sha256, now, content=keeper.thumbnails, attempt=attempt
                )
            except SessionError as exc:
                stream.abort()
                return self._session_refused(exc, clock)
            except StoreUnavailable:
                # The session may be consumed (the answer to a commit can be lost): let
                # the retry of this video resume it (sessions.begin_verification).
                stream.abort()
                self.challenges.release(early.session_id, attempt, now)
                raise
        out = Evidence(video=video_info(video), reference=reference_info(ref))
        with clock("landmarks"):
            meshes = stream.finish()
        kept = keeper.finish(video.frames)
        video = replace(video, frames=kept.frames)
        out.video |= {"frames_held_peak": kept.peak_frames, "held_mb_peak": kept.peak_mb}
        out.video["frames_landmarked"] = len(meshes)
        even = stream.evenly_spaced() if plan is not None else meshes  # see landmark_plan
        # What the meshes alone show (the actions, checked in the pixels, and the whole
        # clip's 3D consistency) is worked out on a second thread while the faces are
        # detected, embedded and scored: each stage waits in native code most of the time.
        with (
            ThreadPoolExecutor(1, thread_name_prefix="mesh-evidence") as side,
            _pool(cfg.face_workers) as pool,
        ):
            from_meshes = side.submit(
                mesh_evidence,
                meshes,
                kept.face_thumbs,
                mirrored,
                cfg.event_appearance,
                clock,
                even,
                pool,
            )
            faces = analyse_faces(
                video,
                meshes,
                ref,
                self.parts,
                self.calibration,
                cfg,
                clock,
                measures=kept.measures,
                no_face_samples=kept.no_face_samples,
                face_fraction=sum(m is not None for m in even) / max(len(even), 1),
                pool=pool,
            )
            events, checks, whole = from_meshes.result()
        out.liveness.temporal = motion_evidence(even, events, checks)
        if claims is not None:
            check = self.challenges.check(claims, events, video.duration_s)
            out.challenge_ok = check.completed
            out.head_windows = check.head_windows
            out.liveness.challenge = check.evidence
            out.reasons += check.reasons
        out.add_faces(faces)
        with clock("attack_evidence"):
            attack_evidence(meshes, out, self.fusion, whole)
        motion_gate(video, out, cfg)
        return self._finish(out, clock, claims, now, attempt)

    def _session_refused(self, exc: SessionError, clock: Clock) -> VerificationResult:
        out = Evidence(video={}, reference={})
        out.reasons.append(Reason.of(ReasonCode(exc.code), "reject", message=str(exc)))
        return self._finish(out, clock)

    def _finish(
        self,
        out: Evidence,
        clock: Clock,
        claims: ChallengeClaims | None = None,
        now: float | None = None,
        attempt: str | None = None,
    ) -> VerificationResult:
        result = conclude(out, self.config.policy, clock, self.models_used())
        # "review" counts too: ten photo animations in a row must not all reach the human
        # queue (issue 12).
        if claims is not None and result.decision in ("reject", "review"):
            try:
                self.challenges.record_failure(claims, now)
            except StoreUnavailable:
                # No result is given: the person's retry of this video may resume it.
                self.challenges.release(claims.session_id, attempt, now)
                raise
        return result

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
        """Release the landmarker instances and worker threads (when this verifier built
        the landmarker) and the decoders' zygote process."""
        if self._owns_landmarks:
            self.landmarks.close()
        self.decoders.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def _pool(workers: int) -> Iterator[ThreadPoolExecutor | None]:
    """A thread pool of ``workers`` threads for one call's face analysis, shut down (after
    its tasks end) on leaving; ``None`` (run serially) for fewer than two."""
    if workers < 2:
        yield None
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="faces") as pool:
        yield pool
