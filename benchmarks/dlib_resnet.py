"""dlib's ResNet face descriptor: chip geometry, ONNX-vs-dlib equivalence, dlib's own pipeline.

    python -m benchmarks.dlib_resnet template --images ../shared/data/lfw-view1/images \
        --pairs ../shared/data/lfw-view1/pairsDevTrain.txt --limit 1000
    python -m benchmarks.dlib_resnet equivalence --faces ../shared/data/faces \
        --images ../shared/data/lfw-view1/images --pairs ../shared/data/lfw-view1/pairsDevTest.txt
    python -m benchmarks.dlib_resnet dlib-pipeline --images ../shared/data/lfw-view1/images \
        --pairs ../shared/data/lfw-view1/pairsDevTest.txt

``template`` measures where the library's 5 points (YuNet) fall in the chips dlib's own
pipeline cuts (HOG detector, ``shape_predictor_5_face_landmarks``, ``get_face_chip``): the
mean is ``liveness.align.DLIB_CHIP_TEMPLATE``. ``equivalence`` cuts each face's chip with
the library (YuNet points, :func:`liveness.align.dlib_chip`) and compares the converted ONNX
model's descriptor with ``dlib.face_recognition_model_v1.compute_face_descriptor`` on the
same chip (cosine; the worst case is the figure). ``dlib-pipeline`` is dlib's pipeline end to
end on LFW pairs (score: minus the Euclidean distance), for the comparison table.

Needs ``dlib-bin`` (the reference implementation; a test and benchmark dependency only) and
dlib's two ``.dat`` files in the model directory.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import emit, parent_parser, progress, set_progress
from benchmarks.lfw import NO_FACE_SCORE, all_pair_rates, image_path, pair_images, read_pairs
from benchmarks.metrics import eer, kfold_accuracy, tar_at_far
from liveness.align import _similarity, dlib5_chip_points, dlib_chip
from liveness.detect import FaceDetector
from liveness.embed import DlibResNetEmbedder
from liveness.models import resolve
from liveness.runtime import Runtime
from liveness.video import load_image

SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"


def dlib_models(model_dir):
    """dlib's HOG detector, 5-point predictor and ResNet (reference implementation)."""
    import dlib

    rn = resolve("dlib_resnet_dat", model_dir=model_dir, allow_download=False)
    sp_path = rn.parent / SHAPE_PREDICTOR
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(sp_path)),
        dlib.face_recognition_model_v1(str(rn)),
    )


def _largest(faces):
    return max(faces, key=lambda f: f.size) if faces else None


def _dlib_parts(det, sp, rgb):
    """dlib's 5 points of the largest HOG face (upsampled once, as dlib's examples do)."""
    rects = det(rgb, 1)
    if not rects:
        return None
    r = max(rects, key=lambda r: r.area())
    shape = sp(rgb, r)
    return shape, np.array([[shape.part(k).x, shape.part(k).y] for k in range(5)], np.float64)


def fit_template(args) -> dict:
    det, sp, _ = dlib_models(args.model_dir)
    detector = FaceDetector(Runtime(args.model_dir).onnx("yunet"))
    items = pair_images(read_pairs(args.pairs))[: args.limit]
    chip_pts, skipped = [], 0
    for name, i in progress(items, len(items), "template"):
        img = load_image(image_path(args.images, name, i))
        face = _largest(detector.detect(img))
        got = _dlib_parts(det, sp, np.ascontiguousarray(img[:, :, ::-1]))
        if face is None or got is None:
            skipped += 1
            continue
        m = _similarity(got[1], dlib5_chip_points(150, 0.25))
        pts = face.points @ m[:, :2].T + m[:, 2]
        if np.abs(pts - 75).max() > 75:  # YuNet and dlib found different faces
            skipped += 1
            continue
        chip_pts.append(pts)
    a = np.stack(chip_pts)
    mean = a.mean(0)
    return {
        "benchmark": "dlib_chip_template",
        "pairs_file": str(args.pairs),
        "images": len(items),
        "used": len(a),
        "skipped": skipped,
        "template_150": np.round(mean, 4).tolist(),
        "std_px": np.round(a.std(0), 3).tolist(),
    }


def _equivalence_images(args) -> list[Path]:
    paths = []
    if args.faces:
        paths += sorted(
            p for p in Path(args.faces).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
        )
    if args.pairs:
        items = pair_images(read_pairs(args.pairs))[: args.limit]
        paths += [image_path(args.images, n, i) for n, i in items]
    return paths


