"""Blink and action events per clip with the landmarker on every frame and with a plan.

    python -m benchmarks.landmark_events --labels ../shared/data/videos-wild/labels.csv \
        ../shared/data/videos/labels.csv [--first-pass-fps 5] [--blink-share 0.5] \
        [--patch-change 0.38] [--held-actions] [--repeat-full] [--only NAME ...] [--patch-stats]

Each clip is decoded as ``verify`` decodes it (15 fps, the lab formats allowed) and
landmarked twice with the same pooled landmarkers (two workers, as in the Verifier): every
frame (what ``verify`` does without a plan), then with the
:class:`~liveness.landmark_plan.LandmarkPlan` given by the options, its gaps decided while
the frames are pushed, as in ``verify``. ``detect_actions`` runs on both (the planned run
with ``rest=`` its evenly spaced first pass, as ``verify`` does), then the appearance check
of blinks, smiles and open mouths (:func:`liveness.appearance.seen_in_pixels`, the
thresholds of ``verify``): the events compared are those confirmed, as ``verify`` reports
them. Per clip: the events of each run (kind, peak frame index, start, end), the frames
landmarked and the process CPU seconds of the landmarks, and the comparison:

* ``missing``: events of the full run with no event of the same kind in the planned run
  whose peak lies within ``--tolerance`` frames (decoded-stream indices) of it or whose
  span overlaps it; ``extra``: the same the other way round;
* blinks and other actions are counted apart (``blinks_missing``, ``actions_missing`` ...).

The JSON (last line) sums these over clips: ``frames_full``, ``frames_planned`` (their ratio
is the landmarker work kept), ``events_full``, ``events_planned``, ``missing``, ``extra``.
``--repeat-full`` runs the full landmarker a second time (the noise level, if any).

``--patch-stats`` measures the patch check on the every-frame run: the left-out frames with
closed eyes between two open first-pass frames (what only the patch check can catch)
against the other left-out frames, per subject (``subject`` column, else ``repo``, else the
clip), and chooses ``patch_change`` on a **held-out split**: the subjects, sorted, are dealt
alternately into two halves; on one half the threshold is ``--fit-margin`` times the lowest
patch change of a closed-eye frame; on the other half are reported the closed-eye frames
under it, the lowest one's margin (its patch change over the threshold) and the share of
other frames at or over it (frames landmarked for nothing). Both ways round.
"""

from __future__ import annotations

import argparse
import csv
import resource
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit, parent_parser, progress, set_progress
from liveness.appearance import AppearanceThresholds, seen_in_pixels
from liveness.challenges import (
    ActionEvent,
    DetectorConfig,
    _eye_closure,
    detect_actions,
    measure_signals,
)
from liveness.errors import InputError
from liveness.landmark_plan import FirstPass, LandmarkPlan, patch_change
from liveness.landmarks import FaceLandmarks
from liveness.runtime import Runtime
from liveness.video import LAB_VIDEO_FORMATS, Frame, VideoLimits, load_video

SAMPLE_FPS = 15.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def landmark(lm: FaceLandmarks, frames: list[Frame], plan: LandmarkPlan | None):
    """``(events confirmed in pixels, landmarked frames, cpu seconds, meshes)`` of one
    pass over ``frames``."""
    c0 = _cpu()
    stream = lm.stream(plan=plan, sample_fps=SAMPLE_FPS)
    meshes = stream.run(frames)
    cpu = _cpu() - c0
    kept = stream.select(frames)
    events = detect_actions(meshes, rest=stream.evenly_spaced())
    events, _ = seen_in_pixels(events, kept, meshes, AppearanceThresholds())
    return events, kept, cpu, meshes


def patch_stats(frames: list[Frame], meshes: list, plan: LandmarkPlan):
    """From an every-frame run: ``(closed, other)``. ``closed``: ``(frame index, closure,
    patch change)`` of each frame the first pass leaves out whose eyes are closed (closure
    at least 0.4, the rest values of the whole clip) while both first-pass neighbours are
    open (closure under ``blink_share`` of the exit threshold): the blinks only the patch
    check can catch. ``other``: the patch change of the other left-out frames between open
    neighbours."""
    present = [m for m in meshes if m is not None]
    if len(present) < 5:
        return [], []
    signals = measure_signals(present)
    values = _eye_closure(signals, DetectorConfig())[0]
    closure = dict(zip(signals.frame.tolist(), values, strict=True))
    first = FirstPass(plan.first_pass_fps)
    keep = [k for k, f in enumerate(frames) if first.keep(f.t)]
    quiet = plan.blink_share * DetectorConfig().blink.exit
    closed, other = [], []
    for a, b in zip(keep[:-1], keep[1:], strict=True):
        if meshes[a] is None or meshes[b] is None:
            continue
        ends = max(closure[frames[a].index], closure[frames[b].index])
        if ends >= quiet:
            continue
        for k in range(a + 1, b):
            if meshes[k] is None:
                continue
            v = patch_change(frames[a], frames[k], frames[b], meshes[a], meshes[b])
            c = float(closure[frames[k].index])
            if c >= 0.4:
                closed.append((frames[k].index, c, float(v)))
            else:
                other.append(float(v))
    return closed, other


