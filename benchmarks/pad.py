"""Presentation-attack detection on a labelled set of images or videos (ISO/IEC 30107-3).

    python -m benchmarks.pad --labels ../shared/data/nuaa-train/labels.csv [--plots DIR]

``--labels`` is a CSV with columns ``path,label`` (label ``live`` or an attack kind such as
``print`` or ``replay``), paths relative to the CSV. Images: the largest YuNet face is scored
by the library's anti-spoofing ensemble. Videos: the whole ``Verifier.verify`` pipeline, with
a reference taken from the video's own first frame, and its fused ``liveness.score``.

The score is the live probability (higher = more live); a sample is classified as an attack
when its score is below the threshold. APCER, BPCER and ACER are reported at the library's
operating threshold ``Policy.live_reject`` (below it the result is a reject) and, as
``*_at_accept``, at ``Policy.live_accept`` (below it the result is at best a review).
Samples where no face is found get score 0 (classified as attacks) and are counted.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import numpy as np

from benchmarks.common import emit, engine_parser, parent_parser, plot_det, run_jobs, set_progress
from benchmarks.metrics import acer, apcer, bpcer, bpcer_at_apcer, pad_curve, pad_eer
from liveness import Policy, Verifier, VerifierConfig
from liveness.attack import PresentationAttackDetector
from liveness.video import LAB_VIDEO_FORMATS, VideoLimits, load_image

VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".avi", ".mkv"}
NO_FACE_SCORE = 0.0


def read_labels(path: Path, limit: int | None, stride: int) -> list[tuple[Path, str, str]]:
    """``(path, label, subject)`` rows; subject is ``""`` when the CSV has no such column."""
    rows = list(csv.DictReader(open(path, newline="")))
    out = [
        (path.parent / r["path"], r["label"].strip(), (r.get("subject") or "").strip())
        for r in rows
    ][::stride]
    return out[:limit] if limit else out


def subject_cv(
    scores: np.ndarray,
    labels: list[str],
    subjects: list[str],
    folds: int,
    max_bpcer: float,
    max_apcer: float,
) -> dict:
    """Thresholds chosen on some subjects and measured on the others.

    For each fold of subjects held out, on the remaining subjects choose the *reject*
    threshold as the highest one whose BPCER is at most ``max_bpcer`` (live people are
    rarely rejected outright) and the *accept* threshold as the lowest one whose worst APCER
    is at most ``max_apcer`` (attacks are rarely accepted); then report both rates on the
    held-out subjects.
    """
    uniq = sorted(set(subjects))
    rng = np.random.default_rng(0)
    rng.shuffle(uniq)
    groups = [set(uniq[k::folds]) for k in range(folds)]
    live_mask = np.array([lab == "live" for lab in labels])
    out = []
    for held in groups:
        test = np.array([s in held for s in subjects])
        tr_live, tr_att = scores[~test & live_mask], scores[~test & ~live_mask]
        if not len(tr_live) or not len(tr_att) or not test.any():
            continue
        cand = np.unique(scores[~test])
        reject = max((t for t in cand if np.mean(tr_live < t) <= max_bpcer), default=0.0)
        accept = min((t for t in cand if np.mean(tr_att >= t) <= max_apcer), default=1.0)
        te_live, te_att = scores[test & live_mask], scores[test & ~live_mask]
        out.append(
            {
                "held_out_subjects": len(held),
                "reject_threshold": float(reject),
                "accept_threshold": float(accept),
                "bpcer_reject_held_out": float(np.mean(te_live < reject)) if len(te_live) else None,
                "apcer_reject_held_out": float(np.mean(te_att >= reject)) if len(te_att) else None,
                "bpcer_accept_held_out": float(np.mean(te_live < accept)) if len(te_live) else None,
                "apcer_accept_held_out": float(np.mean(te_att >= accept)) if len(te_att) else None,
            }
        )
    return {"folds": out, "max_bpcer": max_bpcer, "max_apcer": max_apcer}


def score_image(v: Verifier, pad: PresentationAttackDetector, path: Path) -> float | None:
    img = load_image(path)
    faces = v.detector.detect(img)
    if not faces:
        return None
    face = max(faces, key=lambda f: f.size)
    return pad.live_probability(img, face.box)


def score_video(v: Verifier, path: Path) -> tuple[float | None, str]:
    from liveness.video import load_video

    first = load_video(path, sample_fps=1, limits=v.config.limits).frames[0].image
    r = v.verify(path, first)
    return r.liveness.score, r.decision


def score_sample(v: Verifier, path: Path) -> tuple[float | None, str | None]:
    """``(live score, decision)`` of an image (decision ``None``) or a video."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        score, decision = score_video(v, path)
        return score, str(decision)
    return score_image(v, v.pad, path), None


