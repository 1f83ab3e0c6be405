"""From evidence to a decision: similarity calibration, the policy, and the one score.

Calibration. A cosine similarity means little on its own; what a recovery system needs is
how often two *different* people score that high. :class:`MatchCalibration` holds the
false-match rate (FMR) and false-non-match rate (FNMR) of one embedding model as a function
of the similarity threshold, measured by ``benchmarks/calibrate.py`` on the images of LFW
View 1 ``pairsDevTrain.txt`` (every pair of images of different people as impostors, every
pair of the same person as genuine). ``pairsDevTest.txt`` is kept aside for the benchmark.

Score. ``match_score = clip(-log10(FMR) / 6, 0, 1)`` (FMR 1e-6 or rarer scores 1, 1e-3
scores 0.5), the liveness score is the fused live probability, and the verification score
is the smaller of the two: a result is only as strong as its weakest evidence.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import SetupError
from .reasons import Reason, ReasonCode


@dataclass(frozen=True)
class MatchCalibration:
    """FMR and FNMR as functions of the similarity threshold for one embedding model."""

    model: str
    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray
    n_impostor: int
    n_genuine: int
    source: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None, model: str = "w600k_mbf") -> MatchCalibration:
        """Load a calibration file (default: the one shipped for ``model``)."""
        if path is None:
            text = resources.files("liveness").joinpath(f"data/calibration_{model}.json")
            if not text.is_file():
                raise SetupError(
                    f"no similarity calibration ships for embedder {model!r}: make one with "
                    "python -m benchmarks.calibrate, then pass "
                    "calibration=MatchCalibration.load(path)"
                )
            data = json.loads(text.read_text())
        else:
            data = json.loads(Path(path).read_text())
        return cls(
            data["model"],
            np.asarray(data["thresholds"], float),
            np.asarray(data["fmr"], float),
            np.asarray(data["fnmr"], float),
            int(data["n_impostor"]),
            int(data["n_genuine"]),
            data.get("source", ""),
        )

    @property
    def fmr_floor(self) -> float:
        """The smallest FMR the calibration can tell apart from zero (half an impostor)."""
        return 0.5 / max(self.n_impostor, 1)

    def fmr_at(self, similarity: float) -> float:
        """Estimated FMR of accepting at this similarity (never below :attr:`fmr_floor`)."""
        f = float(np.interp(similarity, self.thresholds, self.fmr))
        return max(f, self.fmr_floor)

    def fnmr_at(self, similarity: float) -> float:
        """Estimated FNMR of a threshold set at this similarity."""
        return float(np.interp(similarity, self.thresholds, self.fnmr))

    def threshold_for(self, target_fmr: float) -> float:
        """Smallest similarity threshold whose measured FMR is at most ``target_fmr``."""
        ok = np.nonzero(self.fmr <= target_fmr)[0]
        return float(self.thresholds[ok[0]]) if ok.size else float(self.thresholds[-1])


def match_score(fmr: float) -> float:
    """Map an FMR estimate to [0, 1]: ``-log10(FMR) / 6`` clipped."""
    return float(min(1.0, max(0.0, -math.log10(max(fmr, 1e-12)) / 6.0)))


@dataclass(frozen=True)
class Policy:
    """Thresholds that turn evidence into accept / review / reject.

    ``accept_fmr``: the match must be at least this unlikely between different people to
    accept; ``reject_fmr``: above this the faces are called different (``FACE_MISMATCH``);
    between the two, ``review``. ``live_accept`` / ``live_reject``: the same for the fused
    live probability (attack tolerance). Defaults are chosen in ``benchmarks/README.md``.
    """

    accept_fmr: float = 1e-4
    reject_fmr: float = 1e-2
    live_accept: float = 0.75
    # live_reject: subject-wise 5-fold CV on NUAA (python -m benchmarks.pad --cv-folds 5)
    # put the threshold that rejects at most 2 % of live faces at 0.04-0.21 (median 0.06);
    # 0.1 gives BPCER 2.9 % / APCER 0.2 % there, and the shared replay videos (0.008, 0.026)
    # stay below it. live_accept is not fitted to NUAA (its prints all score < 0.35): a
    # rendered still photo scores 0.9, so acceptance also needs the video's own motion.
    live_reject: float = 0.1
    require_challenge: bool = False


@dataclass
class Decision:
    """The outcome: decision, score and the reasons behind it."""

    decision: str
    score: float
    reasons: list[Reason] = field(default_factory=list)


def decide(
    policy: Policy,
    *,
    blocking: list[Reason],
    fmr: float | None,
    live: float | None,
    challenge_ok: bool | None,
) -> Decision:
    """Combine evidence; the order of ``reasons`` puts the most useful advice first.

    ``blocking`` holds reasons found earlier (input, quality, session); any with severity
    ``reject`` rejects. Without a measured match or liveness figure the result cannot be
    ``accept``.
    """
    reasons = list(blocking)
    m = match_score(fmr) if fmr is not None else 0.0
    lv = float(live) if live is not None else 0.0
    if fmr is not None:
        if fmr > policy.reject_fmr:
            reasons.append(Reason.of(ReasonCode.FACE_MISMATCH, "reject"))
        elif fmr > policy.accept_fmr:
            reasons.append(Reason.of(ReasonCode.MATCH_UNCERTAIN, "review"))
    if live is not None:
        if live < policy.live_reject:
            reasons.append(Reason.of(ReasonCode.PRESENTATION_ATTACK_SUSPECTED, "reject"))
        elif live < policy.live_accept:
            reasons.append(Reason.of(ReasonCode.LIVENESS_UNCERTAIN, "review"))
    if challenge_ok is None and policy.require_challenge:
        reasons.append(Reason.of(ReasonCode.CHALLENGE_MISSING, "reject"))
    score = min(m, lv)
    if challenge_ok is False:
        score = min(score, 0.0)
    if any(r.severity == "reject" for r in reasons):
        return Decision("reject", round(score, 4), reasons)
    if reasons or fmr is None or live is None:
        return Decision("review", round(score, 4), reasons)
    return Decision("accept", round(score, 4), reasons)
