"""Face verification on LFW-format pairs through the library's reference-ingestion path.

    python -m benchmarks.lfw --images ../shared/data/lfw-view1/images \
        --pairs ../shared/data/lfw-view1/pairsDevTest.txt [--mode naive] [--plots DIR]

``--mode pipeline`` (default) enrols each image with ``Verifier.enroll``: YuNet, 5-point
alignment to the ArcFace template, embedding. ``--mode naive`` runs the same embedding model
the naive way: the largest YuNet face box, squared, cropped and resized to 112x112, no
alignment. A pair with an image where no face was found scores -1 (a non-match); such
images are counted in ``no_face``.
"""

from __future__ import annotations

import argparse
import time
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import (
    emit,
    engine_parser,
    parent_parser,
    plot_roc,
    plot_score_hist,
    run_jobs,
    set_progress,
)
from benchmarks.metrics import eer, kfold_accuracy, roc, tar_at_far
from liveness import Verifier
from liveness.verify import VerifierConfig
from liveness.video import load_image

NO_FACE_SCORE = -1.0


def read_pairs(path: Path) -> list[tuple[str, int, str, int]]:
    """``(name1, i, name2, j)`` per pair; the optional count header line is skipped."""
    pairs = []
    for line in Path(path).read_text().splitlines():
        f = line.split()
        if len(f) == 3:
            pairs.append((f[0], int(f[1]), f[0], int(f[2])))
        elif len(f) == 4:
            pairs.append((f[0], int(f[1]), f[2], int(f[3])))
        # 1 or 2 fields: the header ("10 300" or "1000"); blank lines: nothing
    if not pairs:
        raise SystemExit(f"no pairs found in {path}")
    return pairs


def pair_images(pairs: list[tuple[str, int, str, int]]) -> list[tuple[str, int]]:
    """``(name, number)`` of every image the pairs mention, once each, in first-seen order."""
    seen = dict.fromkeys(img for a, i, b, j in pairs for img in ((a, i), (b, j)))
    return list(seen)


def image_path(images: Path, name: str, i: int) -> Path:
    return images / name / f"{name}_{i:04d}.jpg"


def all_pair_rates(cache: dict, metric: str = "cosine") -> dict:
    """TAR at FAR 1e-2 / 1e-3 over *every* pair of images with a face among those the pairs
    file names (same name = genuine), not only the listed pairs: DevTest's 500 listed
    impostor pairs cannot support FAR 1e-3, its ~1.2 million image pairs can. Scores are
    cosine similarity, or minus the Euclidean distance (``metric="euclidean"``, dlib's)."""
    keys = [k for k, e in cache.items() if e is not None]
    if len(keys) < 2:
        return {}
    e = np.stack([cache[k] for k in keys]).astype(np.float64)
    if metric == "cosine":
        sims = e @ e.T
    else:
        sq = (e * e).sum(1)
        sims = -np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * e @ e.T, 0))
    lab = np.asarray([k[0] for k in keys])
    iu = np.triu_indices(len(keys), 1)
    same = (lab[:, None] == lab[None, :])[iu]
    flat = sims[iu]
    genuine, impostor = flat[same], flat[~same]
    return {
        "all_pairs_genuine": int(genuine.size),
        "all_pairs_impostor": int(impostor.size),
        "all_pairs_tar_at_far_1e-2": tar_at_far(genuine, impostor, 1e-2),
        "all_pairs_tar_at_far_1e-3": tar_at_far(genuine, impostor, 1e-3),
    }


def naive_embedding(v: Verifier, path: Path) -> np.ndarray | None:
    """Largest YuNet box, squared, cropped, resized to 112: no alignment."""
    img = load_image(path)
    faces = v.detector.detect(img)
    if not faces:
        return None
    f = max(faces, key=lambda f: f.size)
    cx, cy = f.center
    half = max(f.width, f.height) / 2
    x1, y1 = int(max(0, cx - half)), int(max(0, cy - half))
    x2, y2 = int(min(img.shape[1], cx + half)), int(min(img.shape[0], cy + half))
    size = v.embedder.size
    crop = cv2.resize(img[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LINEAR)
    return v.embedder.embed([crop])[0]


def embed_image(v: Verifier, job: tuple[Path, str]) -> np.ndarray | None:
    """The embedding of one image (``job`` = ``(path, mode)``), ``None`` when no face."""
    path, mode = job
    if mode == "naive":
        return naive_embedding(v, path)
    ref = v.enroll(path)
    return ref.embedding if ref.faces_found else None


def main(argv: list[str] | None = None) -> dict:
    parents = [parent_parser(), engine_parser()]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=parents)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--mode", choices=["pipeline", "naive"], default="pipeline")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--embedder", default=None, help="embedder registry name (dlib_resnet)")
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    pairs = read_pairs(args.pairs)
    names = pair_images(pairs)
    config = VerifierConfig(embedder=args.embedder) if args.embedder else None
    jobs = [(image_path(args.images, name, i), args.mode) for name, i in names]
    t0 = time.perf_counter()  # --engine: the wall time includes starting the workers
    with closing(run_jobs(embed_image, jobs, args, f"embedding ({args.mode})", config)) as results:
        cache: dict[tuple[str, int], np.ndarray | None] = {}
        for (name, i), item in zip(names, results, strict=True):
            if not item.ok:
                raise SystemExit(f"{jobs[item.index][0]}: {item.error}")
            cache[(name, i)] = item.value
        ms = (time.perf_counter() - t0) * 1000 / len(names)
    scores, same = [], []
    for a, i, b, j in pairs:
        ea, eb = cache[(a, i)], cache[(b, j)]
        scores.append(NO_FACE_SCORE if ea is None or eb is None else float(ea @ eb))
        same.append(a == b)
    scores_a, same_a = np.asarray(scores), np.asarray(same)
    genuine, impostor = scores_a[same_a], scores_a[~same_a]
    acc, std, _, thresholds = kfold_accuracy(scores_a, same_a, folds=args.folds)
    e, e_thr = eer(genuine, impostor)
    result = {
        "benchmark": "lfw",
        "mode": args.mode,
        "embedder": args.embedder or VerifierConfig().embedder,
        "pairs_file": str(args.pairs),
        "accuracy": acc,
        "accuracy_std": std,
        "fold_thresholds": thresholds,
        "tar_at_far_1e-2": tar_at_far(genuine, impostor, 1e-2),
        "tar_at_far_1e-3": tar_at_far(genuine, impostor, 1e-3),
        "eer": e,
        "eer_threshold": e_thr,
        **all_pair_rates(cache),
        "no_face": sum(x is None for x in cache.values()),
        "no_face_policy": f"pairs with a no-face image score {NO_FACE_SCORE} (non-match)",
        "images": len(names),
        "pairs": len(pairs),
        "ms_per_image": round(ms, 2),
    }
    if args.plots:
        far, tar, _ = roc(genuine, impostor)
        plot_roc(
            far,
            tar,
            Path(args.plots) / f"lfw_roc_{args.mode}.png",
            title=f"LFW {args.pairs.name} ({args.mode})",
        )
        plot_score_hist(genuine, impostor, e_thr, Path(args.plots) / f"lfw_hist_{args.mode}.png")
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
