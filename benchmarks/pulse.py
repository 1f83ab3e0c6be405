"""The pulse cue (:mod:`liveness.pulse`) on every shared clip and every generated attack kind.

    python -m benchmarks.pulse [--clips DIR] [--refresh] [--json out/pulse.json]

Clips: every row of ``$LIVENESS_DATA_DIR/videos/labels.csv`` and ``videos-wild/labels.csv``
(live clips, the real screen replays and the mask), and the attack clips of
:mod:`benchmarks.attack_clips` (every kind on the victims of :mod:`benchmarks.attacks`),
made in ``--clips`` (default ``out/pulse/clips``) with the seeds ``benchmarks.attacks`` uses,
but from the first ``--attack-seconds`` (10) of each victim rather than 4 s (too short for a
pulse; a victim shorter than that gives a shorter attack). The generator draws a static print
under constant light with independent sensor noise per pixel (``attack_clips.camera``): the
region means of such a print carry almost no change at all, so "no pulse" on them is weak
evidence. Two more kinds make the prints harder: ``print_fill_relit`` and
``print_flat_relit`` add what a real camera and lamp add (:func:`relit`: shading and a white
sheen that swing with the hand in the pulse band, exposure and white-balance hunting, shot
noise).

Each clip is decoded at the pipeline's 15 frames a second (``--sample-fps``; 0: every
frame), the first ``--max-seconds``; the landmarker follows the face, and per frame the
mean colour and pixel count of the forehead and cheek regions
(:func:`liveness.pulse.roi_means`) are cached in ``out/pulse/traces/`` (three means per
frame; no frame or face is kept). Alongside, the same regions moved sideways by 1.3 face
widths onto the background (tracked with the face, on the side that stays in the image):
real camera noise, compression and exposure drift without a pulse, a **real-camera null**
for the cue.

Reported (JSON, last line):

* per clip: the :class:`~liveness.pulse.PulseResult` of the skin and of the background;
* per group (live, replay, mask, each generated kind, the background null): how many were
  measurable, and the SNR distribution;
* the rule "pulse SNR >= t": ``t`` fitted on the live clips of the training subjects only
  (the ``--live-pass`` quantile, default 5 %, of their SNRs: at most 5 % of them fall
  below it), evaluated **leave-one-subject-out** (each clip, live or attack, scored with
  the ``t`` fitted without its subject; an attack belongs to its victim's subject) and on a
  **held-out** quarter of the subjects (chosen by a hash of the subject name) with ``t``
  fitted on the rest. A clip that is not measurable does not pass (no pulse evidence);
  pass rates are given over all clips and over measurable ones;
* timing: milliseconds per clip of the cue itself (region means + signal), apart from
  decoding and landmarks, which the pipeline already pays.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.attack_clips import KINDS, load_victim, make_attack, write_clip
from benchmarks.attacks import VICTIMS, shared_clips
from benchmarks.common import emit, parent_parser, progress, set_progress
from liveness.parts import build_landmarker
from liveness.pulse import (
    BAND_HZ,
    REGIONS,
    PulseLimits,
    PulseResult,
    detrend,
    longest_run,
    peak_snr,
    pooled,
    pos_signal,
    power_spectrum,
    pulse,
    resample,
    roi_means,
    spectrum_snr,
)
from liveness.runtime import Runtime
from liveness.video import LAB_VIDEO_FORMATS, VideoLimits, load_video

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "pulse"
SAMPLE_FPS = 15.0


def background_points(points: np.ndarray, width: int) -> np.ndarray | None:
    """The mesh moved sideways by 1.3 (else 1.1) face widths (to whichever side keeps the
    skin regions inside an image ``width`` wide), or ``None`` when neither side does."""
    xy = points[:, :2]
    fw = float(xy[:, 0].max() - xy[:, 0].min())
    idx = [i for r in REGIONS for i in r]
    for shift, sign in ((1.3, 1), (1.3, -1), (1.1, 1), (1.1, -1)):
        moved = points.copy()
        moved[:, 0] += sign * shift * fw
        xs = moved[idx, 0]
        if xs.min() >= 0 and xs.max() < width:
            return moved
    return None


def extract(path: Path, landmarks, max_seconds: float, sample_fps: float = SAMPLE_FPS) -> dict:
    """Times, per-frame region means of the skin and of the background, and the cue's own
    cost (ms) for the first ``max_seconds`` of the clip at ``path``."""
    lock = threading.Lock()
    slots = threading.Semaphore(16)  # frames waiting for the landmarker, at most
    skin: dict[int, np.ndarray] = {}
    back: dict[int, np.ndarray] = {}
    times: dict[int, float] = {}
    cost = [0.0]

    def on_mesh(k, frame, mesh):
        try:
            t0 = time.perf_counter()
            if mesh is not None:
                s = roi_means(frame.image, mesh.points)
                dt = time.perf_counter() - t0
                b = background_points(np.asarray(mesh.points), frame.image.shape[1])
                bm = None if b is None else roi_means(frame.image, b)
                with lock:
                    skin[k] = s
                    cost[0] += dt
                    if bm is not None:
                        back[k] = bm
            with lock:
                times[k] = frame.t
        finally:
            slots.release()

    stream = landmarks.stream(on_mesh=on_mesh)
    count = [0]

    def push(frame):
        if frame.t > max_seconds:
            return
        slots.acquire()
        count[0] += 1
        stream.push(frame)

    limits = VideoLimits(formats=LAB_VIDEO_FORMATS)
    try:
        load_video(path, sample_fps=sample_fps, limits=limits, on_frame=push, keep_frames=False)
    except BaseException:
        stream.abort()
        raise
    stream.finish()
    n = count[0]
    nan = np.full((len(REGIONS), 4), np.nan)
    return {
        "t": np.array([times[k] for k in range(n)]),
        "skin": np.stack([skin.get(k, nan) for k in range(n)]) if n else np.zeros((0, 3, 4)),
        "back": np.stack([back.get(k, nan) for k in range(n)]) if n else np.zeros((0, 3, 4)),
        "roi_ms": cost[0] * 1000,
    }


def cue(t: np.ndarray, means: np.ndarray) -> tuple[PulseResult, float]:
    """The cue from cached region means, and its signal cost in ms."""
    t0 = time.perf_counter()
    colours = np.full((len(t), 3), np.nan)
    pixels = np.zeros(len(t))
    for i, m in enumerate(means):
        if np.isfinite(m[:, 3]).all():
            colours[i], pixels[i] = pooled(m)
    r = pulse(t, colours, pixels)
    return r, (time.perf_counter() - t0) * 1000


def relit(frames: list[np.ndarray], fps: float, rng: np.random.Generator) -> list[np.ndarray]:
    """``frames`` of a hand-held print as a real camera would see them under a lamp (what
    :func:`benchmarks.attack_clips.make_attack` leaves out, and what could fake a pulse):

    * shading that follows the hand: the sheet's brightness swings by +-6 % at the hand's
      own slow frequencies (0.3-1.5 Hz, inside the pulse band);
    * a white sheen (specular reflection off the paper) of 0-12 grey levels that swings
      with it: white light added to a skin colour changes its chromaticity, which the
      pulse signal (POS) does not cancel;
    * auto-exposure and white balance hunting: a slow random walk of the gain (+-3 %) and of
      each channel's gain (+-1 %);
    * shot noise (standard deviation 0.6 x sqrt(level)).
    """
    n = len(frames)
    t = np.arange(n) / fps

    def wave(amp: float, lo: float, hi: float) -> np.ndarray:
        f = rng.uniform(lo, hi, 2)
        ph = rng.uniform(0, 2 * np.pi, 2)
        return amp * (0.7 * np.sin(2 * np.pi * f[0] * t + ph[0])
                      + 0.3 * np.sin(2 * np.pi * f[1] * t + ph[1]))  # fmt: skip

    def walk(amp: float, shape: tuple[int, ...]) -> np.ndarray:
        x = np.cumsum(rng.normal(0, 1, shape), axis=0)
        k = max(int(fps), 1)  # smoothed over a second: exposure loops are slow
        x = np.stack(
            [np.convolve(x[:, c], np.ones(k) / k, mode="same") for c in range(x.shape[1])], 1
        )
        x -= x.mean(axis=0)
        return amp * x / (np.abs(x).max(axis=0) + 1e-9)

    tilt = wave(1.0, 0.3, 1.5)
    gain = 1 + 0.06 * tilt + walk(0.03, (n, 1))[:, 0]
    sheen = 6 * (1 + tilt)
    balance = 1 + walk(0.01, (n, 3))
    out = []
    for i, f in enumerate(frames):
        x = f.astype(np.float32) * gain[i] * balance[i][None, None, :] + sheen[i]
        x += rng.normal(0, 1, x.shape).astype(np.float32) * 0.6 * np.sqrt(np.maximum(x, 1))
        out.append(np.clip(x, 0, 255).astype(np.uint8))
    return out


EXTRA_KINDS = ("print_fill_relit", "print_flat_relit")


def generated_rows(
    data: Path, rows: list[dict], clips: Path, landmarks, seconds: float
) -> list[dict]:
    """Every attack kind on every victim, the first ``seconds`` of the victim, made in
    ``clips`` where missing (the seeds of ``benchmarks.attacks.generated_clips``), and the
    relit prints of :func:`relit`."""
    by_clip = {r["clip"]: r for r in rows}
    out = []
    kinds = KINDS + EXTRA_KINDS
    for vi, victim in enumerate(VICTIMS):
        stem = Path(victim).stem
        todo = [k for k in kinds if not (clips / f"{stem}__{k}.mp4").exists()]
        vic = load_victim(data / victim, landmarks, seconds=seconds) if todo else None
        for kind in kinds:
            path = clips / f"{stem}__{kind}.mp4"
            if kind in todo:
                base = kind.removesuffix("_relit")
                seed = 100 * vi + KINDS.index(base)
                frames = make_attack(vic, base, seed=seed)
                if kind.endswith("_relit"):
                    frames = relit(frames, vic.fps, np.random.default_rng(seed + 50))
                write_clip(frames, vic.fps, path)
            out.append(
                {
                    "clip": str(path),
                    "path": path,
                    "label": "attack",
                    "kind": kind,
                    "subject": by_clip[victim]["subject"],
                }
            )
    return out


def held_out(subject: str) -> bool:
    """A quarter of the subjects, fixed by a hash of the name (not by looking at data)."""
    return hashlib.sha256(subject.encode()).digest()[0] % 4 == 0


def fit_threshold(live_snrs: list[float], live_pass: float) -> float:
    """The ``1 - live_pass`` quantile of the (measurable) live SNRs."""
    x = np.sort(np.asarray(live_snrs, np.float64))
    if len(x) == 0:
        return float("inf")
    k = int(np.floor((1 - live_pass) * len(x)))
    return float(x[min(k, len(x) - 1)])


def pass_rates(items: list[tuple[str, float | None]]) -> dict:
    """Per group: clips, passed, rate (``items``: (group, snr - t), ``None`` when not
    measurable: no pulse evidence, so not a pass)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for g, margin in items:
        groups[g].append(margin is not None and margin >= 0)
    return {
        g: {"clips": len(v), "passed": int(sum(v)), "rate": round(float(np.mean(v)), 3)}
        for g, v in sorted(groups.items())
    }


