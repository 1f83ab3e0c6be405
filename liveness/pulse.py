"""A pulse cue (remote photoplethysmography, rPPG): does the skin change colour with a heartbeat?

The skin of a live person changes colour very slightly with each heartbeat (0.7-3 Hz,
42-180 beats a minute, strongest in green), on the cheeks and forehead; a paper print has
no pulse. A screen replay of a real recording reproduces an attenuated pulse, so this cue
is not meant to stop replays.

The stages, each a small function on arrays:

* :func:`roi_means`: the mean BGR colour of the forehead and both cheeks in one frame
  (polygons of the MediaPipe 478-point mesh, :mod:`liveness.landmarks`), with the pixel
  count of each region;
* :func:`skin_trace`: those means over a recording (``None`` where no face was followed);
* :func:`resample`: the trace on an even time grid (frame times of uploads are uneven);
* :func:`pos_signal`: the pulse signal by POS (Wang, den Brinker, Stuijk, de Haan, "Algorithmic
  principles of remote PPG", IEEE TBME 2017), a projection of the normalised colour plane
  orthogonal to the skin tone, which cancels intensity changes common to the three channels;
* :func:`spectrum_snr`: the strongest peak of the signal in the pulse band and its SNR (power
  within ``half_width`` of the peak and its first harmonic against the rest of the band);
* :func:`pulse`: all of it, as a :class:`PulseResult` that is "not measurable" (with why)
  rather than a number when the recording is too short, too sparse or the face too small;
  :func:`pulse_of_frames` from frames and meshes as the pipeline holds them.

Nothing here keeps a frame: the per-frame input is three mean colours. Cost: 0.42 ms a frame
for the region means (median over 101 clips; 0.24-1.19) and about 1 ms a clip for the
signal, measured by ``python -m benchmarks.pulse``.

**Not a liveness vote.** Measured by ``python -m benchmarks.pulse`` on every shared live
clip, the shared replays and mask, and every generated attack kind (``benchmarks/README.md``,
"Pulse (rPPG)"): 18 of 49 real live clips are not measurable (16 of them 3 s or shorter),
and on the rest the SNR of real faces does not stand above that of printed photos (live
median -0.9 dB; generated print kinds, medians -0.9 to +1.4 dB; a threshold that keeps
95 % of live clips lets every print through; POS, CHROM, green and region agreement
alike). On short, compressed, moving selfie clips the pulse is below the noise, so this
module is a measurement only: nothing in the decision uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .landmarks import FaceMesh
from .video import Frame

# Skin regions of the 478-point mesh (convex hulls of these points): the forehead above the
# brows, and each cheek below the eye, clear of the nose and the mouth (checked by eye on
# shared clips: talking_head_wda_1, a print_fill attack).
FOREHEAD = (107, 66, 69, 109, 10, 338, 299, 296, 336, 9, 151, 108, 337)
RIGHT_CHEEK = (118, 119, 100, 126, 209, 49, 129, 203, 205, 50)  # the person's right
LEFT_CHEEK = (347, 348, 329, 355, 429, 279, 358, 423, 425, 280)
REGIONS = (FOREHEAD, RIGHT_CHEEK, LEFT_CHEEK)

# The pulse band: 42-180 beats a minute.
BAND_HZ = (0.7, 3.0)


@dataclass(frozen=True)
class PulseLimits:
    """When a pulse is measurable at all.

    ``min_seconds``: the signal spans at least this long (the spectrum's resolution is about
    ``1 / seconds``: 0.25 Hz, 15 beats a minute, at 4 s); ``min_rate_hz``: the even grid is
    at least this fast (twice the top of the band would be 6 Hz; below it the band is cut at
    the Nyquist frequency, and under 3 Hz there is no band left); ``min_face_fraction``: the
    share of frames with a face; ``min_region_px``: the mean skin pixels per frame over the
    three regions (fewer and the 8-bit quantisation of a few pixels swamps a pulse of about
    0.1 grey level); ``max_gap_s``: the longest stretch without a face that is bridged by
    interpolation.
    """

    min_seconds: float = 4.0
    min_rate_hz: float = 4.0
    min_face_fraction: float = 0.8
    min_region_px: float = 200.0
    max_gap_s: float = 0.5


@dataclass(frozen=True)
class PulseResult:
    """The pulse cue of one recording.

    ``measurable``: whether a pulse could be looked for (else ``why`` says what was
    missing and ``snr_db`` / ``hz`` are ``None``); ``snr_db``: the SNR of the strongest peak
    in the pulse band (:func:`spectrum_snr`); ``hz``: its frequency (beats a minute = 60 x);
    ``seconds``: how much of the recording the signal is based on; ``rate_hz``: the even grid
    it was resampled to; ``frames``: frames with a face; ``region_px``: mean skin pixels per
    frame.
    """

    measurable: bool
    snr_db: float | None
    hz: float | None
    seconds: float
    rate_hz: float
    frames: int
    region_px: float
    why: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def roi_means(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The mean colour and size of each skin region in one frame.

    ``image``: ``(H, W, 3)`` uint8 BGR; ``points``: the ``(478, >=2)`` mesh in pixels.
    Returns ``(len(REGIONS), 4)`` float64: per region the mean B, G, R over the pixels inside
    the convex hull of its points, and that pixel count (0 and NaN means when the region is
    outside the image).
    """
    h, w = image.shape[:2]
    out = np.full((len(REGIONS), 4), np.nan)
    for k, region in enumerate(REGIONS):
        xy = np.asarray(points, np.float64)[list(region), :2]
        x0, y0 = np.floor(xy.min(axis=0)).astype(int)
        x1, y1 = np.ceil(xy.max(axis=0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            out[k, 3] = 0.0
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        hull = cv2.convexHull(np.round(xy - [x0, y0]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255)
        n = float(cv2.countNonZero(mask))
        out[k, 3] = n
        if n > 0:
            out[k, :3] = cv2.mean(image[y0:y1, x0:x1], mask=mask)[:3]
    return out


def pooled(means: np.ndarray) -> tuple[np.ndarray, float]:
    """One skin colour from :func:`roi_means`' rows: the pixel-weighted mean BGR of the
    regions, and the total pixel count (NaN colour when no region has pixels)."""
    n = means[:, 3]
    ok = n > 0
    total = float(n[ok].sum())
    if total <= 0:
        return np.full(3, np.nan), 0.0
    return (means[ok, :3] * n[ok, None]).sum(axis=0) / total, total


def skin_trace(
    images: Sequence[np.ndarray | None], meshes: Sequence[np.ndarray | None]
) -> tuple[np.ndarray, np.ndarray]:
    """The pooled skin colour of each frame: ``(N, 3)`` BGR (NaN rows where the image or
    the mesh is ``None``) and ``(N,)`` skin pixel counts. ``meshes`` are ``(478, >=2)``
    point arrays (``FaceMesh.points``)."""
    colours = np.full((len(images), 3), np.nan)
    pixels = np.zeros(len(images))
    for i, (img, pts) in enumerate(zip(images, meshes, strict=True)):
        if img is None or pts is None or img.ndim != 3 or img.shape[2] != 3:
            continue
        colours[i], pixels[i] = pooled(roi_means(img, pts))
    return colours, pixels


def resample(
    t: np.ndarray, x: np.ndarray, rate_hz: float, max_gap_s: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """``x`` (``(N, C)``, NaN rows missing) at times ``t`` (seconds, increasing) on an even
    grid of ``rate_hz`` from the first to the last valid sample, by linear interpolation.
    ``None`` when a stretch without valid samples is longer than ``max_gap_s`` or fewer than
    two samples are valid."""
    t = np.asarray(t, np.float64)
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x).all(axis=1)
    if ok.sum() < 2:
        return None
    tv, xv = t[ok], x[ok]
    if np.max(np.diff(tv)) > max_gap_s:
        return None
    grid = np.arange(tv[0], tv[-1] + 1e-9, 1.0 / rate_hz)
    return grid, np.stack([np.interp(grid, tv, xv[:, c]) for c in range(x.shape[1])], axis=1)


def longest_run(t: np.ndarray, x: np.ndarray, max_gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The longest stretch (in time) of ``x``'s valid rows (no NaN) in which consecutive
    valid rows are at most ``max_gap_s`` apart: ``(t, x)`` of that stretch, invalid rows
    inside it kept (for :func:`resample` to bridge). Needs at least one valid row."""
    ok = np.flatnonzero(np.isfinite(x).all(axis=1))
    cuts = np.flatnonzero(np.diff(t[ok]) > max_gap_s)
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(ok) - 1]])
    k = int(np.argmax(t[ok[ends]] - t[ok[starts]]))
    a, b = ok[starts[k]], ok[ends[k]]
    return t[a : b + 1], x[a : b + 1]


def pos_signal(rgb: np.ndarray, rate_hz: float, window_s: float = 1.6) -> np.ndarray:
    """The POS pulse signal of an even ``(N, 3)`` trace in **R, G, B** order.

    In each window of ``window_s`` (1.6 s: the paper's choice, at least one beat at 42 a
    minute), the trace is divided by its mean (so a slow change of light or skin tone
    cancels), projected onto ``S1 = G - B`` and ``S2 = G + B - 2R`` and combined as
    ``S1 + (std S1 / std S2) S2``; the windows are overlap-added. Returns ``(N,)``
    zero-mean (all zeros when the trace is shorter than a window)."""
    n = len(rgb)
    w = max(int(round(window_s * rate_hz)), 2)
    h = np.zeros(n)
    if n < w:
        return h
    win = np.lib.stride_tricks.sliding_window_view(np.asarray(rgb, np.float64), w, axis=0)
    m = win.mean(axis=2, keepdims=True)  # (n - w + 1, 3, 1)
    cn = win / np.where(m > 0, m, np.inf)
    s1 = cn[:, 1] - cn[:, 2]
    s2 = cn[:, 1] + cn[:, 2] - 2 * cn[:, 0]
    sd1, sd2 = s1.std(axis=1, keepdims=True), s2.std(axis=1, keepdims=True)
    p = s1 + np.divide(sd1, sd2, out=np.zeros_like(sd1), where=sd2 > 0) * s2
    p -= p.mean(axis=1, keepdims=True)
    for s in range(w):  # overlap-add: window k covers samples k .. k + w - 1
        h[s : s + len(p)] += p[:, s]
    return h - h.mean()


def detrend(x: np.ndarray) -> np.ndarray:
    """``x`` less its least-squares line (POS has already cancelled slower changes window by
    window; the spectrum is read in the pulse band only)."""
    n = len(x)
    if n < 3:
        return x - np.mean(x) if n else x
    i = np.arange(n)
    return x - np.polyval(np.polyfit(i, x, 1), i)


def spectrum_snr(
    x: np.ndarray, rate_hz: float, band: tuple[float, float] = BAND_HZ, half_width: float = 0.15
) -> tuple[float, float]:
    """The strongest peak of ``x`` (even samples at ``rate_hz``) in ``band`` and its SNR.

    Power spectrum of the Hann-windowed signal, zero-padded to 0.02 Hz bins; the band is cut
    at 0.95 x the Nyquist frequency. Signal: the power within ``half_width`` Hz (at least
    one resolution cell, ``1 / duration``) of the peak, plus that around twice its frequency
    where that is in the band (the pulse wave is not a sine); noise: the rest of the band.
    Returns ``(snr_db, peak_hz)``; ``(-inf, nan)`` when the band is empty or silent."""
    n = len(x)
    if n < 4:
        return float("-inf"), float("nan")
    f, spec = power_spectrum(x, rate_hz)
    return peak_snr(f, spec, rate_hz, n, band, half_width)


def power_spectrum(x: np.ndarray, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and power of the Hann-windowed, zero-mean ``x`` (even samples at
    ``rate_hz``), zero-padded to 0.02 Hz bins."""
    n = len(x)
    nfft = max(int(2 ** np.ceil(np.log2(rate_hz / 0.02))), n)
    spec = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(n), nfft)) ** 2
    return np.fft.rfftfreq(nfft, 1.0 / rate_hz), spec


def peak_snr(
    f: np.ndarray,
    spec: np.ndarray,
    rate_hz: float,
    n: int,
    band: tuple[float, float] = BAND_HZ,
    half_width: float = 0.15,
) -> tuple[float, float]:
    """:func:`spectrum_snr` of a power spectrum ``spec`` at frequencies ``f``
    (:func:`power_spectrum` of ``n`` samples at ``rate_hz``)."""
    lo, hi = band[0], min(band[1], 0.95 * rate_hz / 2)
    if hi <= lo:
        return float("-inf"), float("nan")
    inb = (f >= lo) & (f <= hi)
    if not inb.any() or spec[inb].sum() <= 0:
        return float("-inf"), float("nan")
    peak = float(f[inb][np.argmax(spec[inb])])
    hw = max(half_width, rate_hz / n)
    sig = inb & ((np.abs(f - peak) <= hw) | (np.abs(f - 2 * peak) <= hw))
    noise = inb & ~sig
    ps, pn = spec[sig].sum(), spec[noise].sum()
    if pn <= 0:
        return float("inf"), peak
    return float(10 * np.log10(ps / pn)), peak


def pulse(
    times: Sequence[float],
    colours: np.ndarray,
    pixels: np.ndarray | None = None,
    limits: PulseLimits | None = None,
    rate_hz: float | None = None,
) -> PulseResult:
    """The pulse cue from a skin-colour trace.

    ``times``: each frame's time (seconds); ``colours``: ``(N, 3)`` BGR skin colour per
    frame (:func:`skin_trace`; NaN rows: no face); ``pixels``: skin pixels per frame (for
    the face-size limit; unchecked when ``None``); ``rate_hz``: the even grid (default: the
    median frame rate of the frames with a face, at most 30 Hz)."""
    lim = limits or PulseLimits()
    t = np.asarray(times, np.float64)
    c = np.asarray(colours, np.float64).reshape(len(t), 3)
    ok = np.isfinite(c).all(axis=1)
    frames = int(ok.sum())
    px = float(np.mean(pixels[ok])) if pixels is not None and frames else float("nan")
    span = float(t[ok][-1] - t[ok][0]) if frames >= 2 else 0.0
    dt = np.diff(t[ok])
    dt = dt[dt > 0]
    rate = rate_hz or (min(1.0 / float(np.median(dt)), 30.0) if len(dt) else 0.0)

    def none(why: str) -> PulseResult:
        return PulseResult(False, None, None, span, rate, frames, px, why)

    if len(t) == 0 or frames < 2:
        return none("no face followed")
    if frames / len(t) < lim.min_face_fraction:
        return none(f"face followed in {frames / len(t):.0%} of frames")
    if span < lim.min_seconds:
        return none(f"{span:.1f} s of face, {lim.min_seconds:g} s needed")
    if rate < lim.min_rate_hz:
        return none(f"{rate:.1f} frames a second, {lim.min_rate_hz:.0f} needed")
    if pixels is not None and not px >= lim.min_region_px:
        return none(f"face too small ({px:.0f} skin pixels, {lim.min_region_px:.0f} needed)")
    t, c = longest_run(t, c, lim.max_gap_s)
    span = float(t[-1] - t[0])
    if span < lim.min_seconds:
        return none(f"{span:.1f} s of face without a gap over {lim.max_gap_s} s")
    even = resample(t, c, rate, lim.max_gap_s)
    if even is None:  # pragma: no cover - longest_run leaves no such gap
        return none(f"a gap of more than {lim.max_gap_s} s without a face")
    _, bgr = even
    h = detrend(pos_signal(bgr[:, ::-1], rate))
    snr, hz = spectrum_snr(h, rate)
    if not np.isfinite(hz):
        return none("no pulse band at this frame rate")
    return PulseResult(True, snr, hz, span, rate, frames, px)


def pulse_of_frames(
    frames: Sequence[Frame], meshes: Sequence[FaceMesh | None], limits: PulseLimits | None = None
) -> PulseResult:
    """:func:`pulse` of a recording as the pipeline holds it: ``frames`` (with pixels) and
    the landmarker's mesh for each (``None``: no face), frame times from the frames."""
    colours, pixels = skin_trace(
        [f.image for f in frames], [None if m is None else m.points for m in meshes]
    )
    return pulse([f.t for f in frames], colours, pixels, limits)
