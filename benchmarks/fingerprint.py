"""Content fingerprints (liveness.fingerprint): copies found, different recordings kept apart.

    python -m benchmarks.fingerprint [--seconds 6] [--limit N] [--json out.json]

For every clip in ``videos/`` and ``videos-wild/`` of the data dir (its first ``--seconds``),
the fingerprint of the clip is matched against the fingerprints of

* copies: re-encoded (MPEG-4 Part 2 at 3/4 size), trimmed (the first and last second cut
  off, clips of 4 s or more), and the file with bytes appended or its last byte changed
  (decoded as is);
* every other clip (different recordings; the LipNet clips are one studio and framing).

It prints the overlap of each copy kind (min) and of different clips (max, and the pairs
above ``--threshold``), the numbers behind ``FingerprintIndex.min_overlap``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import emit, parent_parser, progress, set_progress
from liveness.fingerprint import content_fingerprint, match

VIDEO_EXT = {".mp4", ".webm", ".avi", ".mpg", ".mov", ".3gp"}


def read(path: Path, seconds: float) -> tuple[list[tuple[float, np.ndarray]], float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out = []
    while len(out) < seconds * fps:
        ok, img = cap.read()
        if not ok:
            break
        h, w = img.shape[:2]
        if max(h, w) > 1280:
            s = 1280 / max(h, w)
            img = cv2.resize(img, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
        out.append((len(out) / fps, img))
    cap.release()
    return out, fps


def reencode(frames, fps: float) -> list[tuple[float, np.ndarray]]:
    h, w = frames[0][1].shape[:2]
    size = (max(16, int(w * 0.75)) // 2 * 2, max(16, int(h * 0.75)) // 2 * 2)
    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        wr = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        for _, img in frames:
            wr.write(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
        wr.release()
        cap = cv2.VideoCapture(tmp)
        out = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            out.append((len(out) / fps, img))
        cap.release()
        return out
    finally:
        os.unlink(tmp)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(parents=[parent_parser()], description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=None, help="default: $LIVENESS_DATA_DIR")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--limit", type=int, default=None, help="at most this many clips")
    p.add_argument("--threshold", type=float, default=0.6)
    args = p.parse_args(argv)
    set_progress(False if args.no_progress else None)
    data = Path(args.data_dir or os.environ.get("LIVENESS_DATA_DIR", "../shared/data"))
    clips = sorted(
        q for d in ("videos", "videos-wild") for q in (data / d).iterdir() if q.suffix in VIDEO_EXT
    )[: args.limit]
    prints: dict = {}
    missed: list[tuple[str, str]] = []
    copies: dict[str, list[float]] = {"reencoded": [], "trimmed": [], "appended_bytes": []}
    for path in progress(clips, desc="clips"):
        frames, fps = read(path, args.seconds)
        if len(frames) < 10:
            continue
        fp = content_fingerprint(frames)
        prints[path.name] = fp
        copies["reencoded"].append(match(content_fingerprint(reencode(frames, fps)), fp))
        missed += [("reencoded", path.name)] if copies["reencoded"][-1] < args.threshold else []
        if frames[-1][0] >= 4.0:  # keep at least 2 s after trimming
            trimmed = [(t - 1.0, img) for t, img in frames if 1.0 <= t <= frames[-1][0] - 1.0]
            copies["trimmed"].append(match(content_fingerprint(trimmed), fp))
            missed += [("trimmed", path.name)] if copies["trimmed"][-1] < args.threshold else []
        # appended or changed trailing bytes decode to the same frames
        copies["appended_bytes"].append(match(content_fingerprint(frames), fp))
    names = list(prints)
    cross = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            cross.append((max(match(prints[a], prints[b]), match(prints[b], prints[a])), a, b))
    cross.sort(reverse=True)
    out = {
        "clips": len(names),
        "seconds": args.seconds,
        "copies_min_overlap": {k: round(float(min(v)), 3) for k, v in copies.items() if v},
        "copies_median_overlap": {k: round(float(np.median(v)), 3) for k, v in copies.items() if v},
        "copies_total": {k: len(v) for k, v in copies.items()},
        "copies_missed": [{"copy": k, "clip": c} for k, c in missed],
        "different_pairs": len(cross),
        "different_max_overlap": round(cross[0][0], 3) if cross else None,
        "different_top": [{"overlap": round(o, 3), "a": a, "b": b} for o, a, b in cross[:5]],
        "different_over_threshold": sum(o >= args.threshold for o, _, _ in cross),
        "threshold": args.threshold,
    }
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