def auc(live: list[float], other: list[float]) -> float | None:
    """P(a live SNR > an attack SNR), ties half (measurable clips only)."""
    if not live or not other:
        return None
    a, b = np.asarray(live)[:, None], np.asarray(other)[None, :]
    return round(float(np.mean((a > b) + 0.5 * (a == b))), 3)


def separation(rows: list[dict], key: str, live_pass: float) -> dict:
    """Leave-one-subject-out and held-out evaluation of "score ``key`` >= t" (module
    docstring); ``t`` is fitted on measurable training live clips."""

    def score(r):
        return r["scores"].get(key)

    def fit(live_rows):
        return fit_threshold([score(r) for r in live_rows if score(r) is not None], live_pass)

    def margin(r, t):
        return None if score(r) is None else score(r) - t

    live = [r for r in rows if r["kind"] == "live"]
    subjects = sorted({r["subject"] for r in live})
    loso, thresholds = [], []
    for s in subjects:
        t = fit([r for r in live if r["subject"] != s])
        thresholds.append(t)
        loso += [(r["kind"], margin(r, t)) for r in rows if r["subject"] == s]
    # rows of subjects with no live clip: scored with the threshold fitted on every live clip
    t_all = fit(live)
    loso += [(r["kind"], margin(r, t_all)) for r in rows if r["subject"] not in subjects]
    t_train = fit([r for r in live if not held_out(r["subject"])])
    test = [r for r in rows if held_out(r["subject"])]
    kinds = sorted({r["kind"] for r in rows} - {"live"})
    live_scores = [score(r) for r in live if score(r) is not None]
    return {
        "rule": f"{key} SNR >= t, t = the {1 - live_pass:.0%} quantile of measurable "
        "training live clips; a clip not measurable does not pass",
        "threshold_all_live_db": t_all,
        "loso_thresholds_db": {"min": min(thresholds), "max": max(thresholds)},
        "loso_pass": pass_rates(loso),
        "loso_pass_measurable_only": pass_rates([x for x in loso if x[1] is not None]),
        "held_out": {
            "subjects": sorted({r["subject"] for r in test}),
            "threshold_db": t_train,
            "pass": pass_rates([(r["kind"], margin(r, t_train)) for r in test]),
        },
        "auc_live_above_kind": {
            k: auc(live_scores, [score(r) for r in rows if r["kind"] == k and score(r) is not None])
            for k in kinds
        },
    }


