"""The whole pipeline against presentation attacks, per ISO/IEC 30107-3.

    python -m benchmarks.attacks [--fit] [--challenge] [--refresh] [--json out/attacks.json]

Bona fide: every live clip in ``$LIVENESS_DATA_DIR/videos`` and ``videos-wild`` (their
``labels.csv``), verified against a frame of the clip (the ``reference`` column, else the
last frame). Attacks: the shared replays and mask (verified against a frame of the live clip
of the same subject where there is one, else of their own), and clips made by
:mod:`benchmarks.attack_clips` from victims' live clips (every kind in
``attack_clips.KINDS``), verified against the victim's reference frame, so that the face
always matches and only liveness evidence can refuse them.

Each clip is verified once and its evidence (decision inputs, PAD score, 3D consistency,
screen cue, motion) cached in ``out/attacks/evidence.jsonl``; generated clips are cached in
``out/attacks/clips/``. ``--refresh`` recomputes everything (do it after a change to the
pipeline, e.g. a new PAD crop).

``--fit`` fits the fusion (:mod:`liveness.fusion`) by L2-regularised logistic regression on
the cached evidence, reports subject-wise cross-validated (leave-one-subject-out) APCER /
BPCER of the fused score, and writes ``out/attacks/fusion.json``; decisions are then also
recomputed from the cached evidence with that fusion (the same ``decide`` as ``verify``)
under ``"with_fusion"``. Copy the file to ``liveness/data/fusion.json`` to ship it only
when that report shows no more live clips refused or reviewed than ``"pipeline"``.

Reported, with and without a challenge (``--challenge``: every attack clip is verified
with a freshly drawn 3-step challenge it did not perform; bona fide figures with a
challenge need clips that perform it: ``tests/test_attacks_generated.py`` renders them):

* APCER per attack kind: attack clips accepted / attack clips; also the share rejected
  (not sent to review) and the reasons;
* BPCER: live clips not accepted (rejected or sent to review) / live clips, and the
  rejected share on its own;
* ACER = (max APCER over kinds + BPCER) / 2.

Prints JSON last.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.attack_clips import KINDS, load_victim, make_attack, write_clip
from benchmarks.common import emit, parent_parser, progress, set_progress
from liveness import Verifier, VerifierConfig
from liveness.decision import decide
from liveness.fusion import FEATURES, FusionParams, features, fused_score
from liveness.reasons import Reason, ReasonCode
from liveness.sessions import ChallengeGate, Keyring, MemorySessionStore
from liveness.video import LAB_VIDEO_FORMATS, frame_at

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "attacks"

# Victims of the generated attacks: live clips with a clear face (studio, webcam, phone).
VICTIMS = (
    "videos/talking_head_wda_2.mp4",
    "videos/talking_head_retalk_3.mp4",
    "videos/selfie_blinks.mp4",
    "videos-wild/rizkiarm__LipNet__lbbc2a.mpg",
    "videos-wild/Trainingdata-datamarket__Selfies-and-video-dataset__4.MOV",
    "videos-wild/hemantghuge__Face_Landmark_dlib__face.avi",
)
# Reasons ``decide`` adds itself (the rest are evidence found before it).
_DECIDED = {
    ReasonCode.FACE_MISMATCH,
    ReasonCode.MATCH_UNCERTAIN,
    ReasonCode.PRESENTATION_ATTACK_SUSPECTED,
    ReasonCode.LIVENESS_UNCERTAIN,
    ReasonCode.CHALLENGE_MISSING,
}


def subject_of(folder: str, row: dict) -> str:
    """Who is in a shared clip: the ``subject`` column, else the same-person groups noted in
    ``videos-wild/labels.csv`` (vendor set ids, GRID speakers), else the clip itself."""
    if row.get("subject"):
        return row["subject"]
    p = row["path"]
    for key in ("61dc1abd", "61dc1afa", "61dc1bc5"):
        if key in p or key in row.get("path_in_repo", ""):
            return key
    if "Selfies-and-video-dataset__7.mp4" in p:
        return "61dc1afa"
    if "swwp2s" in p or "pwij3p" in p:
        return "grid_pwij3p"
    return f"{folder}/{p}"


def shared_clips(data: Path) -> list[dict]:
    """Rows of both labels files: path (relative to ``data``), label, reference, subject."""
    rows = []
    for folder in ("videos", "videos-wild"):
        for r in csv.DictReader(open(data / folder / "labels.csv", newline="")):
            rows.append(
                {
                    "clip": f"{folder}/{r['path']}",
                    "label": r["label"],
                    "kind": r["label"] if r["label"] != "live" else "live",
                    "reference": (r.get("reference") or "frame:last").strip() or "frame:last",
                    "subject": subject_of(folder, r),
                    "source": "shared",
                }
            )
    live_by_subject = {r["subject"]: r for r in rows if r["label"] == "live"}
    for r in rows:
        if r["label"] != "live" and r["subject"] in live_by_subject:
            r["reference_clip"] = live_by_subject[r["subject"]]["clip"]
            r["reference"] = live_by_subject[r["subject"]]["reference"]
    return rows


def generated_clips(data: Path, rows: list[dict], verifier: Verifier) -> list[dict]:
    """Make (or reuse) every attack kind on every victim; rows like :func:`shared_clips`."""
    by_clip = {r["clip"]: r for r in rows}
    out = []
    for vi, victim in enumerate(VICTIMS):
        src = by_clip[victim]
        todo = [k for k in KINDS if not (OUT / "clips" / f"{Path(victim).stem}__{k}.mp4").exists()]
        vic = load_victim(data / victim, verifier.landmarks, seconds=4.0) if todo else None
        for j, kind in enumerate(KINDS):
            path = OUT / "clips" / f"{Path(victim).stem}__{kind}.mp4"
            if kind in todo:
                write_clip(make_attack(vic, kind, seed=100 * vi + j), vic.fps, path)
            out.append(
                {
                    "clip": str(path),
                    "label": "attack",
                    "kind": kind,
                    "reference": src["reference"],
                    "reference_clip": victim,
                    "subject": src["subject"],
                    "source": "generated",
                }
            )
    return out


def reference_image(row: dict, data: Path):
    clip = data / row.get("reference_clip", row["clip"])
    spec = row["reference"]
    return frame_at(clip, spec.split(":", 1)[1] if spec.startswith("frame:") else "last")


def evidence(result) -> dict:
    """What the decision and the fusion need from one verify result."""
    lv = result.liveness
    return {
        "decision": result.decision,
        "reasons": [r.to_dict() for r in result.reasons],
        "fmr": result.match.fmr_estimate,
        "pad": lv.model_score,
        "geometry": (lv.geometry or {}).get("verdict"),
        "geometry_ratio": (lv.geometry or {}).get("ratio"),
        "steps_geometry": [s.get("verdict") for s in (lv.geometry or {}).get("steps", [])],
        "screen": (lv.screen or {}).get("peakiness"),
        "motion": lv.temporal.get("expression_motion"),
        "blinks": lv.temporal.get("blinks"),
        "events": len(lv.temporal.get("actions", [])),
        "challenge": None if lv.challenge is None else lv.challenge.get("completed"),
        "ms": result.timings_ms.get("total"),
        # the rest of the record, for offline study of decision rules (no frames, no faces)
        "fps": result.video.get("fps"),
        "duration_s": result.video.get("duration_s"),
        "height": result.video.get("height"),
        "face_px": result.quality.get("median_face_px"),
        "brightness": result.quality.get("median_brightness"),
        "sharpness": result.quality.get("median_sharpness"),
        "per_frame": lv.per_frame,
        "geometry_full": lv.geometry,
        "temporal": lv.temporal,
    }


def run_all(
    rows: list[dict], data: Path, verifier: Verifier, cache: Path, refresh: bool, challenge: bool
) -> list[dict]:
    """Verify every row (or take it from ``cache``); rows gain an ``evidence`` dict."""
    done = {}
    if cache.exists() and not refresh:
        for line in cache.read_text().splitlines():
            d = json.loads(line)
            done[(d["clip"], d["challenge_mode"])] = d["evidence"]
    with cache.open("a" if not refresh else "w") as f:
        for r in progress(rows, len(rows), "verifying"):
            key = (r["clip"], challenge)
            if key not in done:
                clip = Path(r["clip"]) if r["source"] == "generated" else data / r["clip"]
                token = None
                if challenge:
                    token = verifier.challenges.issue(actions=3).token
                res = verifier.verify(clip, reference_image(r, data), challenge=token)
                done[key] = evidence(res)
                f.write(
                    json.dumps(
                        {"clip": r["clip"], "challenge_mode": challenge, "evidence": done[key]}
                    )
                    + "\n"
                )
                f.flush()
            r["evidence"] = done[key]
    return rows


_NEW = {ReasonCode.FLAT_FACE}


def redecide(
    ev: dict, params: FusionParams | None, policy, before: bool = False
) -> tuple[str, list[str], float]:
    """The decision ``verify`` would give with fusion ``params``, from cached evidence;
    ``before``: as before issue 9 (PAD score as the live score, no 3D or screen reasons)."""
    blocking = [
        Reason.of(ReasonCode(r["code"]), r["severity"], r.get("detail"), r["message"])
        for r in ev["reasons"]
        if not (ReasonCode(r["code"]) in _DECIDED and not r.get("detail"))
        and not (before and ReasonCode(r["code"]) in _NEW)
    ]
    live = None
    if ev["pad"] is not None:
        live = fused_score(params, ev["pad"], ev["geometry"], ev["screen"], ev["motion"])
    d = decide(policy, blocking=blocking, fmr=ev["fmr"], live=live, challenge_ok=ev["challenge"])
    return d.decision, [r.code.value for r in d.reasons], live if live is not None else math.nan


# --- fusion fit ---------------------------------------------------------------------------


def design(rows: list[dict], centre: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    x, y, groups = [], [], []
    for r in rows:
        ev = r["evidence"]
        if ev["pad"] is None:
            continue
        f = features(ev["pad"], ev["geometry"], ev["screen"], ev["motion"], centre)
        x.append([f[k] for k in FEATURES])
        y.append(1.0 if r["label"] == "live" else 0.0)
        groups.append(r["subject"])
    return np.array(x), np.array(y), groups


def logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """Weights ``[bias, w...]`` of an L2-regularised logistic regression (Newton steps);
    classes are weighted to count equally."""
    xb = np.c_[np.ones(len(x)), x]
    w = np.zeros(xb.shape[1])
    cw = np.where(y > 0.5, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1)) * len(y)
    reg = l2 * np.eye(len(w))
    reg[0, 0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -40, 40)))
        g = xb.T @ (cw * (p - y)) + reg @ w
        h = xb.T @ (xb * (cw * p * (1 - p))[:, None]) + reg + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def fit_fusion(rows: list[dict], policy) -> tuple[FusionParams, dict]:
    """Fit on all rows; leave-one-subject-out scores for the report."""
    live_screen = [
        r["evidence"]["screen"]
        for r in rows
        if r["label"] == "live" and r["evidence"]["screen"] is not None
    ]
    centre = float(np.median(live_screen)) if live_screen else 0.0
    x, y, groups = design(rows, centre)
    oof = np.zeros(len(y))
    for g in sorted(set(groups)):
        test = np.array([gg == g for gg in groups])
        w = logistic(x[~test], y[~test])
        oof[test] = 1 / (1 + np.exp(-(np.c_[np.ones(test.sum()), x[test]] @ w)))
    w = logistic(x, y)
    params = FusionParams(
        float(w[0]),
        {k: float(v) for k, v in zip(FEATURES, w[1:], strict=True)},
        centre,
        source=f"python -m benchmarks.attacks --fit: {int(y.sum())} live, "
        f"{int((1 - y).sum())} attack clips, {len(set(groups))} subjects",
    )
    cv = {
        "subjects": len(set(groups)),
        "live": int(y.sum()),
        "attacks": int((1 - y).sum()),
        "oof_bpcer_at_live_reject": float(np.mean(oof[y > 0.5] < policy.live_reject)),
        "oof_apcer_at_live_reject": float(np.mean(oof[y < 0.5] >= policy.live_reject)),
        "oof_bpcer_at_live_accept": float(np.mean(oof[y > 0.5] < policy.live_accept)),
        "oof_apcer_at_live_accept": float(np.mean(oof[y < 0.5] >= policy.live_accept)),
    }
    return params, cv


def report(rows: list[dict], params, policy, before: bool = False) -> dict:
    per_kind: dict[str, Counter] = defaultdict(Counter)
    reasons: dict[str, Counter] = defaultdict(Counter)
    live_rows = []
    for r in rows:
        decision, codes, live = redecide(r["evidence"], params, policy, before)
        r["decision"], r["live"] = decision, live
        per_kind[r["kind"]][decision] += 1
        reasons[r["kind"]].update(codes)
        if r["label"] == "live":
            live_rows.append(r)
    kinds = {}
    for kind, c in per_kind.items():
        n = sum(c.values())
        if kind == "live":
            continue
        kinds[kind] = {
            "clips": n,
            "apcer": c["accept"] / n,
            "rejected": c["reject"] / n,
            "review": c["review"] / n,
            "reasons": dict(reasons[kind].most_common()),
        }
    c = per_kind["live"]
    n = max(sum(c.values()), 1)
    bpcer = (c["review"] + c["reject"]) / n
    worst = max((k["apcer"] for k in kinds.values()), default=0.0)
    return {
        "apcer_per_kind": kinds,
        "bona_fide": {
            "clips": n,
            "bpcer_not_accepted": bpcer,
            "rejected": c["reject"] / n,
            "decisions": dict(c),
            "reasons": dict(reasons["live"].most_common()),
            "not_accepted": [r["clip"] for r in live_rows if r["decision"] != "accept"],
        },
        "acer": (worst + bpcer) / 2,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("--data", type=Path, default=None, help="default: $LIVENESS_DATA_DIR")
    ap.add_argument("--fit", action="store_true", help="fit and write liveness/data/fusion.json")
    ap.add_argument("--challenge", action="store_true", help="attacks get a fresh challenge")
    ap.add_argument("--refresh", action="store_true", help="recompute the cached evidence")
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    import os

    data = args.data or Path(os.environ.get("LIVENESS_DATA_DIR", ROOT.parent / "shared" / "data"))
    OUT.mkdir(parents=True, exist_ok=True)
    gate = ChallengeGate(Keyring.single(os.urandom(32)), MemorySessionStore())
    # lab clips include AVI and MPEG-PS files, which a server would refuse
    config = VerifierConfig(limits=replace(VerifierConfig().limits, formats=LAB_VIDEO_FORMATS))
    with Verifier(args.model_dir, challenges=gate, config=config) as v:
        rows = shared_clips(data)
        rows = rows + generated_clips(data, rows, v)
        if args.challenge:
            rows = [r for r in rows if r["label"] != "live"]
        rows = run_all(rows, data, v, OUT / "evidence.jsonl", args.refresh, args.challenge)
        policy = v.config.policy
    result: dict = {"challenge": args.challenge}
    fused: dict = {}
    if args.fit:
        params, cv = fit_fusion(rows, policy)
        (OUT / "fusion.json").write_text(json.dumps(params.to_dict(), indent=1) + "\n")
        result["fit"] = cv | {"params": params.to_dict()}
        result["with_fusion"] = report(rows, params, policy)
        fused = {r["clip"]: (r["decision"], r["live"]) for r in rows}
    result["before"] = report(rows, None, policy, before=True)
    before = {r["clip"]: r["decision"] for r in rows}
    result["pipeline"] = report(rows, v.fusion, policy)
    result["live_clips"] = {
        r["clip"]: {
            "before": before[r["clip"]],
            "after": r["decision"],
            "with_fusion": fused.get(r["clip"], (None, None))[0],
            "pad": r["evidence"]["pad"],
            "fused": fused.get(r["clip"], (None, None))[1],
            "geometry": r["evidence"]["geometry"],
            "screen": r["evidence"]["screen"],
        }
        for r in rows
        if r["label"] == "live"
    }
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
