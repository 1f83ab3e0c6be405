"""How the anti-spoofing crop is made changes the live score: each model's score per clip
under variants of the PAD input, to tell pipeline faults from model limits.

    python -m benchmarks.pad_inputs --labels ../shared/data/videos-wild/labels.csv \
        ../shared/data/videos/labels.csv --only Momin,taehyunan,rohintangirala --attacks

Per clip, ``--frames`` frames spread over the recording (sampled at 2 fps, as analysed:
long side at most 1280), the largest YuNet face, and each model of the default ensemble on:

* ``current``: the library's crop (:func:`liveness.attack.scaled_crop_box`, bilinear);
* ``area``: the same crop resized with ``INTER_AREA``;
* ``pad_black`` / ``pad_reflect``: the frame padded so the full 2.7x / 4x scale fits;
* ``grow_0.85`` / ``grow_1.15``: the YuNet box scaled before the crop.

Rows with ``--only`` (comma-separated prefixes of ``path``), plus every non-live row with
``--attacks``. The JSON (last line) has each model's mean per variant per clip.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import emit, parent_parser, progress, set_progress
from liveness import Verifier
from liveness.attack import PAD_CONTRACTS, _softmax, scaled_crop_box
from liveness.errors import InputError
from liveness.video import load_video

VARIANTS = {
    "current": {},
    "area": {"interp": cv2.INTER_AREA},
    "pad_black": {"border": cv2.BORDER_CONSTANT},
    "pad_reflect": {"border": cv2.BORDER_REFLECT_101},
    "grow_0.85": {"grow": 0.85},
    "grow_1.15": {"grow": 1.15},
}


def crop(img, box, contract, grow=1.0, border=None, interp=cv2.INTER_LINEAR) -> np.ndarray:
    """The model's input crop under one variant (see the module docstring)."""
    box = np.asarray(box, float)
    if grow != 1.0:
        c = (box[:2] + box[2:]) / 2
        half = (box[2:] - box[:2]) * grow / 2
        box = np.concatenate([c - half, c + half])
    if border is not None:
        m = int(max(box[2] - box[0], box[3] - box[1]) * contract.scale)
        img = cv2.copyMakeBorder(img, m, m, m, m, border, value=0)
        box = box + m
    x1, y1, x2, y2 = scaled_crop_box(img.shape, box, contract.scale)
    patch = img[max(y1, 0) : y2 + 1, max(x1, 0) : x2 + 1]
    return cv2.resize(patch, (contract.size, contract.size), interpolation=interp)


def model_score(model, patch: np.ndarray, contract) -> float:
    x = patch[:, :, ::-1] if contract.rgb else patch
    x = x.astype(np.float32).transpose(2, 0, 1)[None] / contract.divide
    return float(_softmax(model.run(np.ascontiguousarray(x))[0][0])[contract.live_class])


def clip_scores(v: Verifier, path: Path, frames: int) -> dict:
    video = load_video(path, sample_fps=2.0)
    idx = np.linspace(0, len(video.frames) - 1, min(frames, len(video.frames)))
    scores = {k: {m.name: [] for m in v.pad.models} for k in VARIANTS}
    sizes = []
    for i in sorted(set(idx.round().astype(int).tolist())):
        img = video.frames[i].image
        faces = v.detector.detect(img)
        if not faces:
            continue
        f = max(faces, key=lambda x: x.size)
        sizes.append(f.size / min(img.shape[:2]))
        for k, kw in VARIANTS.items():
            for m in v.pad.models:
                c = PAD_CONTRACTS[m.name]
                scores[k][m.name].append(model_score(m, crop(img, f.box, c, **kw), c))
    return {
        "face_to_short_side": round(float(np.median(sizes)), 3) if sizes else None,
        "frames": len(sizes),
        "variants": {
            k: {n: round(float(np.mean(s)), 4) if s else None for n, s in d.items()}
            for k, d in scores.items()
        },
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("--labels", type=Path, nargs="+", required=True)
    ap.add_argument("--only", default="", help="comma-separated prefixes of path")
    ap.add_argument("--attacks", action="store_true", help="also every non-live row")
    ap.add_argument("--frames", type=int, default=6)
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    prefixes = [p for p in args.only.split(",") if p]
    rows = []
    for labels in args.labels:
        for r in csv.DictReader(open(labels, newline="")):
            wanted = any(r["path"].startswith(p) for p in prefixes) or not prefixes
            if wanted or (args.attacks and r["label"] != "live"):
                rows.append((labels.parent / r["path"], r["label"]))
    clips = []
    with Verifier(args.model_dir) as v:
        for path, label in progress(rows, len(rows), "clips"):
            try:
                clips.append(
                    {"path": path.name, "label": label, **clip_scores(v, path, args.frames)}
                )
            except InputError as exc:
                clips.append({"path": path.name, "label": label, "error": str(exc)})
    for c in clips:
        if "variants" in c:
            cells = " ".join(
                f"{k}:{'/'.join(f'{x:.2f}' for x in d.values() if x is not None)}"
                for k, d in c["variants"].items()
            )
            print(f"{c['path'][:40]:40} {c['label']:6} {cells}")
    result = {"benchmark": "pad_inputs", "variants": list(VARIANTS), "clips": clips}
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
