"""Light from the screen: does the face reflect a colour sequence the server drew just now?

During a live session (:mod:`liveness.stream`) the server has the page fill the screen with
colours it draws at random, one after another. A face a few tens of centimetres from a lit
screen takes on its colour; a wall metres away barely does; a pre-recorded or rendered clip
does not follow a sequence that did not exist when it was made.

What is measured, per analysed frame (:func:`sample_colours`):

* the mean BGR of small skin patches at fixed mesh points (forehead, cheeks), and
* the mean BGR of the background: the frame outside the face box grown by half its size.

Both are turned into chromaticity (each channel over the sum), which cancels the camera's
exposure changes. The expected chromaticity shift of each colour shown is ``c / sum(c) - 1/3``
(the screen colour's own chromaticity, centred). :func:`measure_response` correlates the
face's chromaticity with that expectation over the light phase, trying display and network
delays from 0 to ``max_lag_s``, and also fits the gain (chromaticity shift per unit of
expected shift) of face and background. The face follows when the correlation and the gain
are high enough and the face responds clearly more than the background.

Thresholds (:class:`LightConfig`) were set on real live clips (``selfie_blinks.mp4``,
``AlaaAElshafei...test_video.mp4``) streamed by ``benchmarks.stream`` with and without a
simulated near screen (the skin's reflectance times the screen colour, 25 % of the ambient
light, on the face only): see ``benchmarks/README.md`` (section "Live streaming"). They have
not been fitted on recordings of real phones in front of real faces; a deployment should
measure its own devices first.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Colours the page may show (RGB, 0-255). White and black carry no chromaticity, so they are
# not used: every step of the sequence must move the face's colour.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}

# Skin points of the 478-point mesh: forehead (10, 151, 108, 337, 9), cheeks (50, 280, 205,
# 425, 187, 411, 123, 352), nose sides (101, 330).
SKIN_POINTS = (10, 151, 108, 337, 9, 50, 280, 205, 425, 187, 411, 123, 352, 101, 330)


@dataclass(frozen=True)
class LightConfig:
    """The colour sequence and the test of the face's response.

    ``segments`` colours, each shown for a random time in ``segment_s``; a sequence of 8 at
    0.3-0.5 s lasts about 3 s. ``max_lag_s``: the longest delay tried between the server
    sending a colour and a frame showing it (display, capture and network: 0.1-0.3 s on
    loopback). Pass when ``correlation >= min_correlation``, ``face_gain >= min_face_gain``
    and ``face_gain >= min_face_to_background * background_gain``. Measured with
    ``python -m benchmarks.stream --attacks`` (benchmarks/README.md, "Live streaming"): a real
    clip with a simulated near screen, correlation 0.94-0.96 and gain 0.074-0.091; the same
    frames without it, correlation 0.23-0.54 and gain 0.002-0.005; replayed and rendered
    clips, correlation <= 0.25 and gain <= 0.003. The gain separates them, the correlation
    alone does not.
    """

    segments: int = 10
    segment_s: tuple[float, float] = (0.25, 0.45)
    max_lag_s: float = 0.6
    lag_step_s: float = 0.05
    min_frames: int = 12
    min_correlation: float = 0.75
    min_face_gain: float = 0.03
    min_face_to_background: float = 2.0


def draw_sequence(
    config: LightConfig | None = None, rng: random.Random | None = None
) -> list[tuple[str, float]]:
    """``(colour name, seconds)`` pairs, never the same colour twice in a row."""
    cfg = config or LightConfig()
    rng = rng or random.SystemRandom()
    names = list(PALETTE)
    out: list[tuple[str, float]] = []
    for _ in range(cfg.segments):
        choices = [n for n in names if not out or n != out[-1][0]]
        out.append((rng.choice(choices), round(rng.uniform(*cfg.segment_s), 3)))
    return out


def expected_shift(rgb: Sequence[float]) -> np.ndarray:
    """The chromaticity shift a colour causes, in **BGR** order: ``c / sum(c) - 1/3``."""
    c = np.asarray(rgb, np.float64)[::-1]
    return c / max(float(c.sum()), 1e-9) - 1.0 / 3.0


def sample_colours(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean BGR of the face's skin patches and of the background of one frame.

    ``points``: the frame's mesh ``(478, 2+)`` in pixels. Patches are squares of 5 % of the
    face width around :data:`SKIN_POINTS`; the background is every 4th pixel outside the face
    box grown by half its size on each side (the whole frame when nothing is left).
    """
    h, w = image.shape[:2]
    xy = np.asarray(points, np.float64)[:, :2]
    x1, y1 = xy.min(axis=0)
    x2, y2 = xy.max(axis=0)
    r = max(2, int(round(0.025 * (x2 - x1))))
    patches = []
    for k in SKIN_POINTS:
        cx, cy = int(round(xy[k, 0])), int(round(xy[k, 1]))
        a, b = max(0, cy - r), min(h, cy + r + 1)
        c, d = max(0, cx - r), min(w, cx + r + 1)
        if a < b and c < d:
            patches.append(image[a:b, c:d].reshape(-1, 3))
    face = np.concatenate(patches).mean(axis=0) if patches else np.full(3, np.nan)
    gx, gy = 0.5 * (x2 - x1), 0.5 * (y2 - y1)
    mask = np.ones((h, w), bool)
    rows = slice(max(0, int(y1 - gy)), max(0, int(y2 + gy)))
    cols = slice(max(0, int(x1 - gx)), max(0, int(x2 + gx)))
    mask[rows, cols] = False
    sub = image[::4, ::4][mask[::4, ::4]]
    background = sub.reshape(-1, 3).mean(axis=0) if len(sub) else image.reshape(-1, 3).mean(axis=0)
    return face.astype(np.float64), background.astype(np.float64)


