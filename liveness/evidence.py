"""Attack evidence beyond the PAD models, and the liveness gates built on it.

* :func:`mesh_evidence`: the actions confirmed in the pixels and the whole clip's 3D
  consistency, from the meshes alone;
* :func:`motion_evidence`: what the face did on its own (actions, expression motion);
* :func:`attack_evidence`: 3D consistency over the clip and each head-movement step
  (:mod:`liveness.geometry`; a flat face is ``FLAT_FACE``), then the fused live score
  (:mod:`liveness.fusion`);
* :func:`motion_gate`: a face that never blinks or moves is reviewed, whatever the length.

Each works on the call's :class:`~liveness.analysis.Evidence`; the thresholds are
:class:`~liveness.verify.VerifierConfig` fields, whose comments give their measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING

import numpy as np

from .appearance import AppearanceThresholds, FaceThumb, confirm_events
from .challenges import ActionEvent, detect_actions
from .fusion import FusionParams, fused_score
from .geometry import Consistency, consistency
from .landmarks import FaceMesh
from .reasons import Reason, ReasonCode
from .video import Video

if TYPE_CHECKING:
    from .analysis import Clock, Evidence
    from .verify import VerifierConfig


def motion_evidence(
    meshes: list[FaceMesh | None], events: list[ActionEvent], checks: Sequence = ()
) -> dict:
    """What the face did on its own: actions seen (``events``, after the appearance check
    of :mod:`liveness.appearance`, whose ``checks`` are listed), and how much its
    expression moved (the mean standard deviation of the mouth and eye blendshapes over
    the recording)."""
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


def mesh_evidence(
    meshes: list[FaceMesh | None],
    thumbs: Mapping[int, FaceThumb],
    mirrored: bool,
    thresholds: AppearanceThresholds,
    clock: Clock,
    rest: list[FaceMesh | None] | None = None,
    pool: Executor | None = None,
) -> tuple[list[ActionEvent], list, Consistency]:
    """What the meshes alone show: the actions, kept where the pixels confirm them
    (:func:`liveness.appearance.confirm_events` on ``thumbs``: the events and each check),
    and the whole clip's 3D consistency (:func:`liveness.geometry.consistency`), for
    :func:`attack_evidence`'s ``whole``. ``rest``: the evenly spaced meshes that give the
    actions' rest values (a landmark plan's first pass); ``pool``: where the events are
    checked side by side. Needs no face analysis, so :class:`~liveness.verify.Verifier`
    runs it on a second thread beside it."""
    with clock("actions"):
        events, checks = confirm_events(
            detect_actions(meshes, mirrored=mirrored, rest=rest),
            thumbs,
            meshes,
            thresholds=thresholds,
            pool=pool,
        )
    with clock("geometry"):
        whole = consistency(meshes)
    return events, checks, whole


def attack_evidence(
    meshes: list[FaceMesh | None],
    out: Evidence,
    fusion: FusionParams | None,
    whole: Consistency | None = None,
) -> None:
    """3D consistency over the whole clip (``whole``, when already judged: it needs only
    the meshes, so :class:`~liveness.verify.Verifier` judges it while the faces are
    analysed) and over each head-movement step of the challenge (a flat face in any of
    them is refused), then the fused live score."""
    whole = consistency(meshes) if whole is None else whole
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
    out.live = fused_score(fusion, out.liveness.model_score, verdict, screen, motion)
    out.liveness.score = out.live


def motion_gate(video: Video, out: Evidence, config: VerifierConfig) -> None:
    """A face that never blinks or moves its features is more likely a photo than a
    person: without a completed challenge, ask for review. This holds for a clip of any
    length: a short clip shows less, it does not earn an exemption (an attacker would
    send 2.9 s). The reason says what the person can change: a clip shorter than
    ``motion_check_min_s``, or a frame rate under ``blink_min_fps``."""
    cfg = config
    m = out.liveness.temporal
    if (
        out.challenge_ok is None
        and m.get("frames", 0) > 0
        and m["blinks"] == 0
        and m["expression_motion"] < cfg.min_expression_motion
        and out.live is not None
    ):
        detail, message = "no blink or expression change seen", None
        if video.duration_s < cfg.motion_check_min_s:
            detail += f" in {video.duration_s:.1f} s"
            message = (
                f"We saw no blink or change of expression in a {video.duration_s:.1f}-second "
                f"recording. Record again for at least {cfg.motion_check_min_s:.0f} seconds "
                "and look at the camera naturally; otherwise a member of staff will review "
                "this recording."
            )
        elif video.fps and video.fps < cfg.blink_min_fps:
            # the person can fix this one: a blink is shorter than the gap between frames
            detail += f" at {video.fps:.0f} fps"
            message = (
                f"We saw no blink or change of expression, and at {video.fps:.0f} frames a "
                "second a blink is easily missed. Record again with the camera at its usual "
                "frame rate and look at the camera naturally; otherwise a member of staff "
                "will review this recording."
            )
        out.reasons.append(
            Reason.of(ReasonCode.LIVENESS_UNCERTAIN, "review", detail=detail, message=message)
        )
