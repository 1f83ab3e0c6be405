"""End-to-end decisions on labelled sets of videos, overall and by recording condition.

    python -m benchmarks.videos --labels ../shared/data/videos-wild/labels.csv \
        ../shared/data/videos/labels.csv --reference-from-subject

``--labels`` takes one or more CSV files with columns ``path,label[,reference][,subject]``
(and, when present, ``width,height,lighting,notes``); ``label`` is ``live`` or an attack
kind; ``reference`` is an image path (relative to the CSV) or ``frame:<seconds>`` /
``frame:last`` (a frame of that video). Rows without a reference use
``--default-reference``. With ``--reference-from-subject``, an attack video takes its
reference from the live video of the same ``subject`` in the same CSV when there is one
(the replay shows that person, so only liveness can stop it).

Each clip gets one row: its decision and reasons, the similarity, the live score and each
anti-spoofing model's mean score. A clip that cannot be read or is over a limit is an
``error`` row (with the error's type and message) and the run goes on. Rates are given
overall and per condition: the ``lighting`` column, the resolution (shorter side: ``<360``,
``360-719``, ``>=720``) and ``glasses`` (the word in ``notes``). The JSON is the last line.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import emit, engine_parser, parent_parser, run_jobs, set_progress
from liveness import Verifier, VerifierConfig
from liveness.errors import InputError
from liveness.video import LAB_VIDEO_FORMATS, frame_at

OUTCOMES = ("accept", "review", "reject", "error")


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


def resolution_bucket(width: int | None, height: int | None) -> str | None:
    """``<360``, ``360-719`` or ``>=720`` by the shorter side; None when unknown."""
    if not width or not height:
        return None
    short = min(int(width), int(height))
    return "<360" if short < 360 else ("360-719" if short < 720 else ">=720")


def conditions(row: dict, video: dict) -> dict[str, str]:
    """The conditions a clip is counted under: lighting, resolution, glasses."""
    out = {}
    if (row.get("lighting") or "").strip():
        out["lighting"] = row["lighting"].strip()
    w = video.get("width") or _int(row.get("width"))
    h = video.get("height") or _int(row.get("height"))
    res = resolution_bucket(w, h)
    if res:
        out["resolution"] = res
    out["glasses"] = "yes" if "glasses" in (row.get("notes") or "").lower() else "no"
    return out


def _int(s) -> int | None:
    try:
        return int(float(s))
    except (TypeError, ValueError):
        return None


def load_rows(paths: list[Path], reference_from_subject: bool) -> list[tuple[dict, Path, dict]]:
    """(row, the CSV's folder, that CSV's live video per subject) for every row of every CSV."""
    out = []
    for p in paths:
        rows = list(csv.DictReader(open(p, newline="")))
        live_by_subject = {}
        if reference_from_subject:
            live_by_subject = {
                r["subject"]: r["path"] for r in rows if r["label"] == "live" and r.get("subject")
            }
        out += [(r, p.parent, live_by_subject) for r in rows]
    return out


def run_one(v: Verifier, job: tuple[dict, Path, str, dict]) -> dict:
    """Verify one clip ``(row, csv folder, default reference, live clip per subject)``; an
    input error (unreadable, over a limit) becomes an error row. Runs on any ``--engine``."""
    row, root, default_ref, live_by_subject = job
    rec = {"path": row["path"], "label": row["label"], "csv": str(root)}
    t0 = time.perf_counter()
    try:
        ref, rec["reference"] = reference_for(row, root, default_ref, live_by_subject)
        r = v.verify(root / row["path"], ref)
    except InputError as exc:
        rec.update(
            decision="error",
            reasons=[type(exc).__name__],
            error=f"{type(exc).__name__}: {exc}",
            wall_s=round(time.perf_counter() - t0, 3),
        )
        rec["conditions"] = conditions(row, {})
        return rec
    wall = time.perf_counter() - t0
    per_frame = r.liveness.per_frame
    per_model = {
        name: round(float(np.mean([f["models"][name] for f in per_frame])), 4)
        for name in (per_frame[0].get("models", {}) if per_frame else {})
    }
    rec.update(
        decision=r.decision,
        reasons=r.reason_codes,
        details={x.code.value: x.detail for x in r.reasons if x.detail},
        similarity=r.match.similarity,
        fmr=r.match.fmr_estimate,
        live=r.liveness.score,
        pad_models=per_model,
        pad_frames=[round(f["live"], 4) for f in per_frame],
        expression_motion=r.liveness.temporal.get("expression_motion"),
        blinks=r.liveness.temporal.get("blinks"),
        identity_min_similarity=r.quality.get("identity_min_similarity"),
        other_faces=[d["kind"] for d in r.quality.get("other_faces", [])],
        median_brightness=r.quality.get("median_brightness"),
        median_face_px=r.quality.get("median_face_px"),
        median_sharpness=r.quality.get("median_sharpness"),
        reference_problems=r.reference.get("problems"),
        wall_s=round(wall, 3),
        video_s=round(r.video.get("duration_s", 0), 3),
    )
    rec["conditions"] = conditions(row, r.video)
    return rec


def rates(records: list[dict]) -> dict:
    """Counts and rates of each outcome among ``records``."""
    c = Counter(r["decision"] for r in records)
    n = len(records)
    return {"n": n, **{k: c[k] for k in OUTCOMES}, "accept_rate": c["accept"] / n if n else None}


def summarise(per_video: list[dict]) -> dict:
    table: dict[str, Counter] = defaultdict(Counter)
    reasons: Counter = Counter()
    for p in per_video:
        table[p["label"]][p["decision"]] += 1
        reasons.update(p["reasons"])
    live = [p for p in per_video if p["label"] == "live"]
    attacks = [p for p in per_video if p["label"] != "live"]
    by_condition: dict[str, dict[str, dict]] = {}
    for key in ("lighting", "resolution", "glasses"):
        groups = defaultdict(list)
        for p in live:
            if key in p["conditions"]:
                groups[p["conditions"][key]].append(p)
        by_condition[key] = {k: rates(g) for k, g in sorted(groups.items())}
    live_n = len(live)
    return {
        "confusion": {k: dict(c) for k, c in table.items()},
        "live": rates(live),
        "live_accept_rate": table["live"]["accept"] / live_n if live_n else None,
        "live_reject_rate": table["live"]["reject"] / live_n if live_n else None,
        "attack_accept_rate": (
            sum(p["decision"] == "accept" for p in attacks) / len(attacks) if attacks else None
        ),
        "live_by_condition": by_condition,
        "live_scores": sorted(p["live"] for p in live if p.get("live") is not None),
        "reasons": dict(reasons),
        "not_accepted_live": [
            {k: p.get(k) for k in ("path", "decision", "reasons", "details", "live", "error")}
            for p in live
            if p["decision"] != "accept"
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    parents = [parent_parser(), engine_parser()]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=parents)
    ap.add_argument("--labels", type=Path, nargs="+", required=True)
    ap.add_argument("--default-reference", default="frame:last")
    ap.add_argument("--reference-from-subject", action="store_true")
    ap.add_argument(
        "--max-duration-s",
        type=float,
        default=None,
        help="the verifier's duration limit (default: VideoLimits' own)",
    )
    ap.add_argument("--embedder", default=None, help="embedder registry name (dlib_resnet)")
    ap.add_argument("--detector", default=None, help="detector part name (scrfd_500m)")
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    rows = load_rows(args.labels, args.reference_from_subject)
    per_video = []
    # Lab clips include AVI and MPEG-PS files, which a server would refuse.
    limits = replace(VerifierConfig().limits, formats=LAB_VIDEO_FORMATS)
    if args.max_duration_s is not None:
        limits = replace(limits, max_duration_s=args.max_duration_s)
    parts = {k: getattr(args, k) for k in ("embedder", "detector") if getattr(args, k)}
    config = VerifierConfig(limits=limits, **parts)
    jobs = [(row, root, args.default_reference, lbs) for row, root, lbs in rows]
    # --engine: serially, on a process pool or on Ray (the same rows); closing() stops the
    # workers even if the loop ends early
    with closing(run_jobs(run_one, jobs, args, "verifying", config)) as results:
        for (row, root, _, _), item in zip(jobs, results, strict=True):
            if item.ok:
                per_video.append(item.value)
            elif item.error.kind == "setup":  # no model, no run: say so once and stop
                raise SystemExit(f"benchmarks.videos: {item.error}")
            else:  # not an InputError (those are rows already): recorded, and the run goes on
                per_video.append(
                    {
                        "path": row["path"],
                        "label": row["label"],
                        "csv": str(root),
                        "decision": "error",
                        "reasons": [item.error.type],
                        "error": str(item.error),
                        "wall_s": 0.0,
                        "conditions": conditions(row, {}),
                    }
                )
    result = {
        "benchmark": "videos",
        "labels": [str(p) for p in args.labels],
        **summarise(per_video),
        "videos": per_video,
        "n": len(rows),
    }
    for p in per_video:
        live = p.get("live")
        print(
            f"{p['path'][:60]:60} {p['label']:6} {p['decision']:6} "
            f"{'' if live is None else f'{live:.3f}':>6} {p['wall_s']:6.2f} s  "
            f"{','.join(p['reasons']) or '-'}"
        )
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