@dataclass(frozen=True)
class LightResult:
    """How the face followed the colour sequence (``followed``) and the figures behind it."""

    followed: bool
    correlation: float
    face_gain: float
    background_gain: float
    lag_s: float
    frames: int
    problem: str | None = None
    sequence: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "followed": self.followed,
            "correlation": round(self.correlation, 4),
            "face_gain": round(self.face_gain, 4),
            "background_gain": round(self.background_gain, 4),
            "lag_s": round(self.lag_s, 3),
            "frames": self.frames,
            "problem": self.problem,
            "sequence": self.sequence,
        }


def _chroma(bgr: np.ndarray) -> np.ndarray:
    return bgr / np.maximum(bgr.sum(axis=1, keepdims=True), 1e-6)


def _fit(observed: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Correlation and gain (least-squares slope) of centred ``observed`` on ``expected``."""
    o = observed - observed.mean(axis=0)
    e = expected - expected.mean(axis=0)
    ee = float((e * e).sum())
    oo = float((o * o).sum())
    oe = float((o * e).sum())
    if ee <= 1e-12 or oo <= 1e-12:
        return 0.0, 0.0
    return oe / np.sqrt(ee * oo), oe / ee


def measure_response(
    shown: Sequence[tuple[float, Sequence[float] | None]],
    times: Sequence[float],
    face_bgr: Sequence[Sequence[float]],
    background_bgr: Sequence[Sequence[float]],
    *,
    end_s: float,
    config: LightConfig | None = None,
) -> LightResult:
    """Test whether the face followed the colours ``shown``.

    ``shown``: ``(t_sent, rgb)`` in the order sent (``rgb`` ``None`` ends the light phase at
    ``t_sent``); ``times`` / ``face_bgr`` / ``background_bgr``: one row per frame with a face
    (:func:`sample_colours`), times on the same clock; ``end_s``: when the light phase ended.
    Frames from the first colour to ``end_s`` (plus the lag) are used.
    """
    cfg = config or LightConfig()
    seq = [{"t": round(float(t), 3), "rgb": None if c is None else list(c)} for t, c in shown]
    if not shown:
        return LightResult(False, 0.0, 0.0, 0.0, 0.0, 0, "no colours were shown", seq)
    t = np.asarray(times, np.float64)
    face = np.asarray(face_bgr, np.float64).reshape(-1, 3)
    bg = np.asarray(background_bgr, np.float64).reshape(-1, 3)
    ok = np.isfinite(face).all(axis=1) & np.isfinite(bg).all(axis=1)
    t, face, bg = t[ok], _chroma(face[ok]), _chroma(bg[ok])
    starts = np.array([s for s, _ in shown], np.float64)
    shifts = [None if c is None else expected_shift(c) for _, c in shown]
    best: tuple[float, float, float, float, int] | None = None  # corr, gain, bg_gain, lag, n
    for lag in np.arange(0.0, cfg.max_lag_s + 1e-9, cfg.lag_step_s):
        shown_at = t - lag
        sel = (shown_at >= starts[0]) & (shown_at < end_s)
        idx = np.searchsorted(starts, shown_at[sel], side="right") - 1
        keep = np.array([shifts[i] is not None for i in idx], bool)
        if keep.sum() < cfg.min_frames:
            continue
        expected = np.stack([shifts[i] for i in idx[keep]])
        corr, gain = _fit(face[sel][keep], expected)
        _, bg_gain = _fit(bg[sel][keep], expected)
        if best is None or corr > best[0]:
            best = (corr, gain, bg_gain, float(lag), int(keep.sum()))
    if best is None:
        return LightResult(
            False, 0.0, 0.0, 0.0, 0.0, 0, "too few frames with a face while the colours showed", seq
        )
    corr, gain, bg_gain, lag, n = best
    problem = None
    if corr < cfg.min_correlation:
        problem = f"the face's colour did not follow the screen (correlation {corr:.2f})"
    elif gain < cfg.min_face_gain:
        problem = f"the face's colour changed too little with the screen (gain {gain:.3f})"
    elif gain < cfg.min_face_to_background * max(bg_gain, 0.0):
        problem = (
            "the background changed as much as the face "
            f"(face {gain:.3f}, background {bg_gain:.3f})"
        )
    followed = problem is None
    return LightResult(followed, float(corr), float(gain), float(bg_gain), lag, n, problem, seq)