# --- other standard pulse signals, for comparison (the module's is POS) -----------------------


def band_pass(x: np.ndarray, rate_hz: float, band: tuple[float, float] = BAND_HZ) -> np.ndarray:
    """``x`` with the FFT bins outside ``band`` set to zero."""
    f = np.fft.rfftfreq(len(x), 1.0 / rate_hz)
    spec = np.fft.rfft(x - x.mean())
    spec[(f < band[0]) | (f > band[1])] = 0
    return np.fft.irfft(spec, len(x))


def chrom_signal(rgb: np.ndarray, rate_hz: float) -> np.ndarray:
    """CHROM (de Haan and Jeanne, IEEE TBME 2013) on the whole trace: ``X = 3R - 2G``,
    ``Y = 1.5R + G - 1.5B`` of the normalised trace, band-passed, ``X - (std X / std Y) Y``."""
    cn = rgb / rgb.mean(axis=0)
    x = band_pass(3 * cn[:, 0] - 2 * cn[:, 1], rate_hz)
    y = band_pass(1.5 * cn[:, 0] + cn[:, 1] - 1.5 * cn[:, 2], rate_hz)
    return x - (x.std() / y.std() if y.std() > 0 else 0.0) * y


def even_trace(t: np.ndarray, colours: np.ndarray, rate: float) -> np.ndarray | None:
    """The BGR trace of :func:`liveness.pulse.pulse`'s stretch on its even grid."""
    tt, cc = longest_run(t, colours, PulseLimits().max_gap_s)
    even = resample(tt, cc, rate, PulseLimits().max_gap_s)
    return None if even is None else even[1]


