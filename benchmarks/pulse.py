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

Each clip is decoded at the pipeline's 15 frames a second (the first ``--max-seconds``),
the landmarker follows the face, and per frame the mean colour and pixel count of the
forehead and cheek regions (:func:`liveness.pulse.roi_means`) are cached in
``out/pulse/traces/`` (three means per frame; no frame or face is kept). Alongside, the same
regions moved sideways by 1.3 face widths onto the background (tracked with the face, on the
side that stays in the image): real camera noise, compression and exposure drift without a
pulse, a **real-camera null** for the cue.

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
from liveness.pulse import REGIONS, PulseResult, pooled, pulse, roi_means
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


def extract(path: Path, landmarks, max_seconds: float) -> dict:
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
        load_video(path, sample_fps=SAMPLE_FPS, limits=limits, on_frame=push, keep_frames=False)
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
    """The ``1 - live_pass`` quantile of the live SNRs (not measurable: -inf, counted)."""
    x = np.sort(np.asarray(live_snrs, np.float64))
    if len(x) == 0:
        return float("inf")
    k = int(np.floor((1 - live_pass) * len(x)))
    return float(x[min(k, len(x) - 1)])


def pass_rates(items: list[tuple[str, float]]) -> dict:
    """Per group: clips, passed, rate (``items``: (group, snr - t); pass when >= 0)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for g, margin in items:
        groups[g].append(margin)
    return {
        g: {"clips": len(v), "passed": int(sum(m >= 0 for m in v)),
            "rate": round(float(np.mean([m >= 0 for m in v])), 3)}
        for g, v in sorted(groups.items())
    }  # fmt: skip


def separation(rows: list[dict], live_pass: float) -> dict:
    """Leave-one-subject-out and held-out evaluation of "SNR >= t" (module docstring)."""

    def snr(r):
        return r["skin"]["snr_db"] if r["skin"]["measurable"] else float("-inf")

    live = [r for r in rows if r["kind"] == "live"]
    subjects = sorted({r["subject"] for r in live})
    loso, thresholds = [], []
    for s in subjects:
        t = fit_threshold([snr(r) for r in live if r["subject"] != s], live_pass)
        thresholds.append(t)
        loso += [(r["kind"], snr(r) - t) for r in rows if r["subject"] == s]
    # rows of subjects with no live clip: scored with the threshold fitted on every live clip
    t_all = fit_threshold([snr(r) for r in live], live_pass)
    loso += [(r["kind"], snr(r) - t_all) for r in rows if r["subject"] not in subjects]
    train = [r for r in live if not held_out(r["subject"])]
    t_train = fit_threshold([snr(r) for r in train], live_pass)
    test = [r for r in rows if held_out(r["subject"])]
    measurable = [r for r in rows if r["skin"]["measurable"]]
    loso_m = []
    for s in subjects:
        t = fit_threshold([snr(r) for r in live if r["subject"] != s and np.isfinite(snr(r))],
                          live_pass)  # fmt: skip
        loso_m += [(r["kind"], snr(r) - t) for r in measurable if r["subject"] == s]
    return {
        "rule": f"pulse SNR >= t, t = the {1 - live_pass:.0%} quantile of training live SNRs",
        "threshold_all_live_db": t_all,
        "loso_thresholds_db": {"min": min(thresholds), "max": max(thresholds)},
        "loso_all_clips": pass_rates(loso),
        "loso_measurable_only": pass_rates(loso_m),
        "held_out": {
            "subjects": sorted({r["subject"] for r in test}),
            "threshold_db": t_train,
            "pass": pass_rates([(r["kind"], snr(r) - t_train) for r in test]),
        },
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
    ap.add_argument("--refresh", action="store_true", help="recompute the cached traces")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="of each clip (default 30)")
    ap.add_argument("--live-pass", type=float, default=0.95,
                    help="share of training live clips the threshold lets pass")  # fmt: skip
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)

    data = Path(os.environ.get("LIVENESS_DATA_DIR", ROOT.parent / "shared" / "data"))
    cache = OUT / "traces"
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
                    d = extract(r["path"], lm, args.max_seconds)
                except Exception as exc:  # an unreadable clip is a row, not a stop
                    r["error"] = f"{type(exc).__name__}: {exc}"
                    continue
                np.savez(f, **d)
            d = np.load(f)
            res, ms = cue(d["t"], d["skin"])
            back, _ = cue(d["t"], d["back"])
            r["skin"] = res.to_dict()
            r["back"] = back.to_dict()
            r["ms"] = {"regions": float(d["roi_ms"]), "signal": ms, "frames": len(d["t"])}
    finally:
        lm.close()
    ok = [r for r in rows if "skin" in r]
    clips = [
        {"clip": str(r["clip"]).split("/")[-1], "kind": r["kind"], "subject": r["subject"],
         "pulse": r["skin"], "background": r["back"], "ms": r["ms"]}
        for r in ok
    ]  # fmt: skip
    per_clip_ms = [r["ms"]["regions"] + r["ms"]["signal"] for r in ok]
    per_frame_ms = [
        (r["ms"]["regions"]) / max(r["skin"]["frames"], 1) for r in ok if r["skin"]["frames"]
    ]
    result = {
        "benchmark": "pulse",
        "sample_fps": SAMPLE_FPS,
        "max_seconds": args.max_seconds,
        "errors": [{"clip": str(r["clip"]), "error": r["error"]} for r in rows if "error" in r],
        "groups": groups(ok),
        "separation": separation(ok, args.live_pass),
        "cost_ms": {"per_clip": summary(per_clip_ms), "per_face_frame": summary(per_frame_ms)},
        "clips": clips,
    }
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