def event_row(e: ActionEvent) -> dict:
    return {
        "kind": e.kind,
        "peak_frame": e.peak_frame,
        "start": round(e.start, 3),
        "end": round(e.end, 3),
        "confidence": round(e.confidence, 3),
    }


def unmatched(a: list[ActionEvent], b: list[ActionEvent], tolerance: int) -> list[ActionEvent]:
    """Events of ``a`` with no event of the same kind in ``b`` peaking within ``tolerance``
    frames or overlapping it in time (each event of ``b`` used once)."""
    free = list(b)
    out = []
    for e in a:
        hit = next(
            (
                x
                for x in free
                if x.kind == e.kind
                and (
                    abs(x.peak_frame - e.peak_frame) <= tolerance
                    or (x.start <= e.end and e.start <= x.end)
                )
            ),
            None,
        )
        if hit is None:
            out.append(e)
        else:
            free.remove(hit)
    return out


def compare(full: list[ActionEvent], planned: list[ActionEvent], tolerance: int) -> dict:
    missing = unmatched(full, planned, tolerance)
    extra = unmatched(planned, full, tolerance)
    return {
        "blinks_missing": sum(e.kind == "blink" for e in missing),
        "blinks_extra": sum(e.kind == "blink" for e in extra),
        "actions_missing": sum(e.kind != "blink" for e in missing),
        "actions_extra": sum(e.kind != "blink" for e in extra),
        "missing": [event_row(e) for e in missing],
        "extra": [event_row(e) for e in extra],
    }


def clips(paths: list[Path]) -> list[tuple[Path, str]]:
    """``(clip, subject)`` of each row: the ``subject`` column, else ``repo``, else the
    clip's name."""
    out = []
    for p in paths:
        with open(p, newline="") as f:
            for row in csv.DictReader(f):
                subject = row.get("subject") or row.get("repo") or row["path"]
                out.append((p.parent / row["path"], subject))
    return out