def variant_scores(t: np.ndarray, means: np.ndarray, res: PulseResult) -> dict[str, float | None]:
    """The SNR of :func:`liveness.pulse.spectrum_snr` for several pulse signals on the same
    measurable stretch (``None`` when :func:`liveness.pulse.pulse` found it not measurable):

    * ``pos``: the module's (POS, linear detrend);
    * ``pos_band_passed``: POS band-passed to 0.7-3 Hz before the spectrum;
    * ``chrom``: CHROM; ``green``: the normalised green channel alone;
    * ``regions_agree``: POS in each region separately, the SNR of the geometric mean of
      their normalised spectra (a pulse is the same in the forehead and both cheeks;
      noise is not).
    """
    out: dict[str, float | None] = dict.fromkeys(
        ("pos", "pos_band_passed", "chrom", "green", "regions_agree")
    )
    if not res.measurable:
        return out
    fs = res.rate_hz
    ok = np.isfinite(means[:, :, 3]).all(axis=1)
    colours = np.full((len(t), 3), np.nan)
    for i in np.flatnonzero(ok):
        colours[i] = pooled(means[i])[0]
    bgr = even_trace(t, colours, fs)
    if bgr is None:
        return out
    rgb = bgr[:, ::-1]
    out["pos"] = res.snr_db
    out["pos_band_passed"] = spectrum_snr(band_pass(pos_signal(rgb, fs), fs), fs)[0]
    out["chrom"] = spectrum_snr(chrom_signal(rgb, fs), fs)[0]
    out["green"] = spectrum_snr(detrend(rgb[:, 1] / rgb[:, 1].mean()), fs)[0]
    spectra = []
    for k in range(len(REGIONS)):
        region = np.where(ok[:, None], means[:, k, :3], np.nan)
        even = even_trace(t, region, fs)
        if even is None or len(even) != len(bgr):
            return out
        h = detrend(pos_signal(even[:, ::-1], fs))
        f, p = power_spectrum(h, fs)
        inb = (f >= BAND_HZ[0]) & (f <= min(BAND_HZ[1], 0.95 * fs / 2))
        spectra.append(p / max(p[inb].sum(), 1e-30))
    g = np.exp(np.mean(np.log(np.array(spectra) + 1e-30), axis=0))
    out["regions_agree"] = peak_snr(f, g, fs, len(bgr))[0]
    return out


