"""Where do the quality gates belong? Verification and the live score as faces degrade.

    python -m benchmarks.gates --images ../shared/data/lfw-view1/images \
        --pairs ../shared/data/lfw-view1/pairsDevTest.txt \
        --videos ../shared/data/videos/labels.csv --plots out/

For each kind of degradation (``dark``: pixel values scaled down; ``blur``: Gaussian blur;
``small``: the image shrunk so the face is N pixels, then scaled back up; ``jpeg``: JPEG
quality) and each level, the *second* image of every LFW pair (the probe; the first plays
the clean reference) is degraded and enrolled through the library's reference path (YuNet,
alignment, embedding). Per level: the median quality measure of the degraded faces (mean
grey level, Laplacian sharpness, face size in pixels; the units of
:class:`liveness.quality.QualityThresholds`), the false non-match rate (FNMR) and false
match rate at the library's operating point (the similarity of FMR 1e-4 in the shipped
calibration), 10-fold accuracy and the faces not found. ``--normalise gamma,clahe`` repeats
the ``dark`` levels with the aligned face exposure-normalised before the embedder.

With ``--videos`` (a labels CSV of live clips), frames of each live clip are degraded the
same way and scored by the anti-spoofing ensemble: the mean live score per level, and the
share under ``Policy.live_accept``.

``suggested_gates`` gives, per kind, the measured quality value where FNMR first rises by at
least ``--fnmr-rise`` (absolute) over the clean level: below that value recognition itself
fails. The JSON is the last line; ``--plots DIR`` draws FNMR and live score per kind.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import emit, parent_parser, progress, set_progress
from benchmarks.lfw import image_path, read_pairs
from benchmarks.metrics import kfold_accuracy
from liveness import Verifier
from liveness.align import align_face
from liveness.decision import Policy
from liveness.quality import measure, normalise_exposure
from liveness.video import frame_at, load_image

LEVELS = {
    "dark": [1.0, 0.4, 0.25, 0.16, 0.1, 0.06],
    "blur": [0.0, 1.5, 3.0, 4.5, 6.0],
    "small": [0, 48, 32, 24, 16],  # target face size in pixels (0: unchanged)
    "jpeg": [95, 30, 12, 6],
}
MEASURE = {"dark": "brightness", "blur": "sharpness", "small": "face_px", "jpeg": "sharpness"}


def degrade(img: np.ndarray, kind: str, level: float, face_px: float | None = None) -> np.ndarray:
    """A degraded copy of a BGR image; ``face_px`` (the clean face size) is needed for
    ``small``."""
    if kind == "dark":
        return np.clip(img.astype(np.float32) * level, 0, 255).round().astype(np.uint8)
    if kind == "blur":
        return img if level <= 0 else cv2.GaussianBlur(img, (0, 0), level)
    if kind == "small":
        if not level or not face_px or level >= face_px:
            return img
        f = level / face_px
        h, w = img.shape[:2]
        small = cv2.resize(
            img, (max(2, round(w * f)), max(2, round(h * f))), interpolation=cv2.INTER_AREA
        )
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(level)])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    raise ValueError(kind)


def embed_probe(v: Verifier, img: np.ndarray, normalise: str = "none"):
    """(embedding or None, FaceQuality or None) of the largest face, as enrolment does."""
    faces = v.detector.detect(img)
    if not faces:
        return None, None
    f = max(faces, key=lambda x: x.size)
    aligned = normalise_exposure(align_face(img, f.points), normalise)
    return v.embedder.embed([aligned])[0], measure(img, f.box)


def choose_pairs(pairs: list, n: int) -> list:
    """Up to ``n`` pairs, half genuine and half impostor, evenly spread over the file."""
    same = [p for p in pairs if p[0] == p[2]]
    diff = [p for p in pairs if p[0] != p[2]]
    pick = []
    for group in (same, diff):
        k = min(len(group), n // 2)
        idx = np.linspace(0, len(group) - 1, k).round().astype(int) if k else []
        pick += [group[i] for i in idx]
    return pick


def verification_curve(v, images, pairs, kind, levels, threshold, normalise="none") -> list[dict]:
    refs = {}
    for a, i, _, _ in pairs:
        if (a, i) not in refs:
            refs[(a, i)] = embed_probe(v, load_image(image_path(images, a, i)))[0]
    clean = {}
    out = []
    for level in progress(levels, len(levels), f"{kind} ({normalise})"):
        scores, same, q, no_face = [], [], [], 0
        for a, i, b, j in pairs:
            img = load_image(image_path(images, b, j))
            if (b, j) not in clean:
                clean[(b, j)] = measure_face_px(v, img)
            probe, fq = embed_probe(v, degrade(img, kind, level, clean[(b, j)]), normalise)
            ref = refs[(a, i)]
            if probe is None or ref is None:
                no_face += probe is None
                scores.append(-1.0)
            else:
                scores.append(float(probe @ ref))
                value = getattr(fq, MEASURE[kind])
                if kind == "small" and level and clean[(b, j)]:
                    value = min(level, clean[(b, j)])  # the size the face had before upscaling
                q.append(value)
            same.append(a == b)
        s, g = np.asarray(scores), np.asarray(same)
        acc = kfold_accuracy(s, g, folds=10)[0]
        out.append(
            {
                "level": level,
                "measure": MEASURE[kind],
                "median_measure": float(np.median(q)) if q else None,
                "fnmr": float(np.mean(s[g] < threshold)),
                "fmr": float(np.mean(s[~g] >= threshold)),
                "accuracy": float(acc),
                "no_face": no_face,
                "pairs": len(pairs),
            }
        )
    return out


def measure_face_px(v: Verifier, img: np.ndarray) -> float | None:
    faces = v.detector.detect(img)
    return max(f.size for f in faces) if faces else None


def live_curve(v, frames: list[np.ndarray], kind: str, levels: list, live_accept: float):
    out = []
    sizes = [measure_face_px(v, f) for f in frames]
    for level in levels:
        scores, q = [], []
        for img, px in zip(frames, sizes, strict=True):
            if px is None:
                continue
            d = degrade(img, kind, level, px)
            faces = v.detector.detect(d)
            if not faces:
                continue
            f = max(faces, key=lambda x: x.size)
            scores.append(v.pad.live_probability(d, f.box))
            value = getattr(measure(d, f.box), MEASURE[kind])
            q.append(min(level, px) if kind == "small" and level else value)
        out.append(
            {
                "level": level,
                "median_measure": float(np.median(q)) if q else None,
                "mean_live": float(np.mean(scores)) if scores else None,
                "below_live_accept": float(np.mean(np.asarray(scores) < live_accept))
                if scores
                else None,
                "frames_scored": len(scores),
                "frames": len(frames),
            }
        )
    return out


def video_frames(labels: Path, per_clip: int) -> list[np.ndarray]:
    rows = [r for r in csv.DictReader(open(labels, newline="")) if r["label"] == "live"]
    out = []
    for r in rows:
        for t in np.linspace(0.5, 2.5, per_clip):
            try:
                out.append(frame_at(labels.parent / r["path"], f"{t:.2f}"))
            except Exception:  # noqa: BLE001 - a clip too short for this time is skipped
                continue
    return out


def suggested_gate(curve: list[dict], rise: float) -> float | None:
    """The measured value at the first level whose FNMR is ``rise`` above the clean one."""
    base = curve[0]["fnmr"]
    for row in curve[1:]:
        if row["fnmr"] >= base + rise:
            return row["median_measure"]
    return None


def plot(result: dict, out: Path) -> None:
    from benchmarks.common import _pyplot, _save

    plt = _pyplot()
    for kind, curve in result["verification"].items():
        fig, ax = plt.subplots(figsize=(5, 4))
        xs = [r["median_measure"] for r in curve]
        ax.plot(xs, [r["fnmr"] for r in curve], "o-", label="FNMR @ FMR 1e-4")
        ax.plot(xs, [1 - r["accuracy"] for r in curve], "s--", label="1 - accuracy")
        for name, c in result.get("normalised", {}).get(kind, {}).items():
            ax.plot([r["median_measure"] for r in c], [r["fnmr"] for r in c], "^:", label=name)
        live = result.get("live", {}).get(kind)
        if live:
            ax.plot(
                [r["median_measure"] for r in live],
                [r["below_live_accept"] for r in live],
                "x-.",
                label="live frames < live_accept",
            )
        ax.set_xlabel(f"median {curve[0]['measure']} of degraded face")
        ax.set_ylabel("rate")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"LFW DevTest, probe {kind}")
        _save(fig, out / f"gates_{kind}.png")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--max-pairs", type=int, default=200)
    ap.add_argument("--kinds", default="dark,blur,small,jpeg")
    ap.add_argument("--normalise", default="gamma,clahe", help="'' for none")
    ap.add_argument("--videos", type=Path, default=None)
    ap.add_argument("--frames-per-clip", type=int, default=3)
    ap.add_argument("--fnmr-rise", type=float, default=0.05)
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    kinds = [k for k in args.kinds.split(",") if k]
    pairs = choose_pairs(read_pairs(args.pairs), args.max_pairs)
    policy = Policy()
    with Verifier(args.model_dir) as v:
        threshold = v.calibration.threshold_for(policy.accept_fmr)
        result = {
            "benchmark": "gates",
            "pairs_file": str(args.pairs),
            "pairs": len(pairs),
            "threshold": threshold,
            "operating_point": f"similarity of FMR {policy.accept_fmr:g} in the calibration",
            "verification": {},
            "normalised": {},
            "live": {},
        }
        for kind in kinds:
            result["verification"][kind] = verification_curve(
                v, args.images, pairs, kind, LEVELS[kind], threshold
            )
        if "dark" in kinds:
            for method in [m for m in args.normalise.split(",") if m]:
                result["normalised"].setdefault("dark", {})[method] = verification_curve(
                    v, args.images, pairs, "dark", LEVELS["dark"], threshold, method
                )
        if args.videos:
            frames = video_frames(args.videos, args.frames_per_clip)
            for kind in kinds:
                result["live"][kind] = live_curve(v, frames, kind, LEVELS[kind], policy.live_accept)
    result["suggested_gates"] = {
        k: suggested_gate(c, args.fnmr_rise) for k, c in result["verification"].items()
    }
    if args.plots:
        plot(result, Path(args.plots))
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
