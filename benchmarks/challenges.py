"""Challenge-action detection on clips rendered from real photos (``benchmarks.render``).

    python -m benchmarks.challenges [--photos ../shared/data/faces/deepface] [--max-photos 6]
        [--json result.json] [--plots plots/]

Photos are taken in name order from ``--photos`` (a directory, or image files); a photo is
used only when the renderer finds a face in it, up to ``--max-photos``. For each photo the
renderer performs ``--scripts-per-photo`` scripts, each a seeded random permutation of
``--kinds`` (default: all seven), and ``--neutral-per-photo`` neutral clips (head sway and
camera shake only, ``--neutral-s`` seconds). The library's Face Landmarker and
``detect_actions`` run on the frames at the pipeline's sampling rate
(``load_video(..., sample_fps=15)``).

Matching (:func:`match_events`): a scripted action counts as detected when an event of the
same kind peaks inside its ground-truth span widened by ``--tolerance`` seconds
(``[start - 0.3, end + 0.3]``); each event detects at most one action. An event that peaks
inside no (widened) span of its own kind is a false detection; further events of the right
kind inside a span are counted as ``duplicates``, not as false detections.

Every action clip is also flipped left-right and analysed with ``mirrored=True`` (a
front-camera preview recording): turn directions must still come out right, so a
``turn_left`` reported during a scripted ``turn_left`` of the flipped clip is a hit and a
``turn_right`` there a false detection.

Result (one JSON object, last line of stdout):

* ``detection_rate``: detected / scripted actions, all kinds;
* ``false_rate``: false detections per minute of video over all clips (action and neutral),
  ``false_rate_unit`` says so; ``false_per_clip`` the same per clip;
* ``per_kind``: kind -> ``detection_rate``, ``false_rate`` (per minute, all clips),
  ``timing_error_s`` (median |detected peak - scripted peak|), ``mirrored_detection_rate``,
  ``false_during`` (what was scripted at each false detection's peak: a kind, ``none``
  between actions, ``neutral`` in a neutral clip);
* ``neutral``: the neutral clips alone (false detections a still person triggers);
* ``mirrored_detection_rate`` / ``mirrored_false_rate``: the same on the flipped clips;
* ``ms_per_clip``: mean analysis time of one clip (sampling, landmarks, ``detect_actions``;
  unflipped), ``render_ms_per_clip`` the rendering time, ``seconds_rendered`` the video.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import _pyplot, _save, emit, parent_parser, progress, set_progress
from benchmarks.render import (
    ACTION_KINDS,
    LANDMARKER_FILE,
    detect_photo_face,
    parse_script,
    render_live_frames,
    resolve_model_dir,
)
from liveness.challenges import ActionEvent, detect_actions
from liveness.landmarks import FaceLandmarks
from liveness.video import load_video

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
PIPELINE_FPS = 15.0  # the pipeline's analysis rate (load_video's default sample_fps)

Truth = tuple[str, float, float, float]  # kind, start, peak, end (s)


def match_events(
    truth: Sequence[Truth], events: Sequence[ActionEvent], tolerance: float = 0.3
) -> tuple[list[float | None], list[ActionEvent]]:
    """Match detected events to scripted actions.

    Returns, for each ground-truth ``(kind, start, peak, end)``, the timing error
    ``|event peak - true peak|`` of the event that detects it, or ``None`` when it was
    missed; and the false detections. An action is detected by an unused event of its kind
    whose peak lies in ``[start - tolerance, end + tolerance]`` (the one nearest its peak);
    an event is false when its peak lies in no such interval of its own kind.
    """
    errors: list[float | None] = []
    used: set[int] = set()
    for kind, start, peak, end in truth:
        hits = [
            i
            for i, e in enumerate(events)
            if e.kind == kind and i not in used and start - tolerance <= e.peak <= end + tolerance
        ]
        if hits:
            best = min(hits, key=lambda i: abs(events[i].peak - peak))
            used.add(best)
            errors.append(abs(events[best].peak - peak))
        else:
            errors.append(None)
    false = [
        e
        for i, e in enumerate(events)
        if i not in used
        and not any(
            k == e.kind and s - tolerance <= e.peak <= en + tolerance for k, s, _, en in truth
        )
    ]
    return errors, false


def analyse(
    lm: FaceLandmarks, frames: np.ndarray, fps: float, *, mirrored: bool = False
) -> list[ActionEvent]:
    """``detect_actions`` on BGR frames (T, H, W, 3) rendered at ``fps``, sampled as the
    pipeline samples an upload."""
    video = load_video([(i / fps, f) for i, f in enumerate(frames)], sample_fps=PIPELINE_FPS)
    return detect_actions(lm.analyse(video.frames), mirrored=mirrored)


@dataclass
class Tally:
    """Counts over a set of clips."""

    clips: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.errors: dict[str, list[float | None]] = defaultdict(list)
        self.false: dict[str, int] = defaultdict(int)
        self.duplicates = 0
        # False detections by what was scripted at their peak: an action kind, "none"
        # (between actions) or "neutral" (a clip without actions).
        self.during: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, truth: Sequence[Truth], events: Sequence[ActionEvent], tol: float, secs: float):
        errors, false = match_events(truth, events, tol)
        for (kind, *_), err in zip(truth, errors, strict=True):
            self.errors[kind].append(err)
        for e in false:
            self.false[e.kind] += 1
            under = [k for k, s, _, en in truth if s <= e.peak <= en]
            self.during[e.kind][under[0] if under else "none" if truth else "neutral"] += 1
        self.duplicates += len(events) - len(false) - sum(e is not None for e in errors)
        self.clips += 1
        self.seconds += secs

    def rate(self, kind: str | None = None) -> float | None:
        errs = self.errors[kind] if kind else [e for v in self.errors.values() for e in v]
        return float(np.mean([e is not None for e in errs])) if errs else None

    def false_total(self, kind: str | None = None) -> int:
        return self.false[kind] if kind else sum(self.false.values())

    def per_minute(self, kind: str | None = None) -> float | None:
        return self.false_total(kind) / (self.seconds / 60) if self.seconds else None

    def timing(self, kind: str | None = None) -> list[float]:
        errs = self.errors[kind] if kind else [e for v in self.errors.values() for e in v]
        return [e for e in errs if e is not None]


def _merge(*counts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for c in counts:
        for k, v in c.items():
            out[k] += v
    return dict(sorted(out.items()))


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 3) if values else None


def _round(x: float | None, n: int = 4) -> float | None:
    return None if x is None else round(x, n)


def find_photos(source: Sequence[Path]) -> list[Path]:
    """Image files named by ``source`` (directories are listed, in name order)."""
    out: list[Path] = []
    for p in source:
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} not found; pass --photos or set LIVENESS_DATA_DIR")
    return out


def _parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.challenges",
        description=__doc__.split("\n\n")[0],
        parents=[parent_parser()],
    )
    data = Path(os.environ.get("LIVENESS_DATA_DIR", ROOT.parent / "shared" / "data"))
    ap.add_argument(
        "--photos",
        type=Path,
        nargs="+",
        default=[data / "faces" / "deepface"],
        help="directory of face photos, or photo files (default: $LIVENESS_DATA_DIR/faces/"
        "deepface, else ../shared/data/faces/deepface)",
    )
    ap.add_argument("--max-photos", type=int, default=6, help="photos with a face to use")
    ap.add_argument(
        "--kinds", default=",".join(ACTION_KINDS), help="comma-separated kinds to script"
    )
    ap.add_argument("--scripts-per-photo", type=int, default=1)
    ap.add_argument("--neutral-per-photo", type=int, default=1)
    ap.add_argument("--neutral-s", type=float, default=6.0, help="neutral clip length (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=float, default=15.0, help="rendering frame rate")
    ap.add_argument("--size", type=_parse_size, default=(360, 480), help="HEIGHTxWIDTH")
    ap.add_argument("--angle", type=float, default=25.0, help="turn / look angle, degrees")
    ap.add_argument("--tolerance", type=float, default=0.3, help="seconds around a span")
    ap.add_argument("--no-mirrored", action="store_true", help="skip the mirrored check")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    set_progress(False if args.no_progress else None)
    kinds = parse_script(args.kinds)
    model_dir = resolve_model_dir(args.model_dir)
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()

    # Photos in which the renderer finds a face, and the clips to render from each.
    photos, skipped = [], []
    for photo in find_photos(args.photos):
        if len(photos) == args.max_photos:
            break
        try:
            photos.append((photo, detect_photo_face(photo, model_dir)))
        except ValueError:
            skipped.append(photo.name)  # no face: not a clip source
    jobs = []
    for photo, face in photos:
        for _ in range(args.scripts_per_photo):
            jobs.append((photo, face, [kinds[i] for i in rng.permutation(len(kinds))]))
        jobs += [(photo, face, [])] * args.neutral_per_photo

    scripted, neutral, mirrored = Tally(), Tally(), Tally()
    render_s = analyse_s = 0.0
    lm = FaceLandmarks(model_dir / LANDMARKER_FILE)
    try:
        lm.warm_up()
        for k, (photo, face, script) in enumerate(progress(jobs, len(jobs), "clips")):
            t0 = time.perf_counter()
            clip = render_live_frames(
                photo,
                script,
                size=args.size,
                fps=args.fps,
                seed=args.seed * 10_000 + k,
                angle_deg=args.angle,
                duration=None if script else args.neutral_s,
                face=face,
            )
            t1 = time.perf_counter()
            events = analyse(lm, clip.frames, args.fps)
            t2 = time.perf_counter()
            render_s += t1 - t0
            analyse_s += t2 - t1
            truth = [(a.kind, a.start, a.peak, a.end) for a in clip.truth.actions]
            secs = len(clip.frames) / args.fps
            (scripted if script else neutral).add(truth, events, args.tolerance, secs)
            if script and not args.no_mirrored:
                flipped = np.ascontiguousarray(clip.frames[:, :, ::-1])
                m_events = analyse(lm, flipped, args.fps, mirrored=True)
                mirrored.add(truth, m_events, args.tolerance, secs)
    finally:
        lm.close()

    clips = scripted.clips + neutral.clips
    seconds = scripted.seconds + neutral.seconds
    n_false = scripted.false_total() + neutral.false_total()
    per_kind = {}
    for kind in kinds:
        false_k = scripted.false_total(kind) + neutral.false_total(kind)
        per_kind[kind] = {
            "actions": len(scripted.errors[kind]),
            "detection_rate": _round(scripted.rate(kind)),
            "false_detections": false_k,
            "false_rate": _round(false_k / (seconds / 60)) if seconds else None,
            "timing_error_s": _median(scripted.timing(kind)),
            "mirrored_detection_rate": _round(mirrored.rate(kind)),
            "mirrored_false_detections": mirrored.false_total(kind),
            "false_during": _merge(scripted.during[kind], neutral.during[kind]),
        }
    # Kinds that were not scripted (with --kinds) can still be falsely detected.
    for kind in sorted((set(neutral.false) | set(scripted.false)) - set(kinds)):
        false_k = scripted.false_total(kind) + neutral.false_total(kind)
        per_kind[kind] = {
            "actions": 0,
            "false_detections": false_k,
            "false_rate": _round(false_k / (seconds / 60)),
            "false_during": _merge(scripted.during[kind], neutral.during[kind]),
        }
    result = {
        "benchmark": "challenges",
        "detection_rate": _round(scripted.rate()),
        "false_rate": _round(n_false / (seconds / 60)) if seconds else None,
        "false_rate_unit": "false detections per minute of video (action and neutral clips)",
        "false_per_clip": _round(n_false / clips) if clips else None,
        "false_detections": n_false,
        "duplicates": scripted.duplicates + neutral.duplicates,
        "timing_error_s": _median(scripted.timing()),
        "mirrored_detection_rate": _round(mirrored.rate()),
        "mirrored_false_rate": _round(mirrored.per_minute()),
        "per_kind": per_kind,
        "neutral": {
            "clips": neutral.clips,
            "seconds": round(neutral.seconds, 1),
            "false_detections": neutral.false_total(),
            "false_rate": _round(neutral.per_minute()),
            "false_per_kind": dict(sorted(neutral.false.items())),
        },
        "clips": clips,
        "action_clips": scripted.clips,
        "actions": sum(len(v) for v in scripted.errors.values()),
        "photos": [p.name for p, _ in photos],
        "photos_without_face": skipped,
        "seconds_rendered": round(seconds, 1),
        "ms_per_clip": round(1000 * analyse_s / clips, 1) if clips else None,
        "ms_per_video_s": round(1000 * analyse_s / seconds, 1) if seconds else None,
        "render_ms_per_clip": round(1000 * render_s / clips, 1) if clips else None,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "settings": {
            "size": list(args.size),
            "fps": args.fps,
            "sample_fps": PIPELINE_FPS,
            "angle_deg": args.angle,
            "tolerance_s": args.tolerance,
            "seed": args.seed,
            "scripts_per_photo": args.scripts_per_photo,
            "neutral_per_photo": args.neutral_per_photo,
            "neutral_s": args.neutral_s,
        },
    }
    if args.plots:
        plot(result, scripted.timing(), args.plots)
    emit(result, args.json)
    return result


def plot(result: dict, timing: list[float], out_dir: Path) -> list[Path]:
    """Per-kind detection rates (plain and mirrored) and a timing-error histogram."""
    plt = _pyplot()
    kinds = [k for k, v in result["per_kind"].items() if v.get("actions")]
    x = np.arange(len(kinds))
    fig, ax = plt.subplots(figsize=(7, 4))
    for off, key, label in (
        (-0.2, "detection_rate", "plain"),
        (0.2, "mirrored_detection_rate", "mirrored"),
    ):
        vals = [result["per_kind"][k][key] or 0.0 for k in kinds]
        ax.bar(x + off, vals, width=0.4, label=label)
    ax2 = ax.twinx()
    ax2.plot(x, [result["per_kind"][k]["false_rate"] for k in kinds], "k.", label="false / min")
    ax2.set_ylabel("false detections per minute")
    ax.set_xticks(x, kinds, rotation=30)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("detection rate")
    ax.legend(loc="lower left")
    ax2.legend(loc="lower right")
    ax.set_title(f"Challenge detection ({result['actions']} actions, {result['clips']} clips)")
    paths = [_save(fig, out_dir / "challenges_detection.png")]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist(timing, bins=np.arange(0, max([0.7, *timing]) + 0.05, 0.05))
    ax.set_xlabel("|detected peak - scripted peak| (s)")
    ax.set_ylabel("actions")
    ax.set_title(f"Peak timing error (n={len(timing)})")
    paths.append(_save(fig, out_dir / "challenges_timing.png"))
    return paths


if __name__ == "__main__":
    main()