# The real live clips of issue 10 that the texture models score low (0.36-0.59).
LOW_TEXTURE = ("blink_2x_tiny", "taehyunan", "61dc1b75", "rohintangirala", "Momin-Rauf")


def issue10(rows: list[dict]) -> dict:
    """The pulse SNR (POS) of the low-texture live clips of issue 10 against the real replays:
    could a pulse lift the first without lifting the second?"""
    low = {
        str(r["clip"]).split("/")[-1]: r["skin"]["snr_db"] if r["skin"]["measurable"]
        else r["skin"]["why"]
        for r in rows
        if r["kind"] == "live" and any(k in str(r["clip"]) for k in LOW_TEXTURE)
    }  # fmt: skip
    replays = [
        r["skin"]["snr_db"] for r in rows if r["kind"] == "replay" and r["skin"]["measurable"]
    ]
    return {
        "low_texture_live": low,
        "real_replays_measurable": len(replays),
        "real_replay_max_snr_db": max(replays) if replays else None,
        "lifted_above_every_real_replay": sorted(
            k for k, v in low.items() if isinstance(v, float) and replays and v > max(replays)
        ),
    }


def summary(values: list[float]) -> dict:
    x = np.asarray(values, np.float64)
    if len(x) == 0:
        return {"n": 0}
    q = np.percentile(x, [0, 10, 50, 90, 100])
    return {"n": len(x), "min": q[0], "p10": q[1], "median": q[2], "p90": q[3], "max": q[4]}