def equivalence(args) -> dict:
    _, _, fr = dlib_models(args.model_dir)
    rt = Runtime(args.model_dir, intra_op_threads=1)
    detector = FaceDetector(rt.onnx("yunet"))
    emb = DlibResNetEmbedder(rt.onnx("dlib_resnet"))
    paths = _equivalence_images(args)
    cos, diff, worst, no_face, t_onnx, t_dlib = [], [], None, 0, 0.0, 0.0
    for p in progress(paths, len(paths), "equivalence"):
        try:
            img = load_image(p)
        except Exception:
            continue
        face = _largest(detector.detect(img))
        if face is None:
            no_face += 1
            continue
        chip = dlib_chip(img, face.points)
        t = time.perf_counter()
        a = emb.descriptors([chip])[0].astype(np.float64)
        t_onnx += time.perf_counter() - t
        t = time.perf_counter()
        b = np.array(fr.compute_face_descriptor(np.ascontiguousarray(chip[:, :, ::-1])))
        t_dlib += time.perf_counter() - t
        c = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        cos.append(c)
        diff.append(float(np.abs(a - b).max()))
        if worst is None or c < worst[0]:
            worst = (c, str(p))
    n = len(cos)
    return {
        "benchmark": "dlib_resnet_equivalence",
        "images": len(paths),
        "compared": n,
        "no_face": no_face,
        "cosine_min": min(cos),
        "cosine_mean": float(np.mean(cos)),
        "worst_image": worst[1],
        "max_abs_diff": max(diff),
        "euclidean_thresh_note": "dlib's same-person rule is Euclidean distance < 0.6",
        "ms_onnx": round(1000 * t_onnx / n, 1),
        "ms_dlib": round(1000 * t_dlib / n, 1),
    }


def dlib_pipeline(args) -> dict:
    import dlib

    det, sp, fr = dlib_models(args.model_dir)
    onnx = None
    if args.resnet == "onnx":  # the converted model: equal to dlib's to a cosine of 1 - 4e-13
        onnx = DlibResNetEmbedder(Runtime(args.model_dir).onnx("dlib_resnet"))
    pairs = read_pairs(args.pairs)
    names = pair_images(pairs)
    cache = {}
    t0 = time.perf_counter()
    for name, i in progress(names, len(names), "dlib pipeline"):
        img = cv2.imread(str(image_path(args.images, name, i)), cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(img[:, :, ::-1])
        got = _dlib_parts(det, sp, rgb)
        if got is None:
            cache[(name, i)] = None
        elif onnx is None:
            cache[(name, i)] = np.array(fr.compute_face_descriptor(rgb, got[0]))
        else:  # the chip dlib's compute_face_descriptor cuts (150, padding 0.25)
            chip = dlib.get_face_chip(rgb, got[0], 150, 0.25)
            cache[(name, i)] = onnx.descriptors([np.ascontiguousarray(chip[:, :, ::-1])])[0]
    ms = (time.perf_counter() - t0) * 1000 / len(names)
    scores, same = [], []
    for a, i, b, j in pairs:
        ea, eb = cache[(a, i)], cache[(b, j)]
        missing = ea is None or eb is None
        scores.append(NO_FACE_SCORE if missing else -float(np.linalg.norm(ea - eb)))
        same.append(a == b)
    s, y = np.asarray(scores), np.asarray(same)
    # no-face pairs must rank below every real pair: distances here are at most ~1.5
    s[s == NO_FACE_SCORE] = -10.0
    acc, std, _, _ = kfold_accuracy(s, y, folds=args.folds)
    e, _ = eer(s[y], s[~y])
    return {
        "benchmark": "lfw_dlib_pipeline",
        "resnet": args.resnet,
        "pairs_file": str(args.pairs),
        "accuracy": acc,
        "accuracy_std": std,
        "tar_at_far_1e-2": tar_at_far(s[y], s[~y], 1e-2),
        "tar_at_far_1e-3": tar_at_far(s[y], s[~y], 1e-3),
        "eer": e,
        "accuracy_at_0.6": float(np.mean((s > -0.6) == y)),
        **all_pair_rates(cache, metric="euclidean"),
        "no_face": sum(v is None for v in cache.values()),
        "images": len(names),
        "pairs": len(pairs),
        "ms_per_image": round(ms, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("what", choices=["template", "equivalence", "dlib-pipeline"])
    ap.add_argument("--images", type=Path)
    ap.add_argument("--pairs", type=Path)
    ap.add_argument("--faces", type=Path, help="equivalence: a folder of photos (recursive)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many LFW images")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument(
        "--resnet",
        choices=["onnx", "dlib"],
        default="onnx",
        help="dlib-pipeline: run the ResNet converted (fast) or in dlib-bin (20x slower here)",
    )
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    run = {
        "template": fit_template,
        "equivalence": equivalence,
        "dlib-pipeline": dlib_pipeline,
    }
    result = run[args.what](args)
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
