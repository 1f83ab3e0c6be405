"""The verification result: decision, score, reasons, per-stage evidence, timings, models."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from .formats import RESULT_FORMAT, check_readable
from .reasons import Outcome, Reason


@dataclass
class ModelUse:
    """Which model file ran a stage, and where."""

    name: str
    sha256: str
    provider: str
    license: str


@dataclass
class MatchEvidence:
    """Comparison of the recording with the reference."""

    similarity: float | None = None
    fmr_estimate: float | None = None
    accept_threshold: float | None = None
    frames_compared: list[float] = field(default_factory=list)  # times in seconds


@dataclass
class LivenessEvidence:
    """Passive presentation-attack evidence (and the challenge, when one was issued)."""

    score: float | None = None  # fused live probability
    model_score: float | None = None  # mean of the anti-spoofing models over frames
    per_frame: list[dict] = field(default_factory=list)  # {"t", "live"}
    temporal: dict = field(default_factory=dict)
    challenge: dict | None = None
    geometry: dict | None = None  # 3D consistency (liveness.geometry), whole clip / head steps
    screen: dict | None = None  # screen-replay cue (liveness.screen)


@dataclass
class VerificationResult:
    """What ``verify`` returns. ``to_dict`` / ``to_json`` give the audit record (with
    ``format_version``, see :mod:`liveness.formats`); ``from_dict`` reads one back.

    ``decision`` is an :class:`~liveness.reasons.Outcome`, a ``str`` enum: it compares equal
    to ``"accept"``, ``"review"`` and ``"reject"``.
    """

    decision: Outcome
    score: float
    reasons: list[Reason]
    match: MatchEvidence
    liveness: LivenessEvidence
    quality: dict
    video: dict
    timings_ms: dict[str, float]
    models: dict[str, ModelUse]
    reference: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.decision = Outcome(self.decision)

    @property
    def accepted(self) -> bool:
        return self.decision == "accept"

    @property
    def reason_codes(self) -> list[str]:
        return [str(getattr(r.code, "value", r.code)) for r in self.reasons]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": RESULT_FORMAT,
            "decision": self.decision.value,
            "score": self.score,
            "reasons": [r.to_dict() for r in self.reasons],
            "match": _plain(self.match),
            "liveness": _plain(self.liveness),
            "quality": _plain(self.quality),
            "video": _plain(self.video),
            "reference": _plain(self.reference),
            "timings_ms": _plain(self.timings_ms),
            "models": {k: _plain(v) for k, v in self.models.items()},
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerificationResult:
        """An audit record written by :meth:`to_dict` of this or an earlier release (fields
        added by a newer minor version are ignored; a newer major version raises
        :class:`~liveness.formats.FormatVersionError`)."""
        check_readable(d, "verification record", RESULT_FORMAT)
        return cls(
            decision=Outcome(d["decision"]),
            score=float(d["score"]),
            reasons=[Reason.from_dict(r) for r in d.get("reasons", [])],
            match=_known(MatchEvidence, d.get("match") or {}),
            liveness=_known(LivenessEvidence, d.get("liveness") or {}),
            quality=dict(d.get("quality") or {}),
            video=dict(d.get("video") or {}),
            timings_ms=dict(d.get("timings_ms") or {}),
            models={k: _known(ModelUse, v) for k, v in (d.get("models") or {}).items()},
            reference=dict(d.get("reference") or {}),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> VerificationResult:
        return cls.from_dict(json.loads(text))


def _known(kind: type, d: dict) -> Any:
    """``kind(**d)`` keeping only the fields ``kind`` has (a newer minor version may add some)."""
    names = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in d.items() if k in names})


def _plain(x: Any) -> Any:
    """JSON-ready copy: dataclasses to dicts, numpy scalars to Python, NaN to None."""
    if is_dataclass(x) and not isinstance(x, type):
        return _plain(asdict(x))
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return None if not np.isfinite(f) else round(f, 6)
    if isinstance(x, np.integer):
        return int(x)
    if hasattr(x, "value") and isinstance(x.value, str):
        return x.value
    return x
