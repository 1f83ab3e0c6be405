"""End-to-end decisions on a labelled set of videos.

    python -m benchmarks.videos --labels ../shared/data/videos/labels.csv \
        --default-reference frame:last --reference-from-subject

``--labels`` is a CSV with columns ``path,label[,reference][,subject]``; ``label`` is
``live`` or an attack kind; ``reference`` is an image path (relative to the CSV) or
``frame:<seconds>`` / ``frame:last`` (a frame of that video). Rows without a reference use
``--default-reference``. With ``--reference-from-subject``, an attack video takes its
reference from the live video of the same ``subject`` when there is one (the replay shows
that person, so only liveness can stop it). Prints the decisions per label, the reasons
seen and each video's time.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path

from benchmarks.common import emit, engine_parser, parent_parser, set_progress, verified
from liveness.verify import VerifierConfig
from liveness.video import LAB_VIDEO_FORMATS, VideoLimits, frame_at


def reference_for(row: dict, root: Path, default: str, live_by_subject: dict):
    spec = (row.get("reference") or "").strip() or default
    video = root / row["path"]
    if row["label"] != "live" and row.get("subject") in live_by_subject:
        video = root / live_by_subject[row["subject"]]
        if spec.startswith("frame:"):
            return frame_at(video, "last"), f"{video.name}@last"
    if spec.startswith("frame:"):
        return frame_at(video, spec.split(":", 1)[1]), f"{video.name}@{spec[6:]}"
    return root / spec, spec


def main(argv: list[str] | None = None) -> dict:
    parents = [parent_parser(), engine_parser()]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=parents)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--default-reference", default="frame:last")
    ap.add_argument("--reference-from-subject", action="store_true")
    ap.add_argument("--embedder", default=None, help="embedder registry name (dlib_resnet)")
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    rows = list(csv.DictReader(open(args.labels, newline="")))
    root = args.labels.parent
    live_by_subject = {}
    if args.reference_from_subject:
        live_by_subject = {
            r["subject"]: r["path"] for r in rows if r["label"] == "live" and r.get("subject")
        }
    table: dict[str, Counter] = defaultdict(Counter)
    reasons: Counter = Counter()
    per_video = []
    # Lab clips include AVI and MPEG-PS files, which a server would refuse.
    lab = VideoLimits(formats=LAB_VIDEO_FORMATS)
    config = VerifierConfig(limits=lab, **({"embedder": args.embedder} if args.embedder else {}))
    refs = [reference_for(row, root, args.default_reference, live_by_subject) for row in rows]
    jobs = [(root / row["path"], ref) for row, (ref, _) in zip(rows, refs, strict=True)]
    # --engine: serially, on a process pool or on Ray (the same results); closing() stops the
    # workers even if the loop ends early
    with closing(verified(jobs, args, config=config)) as results:
        for row, (_, ref_name), r in zip(rows, refs, results, strict=True):
            wall = r.timings_ms["total"] / 1000  # the verify call's own wall time
            table[row["label"]][r.decision] += 1
            reasons.update(r.reason_codes)
            per_video.append(
                {
                    "path": row["path"],
                    "label": row["label"],
                    "reference": ref_name,
                    "decision": r.decision,
                    "reasons": r.reason_codes,
                    "similarity": r.match.similarity,
                    "live": r.liveness.score,
                    "wall_s": round(wall, 3),
                    "video_s": round(r.video.get("duration_s", 0), 3),
                }
            )
    live_n = sum(table["live"].values())
    attack_n = sum(sum(c.values()) for k, c in table.items() if k != "live")
    attack_accepted = sum(c["accept"] for k, c in table.items() if k != "live")
    result = {
        "benchmark": "videos",
        "labels": str(args.labels),
        "confusion": {k: dict(c) for k, c in table.items()},
        "live_accept_rate": table["live"]["accept"] / live_n if live_n else None,
        "live_reject_rate": table["live"]["reject"] / live_n if live_n else None,
        "attack_accept_rate": attack_accepted / attack_n if attack_n else None,
        "reasons": dict(reasons),
        "videos": per_video,
        "n": len(rows),
    }
    for p in per_video:
        print(
            f"{p['path']:32} {p['label']:7} {p['decision']:7} {p['wall_s']:6.2f} s  "
            f"{','.join(p['reasons']) or '-'}"
        )
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
