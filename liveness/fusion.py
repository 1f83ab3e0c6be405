"""One live score from several kinds of attack evidence.

Inputs, per clip:

* ``pad``: the anti-spoofing models' mean live probability (``liveness.attack``);
* ``geometry``: the 3D-consistency verdict of ``liveness.geometry`` ("3d" / "flat" /
  "no_evidence");
* ``screen``: the spectral peakiness of ``liveness.screen`` (``None`` when the face was too
  small to measure);
* ``motion``: the expression motion of the face (mean blendshape standard deviation).

The score is a logistic model ``sigmoid(bias + w . x)`` with
``x = (logit(pad), [3d], screen - screen_centre, log10(motion))``, whose parameters are
fitted by ``python -m benchmarks.attacks --fit`` (subject-wise cross-validation on the
shared live clips against the shared replays and generated attacks) and shipped in
``liveness/data/fusion.json``. A flat face is not left to the weights: it is a reason of
its own (``FLAT_FACE``), as is a challenge that was not completed.

Without the file (or with ``params=None`` and none shipped) the score is the PAD score.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

FEATURES = ("pad_logit", "geometry_3d", "screen", "motion_log")


@dataclass(frozen=True)
class FusionParams:
    """Weights of the logistic fusion (see module docstring) and where they came from."""

    bias: float
    weights: dict[str, float]
    screen_centre: float
    source: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None) -> FusionParams | None:
        """The shipped parameters (or those in ``path``); ``None`` when none ship."""
        if path is None:
            f = resources.files("liveness").joinpath("data/fusion.json")
            if not f.is_file():
                return None
            data = json.loads(f.read_text())
        else:
            data = json.loads(Path(path).read_text())
        return cls(
            float(data["bias"]),
            {k: float(data["weights"].get(k, 0.0)) for k in FEATURES},
            float(data["screen_centre"]),
            data.get("source", ""),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def features(
    pad: float, geometry: str | None, screen: float | None, motion: float | None,
    screen_centre: float = 0.0,
) -> dict[str, float]:
    """The fusion's inputs from the raw evidence (missing evidence is neutral: 0)."""
    p = min(max(float(pad), 1e-4), 1 - 1e-4)
    return {
        "pad_logit": math.log(p / (1 - p)),
        "geometry_3d": 1.0 if geometry == "3d" else 0.0,
        "screen": 0.0 if screen is None else float(screen) - screen_centre,
        "motion_log": math.log10(max(float(motion or 0.0), 1e-3)) + 1.5,
    }


def fused_score(
    params: FusionParams | None,
    pad: float,
    geometry: str | None,
    screen: float | None,
    motion: float | None,
) -> float:
    """The calibrated live probability (the PAD score when ``params`` is ``None``)."""
    if params is None:
        return float(pad)
    x = features(pad, geometry, screen, motion, params.screen_centre)
    z = params.bias + sum(params.weights[k] * x[k] for k in FEATURES)
    z = max(min(z, 40.0), -40.0)
    return 1.0 / (1.0 + math.exp(-z))