def groups(rows: list[dict]) -> dict:
    """Per group: clips, measurable, SNR and frequency distributions; the background null
    of the real clips as its own group."""
    out = {}
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["kind"]].append(r["skin"])
        if r["source"] == "shared" and r["back"] is not None:
            by[f"background_null({r['kind']})"].append(r["back"])
    for g, res in sorted(by.items()):
        m = [x for x in res if x["measurable"]]
        why = defaultdict(int)
        for x in res:
            if not x["measurable"]:
                why[re.sub(r"[\d.]+", "#", x["why"])] += 1
        out[g] = {
            "clips": len(res),
            "measurable": len(m),
            "not_measurable_why": dict(why),
            "snr_db": summary([x["snr_db"] for x in m]),
            "bpm": summary([60 * x["hz"] for x in m]),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("--clips", type=Path, default=OUT / "clips",
                    help="generated attack clips (read; missing ones are made here)")  # fmt: skip
    ap.add_argument("--attack-seconds", type=float, default=10.0,
                    help="length of the generated attacks (default 10; benchmarks.attacks "
                    "makes 4 s ones, too short for a pulse)")  # fmt: skip
    ap.add_argument("--sample-fps", type=float, default=SAMPLE_FPS,
                    help="decoding rate (default 15, the pipeline's; 0: every frame)")  # fmt: skip
    ap.add_argument("--refresh", action="store_true", help="recompute the cached traces")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="of each clip (default 30)")
    ap.add_argument("--live-pass", type=float, default=0.95,
                    help="share of training live clips the threshold lets pass")  # fmt: skip
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)

    data = Path(os.environ.get("LIVENESS_DATA_DIR", ROOT.parent / "shared" / "data"))
    cache = OUT / ("traces" if args.sample_fps == SAMPLE_FPS else f"traces_{args.sample_fps:g}fps")
    cache.mkdir(parents=True, exist_ok=True)
    lm = build_landmarker(Runtime(args.model_dir), workers=2)
    lm.warm_up()
    try:
        shared = shared_clips(data)
        for r in shared:
            r["path"] = data / r["clip"]
            r["source"] = "shared"
        gen = generated_rows(data, shared, args.clips, lm, args.attack_seconds)
        for r in gen:
            r["source"] = "generated"
        rows = shared + gen
        for r in progress(rows, len(rows), "traces"):
            name = hashlib.sha256(str(r["clip"]).encode()).hexdigest()[:16] + ".npz"
            f = cache / name
            if args.refresh or not f.exists():
                try:
                    d = extract(r["path"], lm, args.max_seconds, args.sample_fps)
                except Exception as exc:  # an unreadable clip is a row, not a stop
                    r["error"] = f"{type(exc).__name__}: {exc}"
                    continue
                np.savez(f, **d)
            d = np.load(f)
            res, ms = cue(d["t"], d["skin"])
            back, _ = cue(d["t"], d["back"])
            r["skin"] = res.to_dict()
            r["back"] = back.to_dict()
            r["scores"] = variant_scores(d["t"], d["skin"], res)
            r["back_scores"] = variant_scores(d["t"], d["back"], back)
            r["ms"] = {"regions": float(d["roi_ms"]), "signal": ms, "frames": len(d["t"])}
    finally:
        lm.close()
    ok = [r for r in rows if "skin" in r]
    clips = [
        {"clip": str(r["clip"]).split("/")[-1], "kind": r["kind"], "subject": r["subject"],
         "pulse": r["skin"], "background": r["back"], "ms": r["ms"]}
        for r in ok
    ]  # fmt: skip
    # the background of the real clips: real cameras, no pulse (module docstring)
    with_null = ok + [
        {"kind": "background_null", "subject": r["subject"], "scores": r["back_scores"]}
        for r in ok
        if r["source"] == "shared" and r["back"]["measurable"]
    ]
    per_clip_ms = [r["ms"]["regions"] + r["ms"]["signal"] for r in ok]
    per_frame_ms = [
        (r["ms"]["regions"]) / max(r["skin"]["frames"], 1) for r in ok if r["skin"]["frames"]
    ]
    result = {
        "benchmark": "pulse",
        "sample_fps": args.sample_fps,
        "max_seconds": args.max_seconds,
        "errors": [{"clip": str(r["clip"]), "error": r["error"]} for r in rows if "error" in r],
        "groups": groups(ok),
        "separation": {
            key: separation(with_null, key, args.live_pass)
            for key in ("pos", "pos_band_passed", "chrom", "green", "regions_agree")
        },
        "issue10": issue10(ok),
        "cost_ms": {"per_clip": summary(per_clip_ms), "per_face_frame": summary(per_frame_ms)},
        "clips": clips,
    }
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