def held_out(closed: list[tuple], other: list[tuple], margin: float) -> list[dict]:
    """The held-out choice of ``patch_change`` (see the module docstring). ``closed``:
    ``(subject, clip, frame, closure, patch change)``; ``other``: ``(subject, patch
    change)``. One entry per way round."""
    subjects = sorted({c[0] for c in closed} | {o[0] for o in other})
    halves = [set(subjects[0::2]), set(subjects[1::2])]
    out = []
    for fit, test in (halves, halves[::-1]):
        fit_closed = [c[-1] for c in closed if c[0] in fit]
        if not fit_closed:
            out.append({"fit_subjects": len(fit), "threshold": None, "note": "no closed frame"})
            continue
        th = margin * min(fit_closed)
        test_closed = [c for c in closed if c[0] in test]
        test_other = np.array([o[1] for o in other if o[0] in test], dtype=float)
        test_other = test_other[np.isfinite(test_other)]
        low = min((c[-1] for c in test_closed), default=None)
        out.append(
            {
                "fit_subjects": len(fit),
                "fit_closed_frames": len(fit_closed),
                "fit_lowest": round(min(fit_closed), 3),
                "threshold": round(th, 3),
                "test_subjects": len(test),
                "test_closed_frames": len(test_closed),
                "test_closed_under_threshold": [
                    {"clip": c[1], "frame": c[2], "patch_change": round(c[-1], 3)}
                    for c in test_closed
                    if c[-1] < th
                ],
                "test_lowest": None if low is None else round(low, 3),
                "test_margin": None if low is None else round(low / th, 3),
                "test_other_frames": int(test_other.size),
                "test_other_at_or_over": round(float(np.mean(test_other >= th)), 4)
                if test_other.size
                else None,
            }
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("--labels", type=Path, nargs="+", required=True)
    ap.add_argument("--first-pass-fps", type=float, default=LandmarkPlan.first_pass_fps)
    ap.add_argument("--blink-share", type=float, default=LandmarkPlan.blink_share)
    ap.add_argument("--patch-change", type=float, default=LandmarkPlan.patch_change)
    ap.add_argument(
        "--held-actions",
        action="store_true",
        help="the plan fills around head turns and tilts, smiles and open mouths too",
    )
    ap.add_argument("--tolerance", type=int, default=2, help="frames (decoded stream)")
    ap.add_argument("--repeat-full", action="store_true", help="a second full run (noise)")
    ap.add_argument("--only", nargs="*", default=None, help="clip file names to keep")
    ap.add_argument(
        "--patch-stats",
        action="store_true",
        help="patch_change of the left-out frames with closed eyes that no first-pass "
        "neighbour shows, against the other left-out frames (every-frame run), and the "
        "held-out choice of its threshold",
    )
    ap.add_argument(
        "--fit-margin",
        type=float,
        default=0.8,
        help="--patch-stats: threshold = this x the fit half's lowest closed-eye frame",
    )
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    plan = LandmarkPlan(
        first_pass_fps=args.first_pass_fps,
        blink_share=args.blink_share,
        patch_change=args.patch_change,
        held_actions=args.held_actions,
    )
    runtime = Runtime(args.model_dir)
    lm = FaceLandmarks(runtime.path("face_landmarker"), workers=2)
    lm.warm_up()
    limits = VideoLimits(formats=LAB_VIDEO_FORMATS)
    paths = clips(args.labels)
    if args.only:
        paths = [p for p in paths if p[0].name in set(args.only)]
    rows = []
    patches: dict[str, list] = {"closed": [], "other": []}
    t0 = time.perf_counter()
    try:
        for path, subject in progress(paths, len(paths), "clips"):
            try:
                video = load_video(path, sample_fps=SAMPLE_FPS, limits=limits)
            except InputError as exc:
                rows.append({"clip": path.name, "error": f"{type(exc).__name__}: {exc}"})
                continue
            runs = {}
            for name, p in [("full", None), ("planned", plan)] + (
                [("full_again", None)] if args.repeat_full else []
            ):
                events, frames, cpu, meshes = landmark(lm, video.frames, p)
                runs[name] = (events, len(frames), cpu)
                if name == "full" and args.patch_stats:
                    closed, other = patch_stats(video.frames, meshes, plan)
                    patches["closed"] += [(subject, path.name, *c) for c in closed]
                    patches["other"] += [(subject, v) for v in other]
            full, planned = runs["full"][0], runs["planned"][0]
            row = {
                "clip": path.name,
                "subject": subject,
                "frames_full": runs["full"][1],
                "frames_planned": runs["planned"][1],
                "cpu_full_s": round(runs["full"][2], 3),
                "cpu_planned_s": round(runs["planned"][2], 3),
                "events_full": [event_row(e) for e in full],
                "events_planned": [event_row(e) for e in planned],
                **compare(full, planned, args.tolerance),
            }
            if args.repeat_full:
                again = compare(full, runs["full_again"][0], args.tolerance)
                row["full_vs_full_again"] = {
                    k: v
                    for k, v in again.items()
                    if k.endswith(("missing", "extra")) and isinstance(v, int)
                }
            rows.append(row)
            print(
                f"{path.name[:40]:40} frames {row['frames_full']:4} -> {row['frames_planned']:4}"
                f"  events {len(full):3} -> {len(planned):3}"
                f"  blinks missing {row['blinks_missing']} extra {row['blinks_extra']}"
                f"  actions missing {row['actions_missing']} extra {row['actions_extra']}",
                flush=True,
            )
    finally:
        lm.close()
    ok = [r for r in rows if "error" not in r]

    def total(key: str) -> int:
        return sum(r[key] if isinstance(r[key], int) else len(r[key]) for r in ok)

    result = {
        "benchmark": "landmark_events",
        "plan": {
            "first_pass_fps": plan.first_pass_fps,
            "blink_share": plan.blink_share,
            "patch_change": plan.patch_change,
            "held_actions": plan.held_actions,
        },
        "clips": len(ok),
        "errors": len(rows) - len(ok),
        "frames_full": total("frames_full"),
        "frames_planned": total("frames_planned"),
        "frames_kept_share": round(total("frames_planned") / max(total("frames_full"), 1), 3),
        "cpu_full_s": round(sum(r["cpu_full_s"] for r in ok), 2),
        "cpu_planned_s": round(sum(r["cpu_planned_s"] for r in ok), 2),
        "events_full": total("events_full"),
        "events_planned": total("events_planned"),
        "blinks_full": sum(e["kind"] == "blink" for r in ok for e in r["events_full"]),
        "blinks_planned": sum(e["kind"] == "blink" for r in ok for e in r["events_planned"]),
        "blinks_missing": total("blinks_missing"),
        "blinks_extra": total("blinks_extra"),
        "actions_missing": total("actions_missing"),
        "actions_extra": total("actions_extra"),
        "wall_s": round(time.perf_counter() - t0, 1),
        "per_clip": rows,
    }
    if args.patch_stats:
        other = np.array([v for _, v in patches["other"]], dtype=float)
        other = other[np.isfinite(other)]
        low = min((c[-1] for c in patches["closed"]), default=None)
        result["patch_stats"] = {
            "closed_unseen": [
                {
                    "subject": s,
                    "clip": c,
                    "frame": f,
                    "closure": round(x, 3),
                    "patch_change": round(v, 3),
                }
                for s, c, f, x, v in sorted(patches["closed"], key=lambda c: c[-1])
            ],
            "held_out": held_out(patches["closed"], patches["other"], args.fit_margin),
            "other_frames": int(other.size),
            "other_at_or_over_threshold": round(float(np.mean(other >= plan.patch_change)), 4)
            if other.size
            else None,
            "other_at_or_over_0.9_lowest_closed": None
            if low is None or not other.size
            else round(float(np.mean(other >= 0.9 * low)), 4),
        }
    if args.repeat_full:
        result["full_vs_full_again"] = {
            k: sum(r["full_vs_full_again"][k] for r in ok)
            for k in ("blinks_missing", "blinks_extra", "actions_missing", "actions_extra")
        }
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
