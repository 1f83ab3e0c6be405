"""Calibrate the embedder's similarity into false-match / false-non-match rates.

    python -m benchmarks.calibrate --images ../shared/data/lfw-view1/images \
        --pairs ../shared/data/lfw-view1/pairsDevTrain.txt \
        --out liveness/data/calibration_w600k_mbf.json

Every image named in the pairs file is enrolled through the library's reference path
(detect, align, embed). Every pair of images of *different* people is an impostor
comparison and every pair of the same person a genuine one - far more comparisons than the
pairs file lists, so FMR can be estimated down to about 1e-6. Images where no face is
found are left out (and counted). Only the development-train pairs are used:
``pairsDevTest.txt`` stays aside for ``benchmarks.lfw``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit, progress
from benchmarks.lfw import image_path, pair_images, read_pairs
from liveness.verify import Verifier


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument(
        "--embedder", default="w600k_mbf", help="registry name, or a name for --embedder-path"
    )
    ap.add_argument("--embedder-path", type=Path, help="your own ArcFace-format ONNX file")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from liveness.runtime import Runtime
    from liveness.verify import VerifierConfig

    paths = {args.embedder: args.embedder_path} if args.embedder_path else None
    v = Verifier(
        config=VerifierConfig(embedder=args.embedder),
        runtime=Runtime(args.model_dir, model_paths=paths),
    )
    try:
        return _run(args, v)
    finally:
        v.close()


def _run(args, v: Verifier) -> dict:
    names, embs, missing = [], [], 0
    t0 = time.perf_counter()
    items = pair_images(read_pairs(args.pairs))
    for name, i in progress(
        items, len(items), "embedding", enabled=False if args.no_progress else None
    ):
        ref = v.enroll(image_path(args.images, name, i))
        if ref.faces_found == 0:
            missing += 1
            continue
        names.append(name)
        embs.append(ref.embedding)
    ms = (time.perf_counter() - t0) * 1000 / len(items)
    e = np.stack(embs)
    sims = e @ e.T
    lab = np.asarray(names)
    same = lab[:, None] == lab[None, :]
    iu = np.triu_indices(len(lab), 1)
    genuine = np.sort(sims[iu][same[iu]])
    impostor = np.sort(sims[iu][~same[iu]])
    thresholds = np.round(np.arange(-0.3, 1.0001, 0.0025), 4)
    fmr = 1.0 - np.searchsorted(impostor, thresholds, side="left") / impostor.size
    fnmr = np.searchsorted(genuine, thresholds, side="left") / genuine.size
    data = {
        "model": args.embedder,
        "source": f"LFW View 1 {args.pairs.name}: all pairs among its images, "
        f"{len(lab)} images with a face, {missing} without",
        "n_impostor": int(impostor.size),
        "n_genuine": int(genuine.size),
        "thresholds": thresholds.tolist(),
        "fmr": [float(f"{x:.3g}") for x in fmr],
        "fnmr": [float(f"{x:.4g}") for x in fnmr],
    }
    args.out.write_text(json.dumps(data) + "\n")
    summary = {
        "images": len(items),
        "no_face": missing,
        "n_genuine": int(genuine.size),
        "n_impostor": int(impostor.size),
        "ms_per_image": round(ms, 1),
        "threshold_fmr_1e-3": float(thresholds[np.argmax(fmr <= 1e-3)]),
        "threshold_fmr_1e-4": float(thresholds[np.argmax(fmr <= 1e-4)]),
        "threshold_fmr_1e-5": float(thresholds[np.argmax(fmr <= 1e-5)]),
    }
    emit(summary, None)
    return summary


if __name__ == "__main__":
    main()