def metrics_at(live, attacks, threshold: float) -> dict:
    per_kind, worst = apcer(attacks, threshold)
    return {
        "apcer": worst,
        "apcer_per_kind": per_kind,
        "bpcer": bpcer(live, threshold),
        "acer": acer(live, attacks, threshold),
    }


def main(argv: list[str] | None = None) -> dict:
    parents = [parent_parser(), engine_parser()]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=parents)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--limit", type=int, help="use only the first N samples (after --stride)")
    ap.add_argument("--stride", type=int, default=1, help="use every K-th sample")
    ap.add_argument(
        "--models",
        default="minifasnet_v2,minifasnet_v1se",
        help="anti-spoofing ensemble (registry names), averaged",
    )
    ap.add_argument(
        "--cv-folds",
        type=int,
        default=0,
        help="subject-wise cross-validation of thresholds (needs a subject column)",
    )
    ap.add_argument("--scores", type=Path, help="write every sample's score to this CSV")
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    samples = read_labels(args.labels, args.limit, args.stride)
    names = tuple(n.strip() for n in args.models.split(","))
    policy = Policy()
    live: list[float] = []
    attacks: dict[str, list[float]] = defaultdict(list)
    decisions: dict[str, list[str]] = defaultdict(list)
    no_face = 0
    rows: list[tuple[str, str, str, float]] = []
    t0 = time.perf_counter()
    lab = VideoLimits(formats=LAB_VIDEO_FORMATS)  # lab clips include AVI and MPEG-PS
    config = VerifierConfig(pad_models=names, limits=lab)
    paths = [path for path, _, _ in samples]
    with closing(run_jobs(score_sample, paths, args, "scoring", config)) as results:
        for (path, label, subject), item in zip(samples, results, strict=True):
            if not item.ok:
                raise SystemExit(f"{path}: {item.error}")
            score, decision = item.value
            if decision is not None:
                decisions[label].append(decision)
            if score is None:
                no_face += 1
                score = NO_FACE_SCORE
            (live if label == "live" else attacks[label]).append(score)
            rows.append((str(path), label, subject, float(score)))
    ms = (time.perf_counter() - t0) * 1000 / len(samples)
    if not live or not attacks:
        raise SystemExit("the labels need both live samples and at least one attack kind")
    at_reject = metrics_at(live, attacks, policy.live_reject)
    at_accept = metrics_at(live, attacks, policy.live_accept)
    e, e_thr = pad_eer(live, attacks)
    result = {
        "benchmark": "pad",
        "labels": str(args.labels),
        "models": list(names),
        "threshold": policy.live_reject,
        **at_reject,
        "threshold_accept": policy.live_accept,
        **{f"{k}_at_accept": val for k, val in at_accept.items()},
        "eer": e,
        "eer_threshold": e_thr,
        "bpcer_at_apcer_0.01": bpcer_at_apcer(live, attacks, 0.01),
        "bpcer_at_apcer_0.05": bpcer_at_apcer(live, attacks, 0.05),
        "no_face": no_face,
        "no_face_policy": f"score {NO_FACE_SCORE} (classified as attack)",
        "n": len(samples),
        "n_live": len(live),
        "n_attack": {k: len(s) for k, s in attacks.items()},
        "ms_per_sample": round(ms, 2),
    }
    if args.cv_folds:
        result["cv"] = subject_cv(
            np.array([r[3] for r in rows]),
            [r[1] for r in rows],
            [r[2] for r in rows],
            args.cv_folds,
            0.02,
            0.01,
        )
    if args.scores:
        with open(args.scores, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "subject", "live_score"])
            w.writerows(rows)
    if decisions:
        result["decisions"] = {
            k: {d: ds.count(d) for d in sorted(set(ds))} for k, ds in decisions.items()
        }
    if args.plots:
        max_apcer, bp, _ = pad_curve(live, attacks)
        plot_det(max_apcer, bp, Path(args.plots) / "pad_det.png")
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
