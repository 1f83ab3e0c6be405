"""The verification result: decision, score, reasons, per-stage evidence, timings, models."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import numpy as np

from .reasons import Reason


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
    """What ``verify`` returns. ``to_dict`` / ``to_json`` give the audit record."""

    decision: str
    score: float
    reasons: list[Reason]
    match: MatchEvidence
    liveness: LivenessEvidence
    quality: dict
    video: dict
    timings_ms: dict[str, float]
    models: dict[str, ModelUse]
    reference: dict = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.decision == "accept"

    @property
    def reason_codes(self) -> list[str]:
        return [r.code.value for r in self.reasons]

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
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
