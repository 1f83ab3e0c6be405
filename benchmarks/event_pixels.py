"""Appearance check of challenge events (:mod:`liveness.appearance`): real against photo.

    python -m benchmarks.event_pixels [--attacks DIR] [--json out/event_pixels.json]

For every real live clip in ``$LIVENESS_DATA_DIR/videos`` and ``videos-wild`` (their
``labels.csv``), every print or still attack rendered by :mod:`benchmarks.render` from the
shared photos, and every generated print or replay in ``--attacks`` (default
``out/attacks/clips``, made by ``python -m benchmarks.attacks``), the landmarker's events
(blink, smile, open mouth) are found *without* the appearance check, and each event's
appearance ratio is measured. Reported per event kind: the ratios of real events and of
events read off attacks, the largest attack ratio, the share of real events under a set of
candidate thresholds, and per clip each event's ratio and whether the shipped
:class:`~liveness.appearance.AppearanceThresholds` keep it.

Real events include ones no person would call an action (speech opens the jaw; the
landmarker reads a squint as a blink); the check only has to keep the ones it can see in
the pixels. What matters is how many real *blinks* are lost (the motion gate and the blink
steps need them) against how many attack events survive.

Prints JSON last.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import emit, parent_parser, progress, set_progress
from liveness import Verifier, VerifierConfig
from liveness.actions import ACTIONS
from liveness.appearance import seen_in_pixels
from liveness.challenges import check_sequence, detect_actions
from liveness.geometry import consistency
from liveness.video import LAB_VIDEO_FORMATS, load_video

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = (
    "faces/deepface/img33.jpg",
    "faces/face_recognition/obama.jpg",
    "faces/face_recognition/biden.jpg",
)
CANDIDATES = (1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0)


def clip_events(verifier: Verifier, path: Path, steps: dict | None = None) -> list[dict]:
    """Every blink / smile / open-mouth event of a clip with its appearance ratio; when
    ``steps`` is a dict, it is filled with what a one-step challenge of each kind would
    get from the clip: ``completed``, ``flat`` (a head step whose window the 3D check
    calls flat: ``FLAT_FACE``) or ``no``."""
    v = load_video(path, sample_fps=verifier.config.sample_fps, limits=verifier.config.limits)
    meshes = verifier.landmarks.analyse(v.frames)
    raw = detect_actions(meshes)
    # one check per blink / smile / open mouth (head moves pass unchecked)
    kept, checks = seen_in_pixels(raw, v.frames, meshes, verifier.config.event_appearance)
    if steps is not None:
        for kind in ACTIONS:
            seq = check_sequence(kept, [kind])
            if not seq.completed:
                steps[kind] = "no"
                continue
            ev = seq.steps[0].event
            flat = kind.startswith(("turn_", "look_")) and (
                consistency(meshes, window=(ev.start - 0.5, ev.end + 0.5)).verdict == "flat"
            )
            steps[kind] = "flat" if flat else "completed"
    return [c.to_dict() for c in checks]


def rows_of(data: Path, attacks: Path, tmp: Path) -> list[tuple[str, str, Path]]:
    """(label, kind, path): the real live clips, rendered photo attacks, generated attacks."""
    out = []
    for folder in ("videos", "videos-wild"):
        for r in csv.DictReader(open(data / folder / "labels.csv", newline="")):
            if r["label"] == "live":
                out.append(("live", "live", data / folder / r["path"]))
    from benchmarks.render import render_attack

    for i, photo in enumerate(PHOTOS):
        if not (data / photo).exists():
            continue
        for kind in ("print", "still"):
            p = tmp / f"{i}_{kind}.mp4"
            render_attack(data / photo, kind, p, size=(360, 480), fps=15, seed=i, duration=4.0)
            out.append(("attack", f"render_{kind}", p))
    for p in sorted(attacks.glob("*.mp4")) if attacks.exists() else []:
        out.append(("attack", p.stem.split("__")[-1], p))
    return out


def summarise(per_clip: list[dict]) -> dict:
    by_kind: dict[str, dict[str, list[float]]] = {}
    for c in per_clip:
        for e in c["events"]:
            d = by_kind.setdefault(e["kind"], {"live": [], "attack": []})
            d[c["label"]].append(np.nan if e["ratio"] is None else e["ratio"])
    out = {}
    for kind, d in by_kind.items():
        live, att = np.array(d["live"]), np.array(d["attack"])
        out[kind] = {
            "live_events": len(live),
            "attack_events": len(att),
            "live_ratios": sorted(round(float(x), 2) for x in live[~np.isnan(live)]),
            "attack_ratios": sorted(round(float(x), 2) for x in att[~np.isnan(att)]),
            "live_unmeasured": int(np.isnan(live).sum()),
            "attack_unmeasured": int(np.isnan(att).sum()),
            "max_attack_ratio": float(np.nanmax(att)) if np.isfinite(att).any() else None,
            "live_kept_at": {
                str(t): float(np.mean(np.nan_to_num(live, nan=0.0) >= t)) if len(live) else None
                for t in CANDIDATES
            },
            "attack_kept_at": {
                str(t): int((np.nan_to_num(att, nan=0.0) >= t).sum()) for t in CANDIDATES
            },
        }
    return out


def one_step(per_clip: list[dict]) -> dict:
    """Per attack kind: the one-step challenges (kind of step -> clips) that the clips
    complete without a flat 3D verdict; the photo kinds (prints, stills) must have none."""
    out: dict[str, dict[str, int]] = {}
    for c in per_clip:
        if c["label"] != "attack":
            continue
        d = out.setdefault(c["kind"], {})
        for kind, got in c.get("one_step", {}).items():
            if got == "completed":
                d[kind] = d.get(kind, 0) + 1
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("--data", type=Path, default=None, help="default: $LIVENESS_DATA_DIR")
    ap.add_argument("--attacks", type=Path, default=ROOT / "out" / "attacks" / "clips")
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    data = args.data or Path(os.environ.get("LIVENESS_DATA_DIR", ROOT.parent / "shared" / "data"))
    per_clip = []
    # lab clips include AVI and MPEG-PS files, which a server would refuse
    config = VerifierConfig(limits=replace(VerifierConfig().limits, formats=LAB_VIDEO_FORMATS))
    with tempfile.TemporaryDirectory() as tmp, Verifier(args.model_dir, config=config) as v:
        rows = rows_of(data, args.attacks, Path(tmp))
        for label, kind, path in progress(rows, len(rows), "clips"):
            steps: dict = {}
            try:
                events = clip_events(v, path, steps)
            except Exception as exc:  # an unreadable clip is a row, not the end of the run
                per_clip.append(
                    {
                        "clip": path.name,
                        "label": label,
                        "kind": kind,
                        "error": repr(exc),
                        "events": [],
                    }
                )
                continue
            per_clip.append(
                {
                    "clip": str(path.name),
                    "label": label,
                    "kind": kind,
                    "events": events,
                    "one_step": steps,
                }
            )
    result = {
        "by_kind": summarise(per_clip),
        "one_step_completed_by_photos": one_step(per_clip),
        "clips": per_clip,
    }
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
