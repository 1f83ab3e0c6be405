"""Live sessions (liveness.stream) driven by scripted clients: latency per frame, and attacks.

    python -m benchmarks.stream [--video PATH] [--reference frame:2.0] [--fps 10]
                                [--tries 5] [--attacks] [--json out.json]

Each client plays frames from a clip into a :class:`~liveness.stream.LiveSession` at
``--fps`` on a simulated clock (frames are JPEG-encoded as a page would send them; the
session's own work per frame is timed with the real clock):

* ``responder``: a real live clip cut at the right moments. While idle it plays the clip's
  calm stretches (no detected action); when a prompt arrives it jumps to a moment
  ``reaction_s`` before an occurrence of the prompted action in the clip, plays it through,
  then goes back to calm frames. While the server shows a colour it adds the light a screen
  near the face would reflect: each face pixel times ``1 + strength * colour`` inside a soft
  ellipse around the face (the clip's own landmarks), the background untouched.
* ``responder_no_light``: the same frames without the light.
* ``universal``: a rendered clip of the photo doing every action in a row, played in a loop
  whatever the prompts (benchmarks.render).
* ``photo_animation``: the photo rendered doing the prompted action (the renderer's clip
  of every action, cut at the right moments like the responder), with and without light.
* ``early`` / ``late``: the responder doing each action before its prompt (right after the
  previous step) or ``late_s`` after it.

``per_frame_ms`` is the wall time of ``LiveSession.push`` per frame (decode, landmarks,
colour sampling, pacing); ``per_frame_cpu_ms`` the process CPU time it used (all threads),
which depends less on what else runs on the machine; ``load_average`` says how busy it was.

The summary reports per-frame latency (median, p95, max, ms), ``finish`` time, and for each
client the decisions and reason codes over ``--tries`` sessions (each with fresh random
pauses and colours).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import emit, parent_parser, peak_rss_mb, progress, set_progress
from liveness import Verifier
from liveness.challenges import ActionEvent, detect_actions
from liveness.stream import LiveSession, StreamConfig
from liveness.video import load_video

EVERY_ACTION = "blink,turn_left,turn_right,look_up,look_down,smile,open_mouth"


@dataclass
class Source:
    """A clip sampled at a fixed rate: frames, their times, the face ellipse per frame
    (centre x, y, half axes; ``None`` without a face), the actions detected, calm spans."""

    frames: list[np.ndarray]
    times: np.ndarray
    ellipses: list[tuple[float, float, float, float] | None]
    events: list[ActionEvent]
    calm: list[int]  # frame indices with no action within 0.4 s


def load_source(video, verifier: Verifier, fps: float = 10.0) -> Source:
    """Decode ``video`` (path or ``(t, image)`` frames) at ``fps`` and find its actions."""
    v = load_video(video, sample_fps=fps, fps=None if isinstance(video, (str, Path)) else fps)
    meshes = verifier.landmarks.analyse(v.frames)
    events = [e for e in detect_actions(meshes) if e.confidence >= 0.5]
    times = np.array([f.t for f in v.frames])
    ellipses = []
    for m in meshes:
        if m is None:
            ellipses.append(None)
            continue
        x1, y1, x2, y2 = m.box
        ellipses.append(((x1 + x2) / 2, (y1 + y2) / 2, 0.55 * (x2 - x1), 0.6 * (y2 - y1)))
    busy = np.zeros(len(times), bool)
    for e in events:
        busy |= (times >= e.start - 0.4) & (times <= e.end + 0.4)
    calm = [i for i in range(len(times)) if not busy[i] and meshes[i] is not None]
    return Source([f.image for f in v.frames], times, ellipses, events, calm)


def add_light(image: np.ndarray, ellipse, rgb, strength: float) -> np.ndarray:
    """The frame as lit by a near screen showing ``rgb``: face pixels times
    ``1 + strength * colour`` inside a soft ellipse (reflectance times the screen's light)."""
    if ellipse is None or rgb is None or strength <= 0:
        return image
    cx, cy, ax, ay = ellipse
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = ((xx - cx) / max(ax, 1)) ** 2 + ((yy - cy) / max(ay, 1)) ** 2
    weight = np.clip(1.5 - r, 0.0, 1.0)[..., None]  # 1 inside, fading over the rim
    gain = 1.0 + strength * weight * (np.array(rgb[::-1], np.float32) / 255.0)
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


class Client:
    """Plays a :class:`Source` into a session; subclasses choose frames on prompts."""

    def __init__(self, src: Source, *, light: float = 0.25, reaction_s: float = 0.5) -> None:
        self.src = src
        self.light = light
        self.reaction_s = reaction_s
        self.rgb = None
        self.queue: list[int] = []  # source frames to play next
        self.calm_i = 0
        self.used: set[int] = set()

    def next_calm(self) -> int:
        i = self.src.calm[self.calm_i % len(self.src.calm)]
        self.calm_i += 1
        return i

    def event_frames(self, kind: str, lead_s: float) -> list[int]:
        """Source frames from ``lead_s`` before an occurrence of ``kind`` to just after it."""
        evs = [e for e in self.src.events if e.kind == kind]
        if not evs:
            return []
        fresh = [e for e in evs if id(e) not in self.used] or evs
        e = fresh[0]
        self.used.add(id(e))
        t = self.src.times
        return [int(i) for i in np.flatnonzero((t >= e.start - lead_s) & (t <= e.end + 0.4))]

    def on_message(self, msg, session: LiveSession) -> None:
        if msg.type == "light":
            self.rgb = msg.rgb
        elif msg.type == "prompt":
            self.on_prompt(msg.action, session)
        elif msg.type == "seen":
            self.on_seen(session)

    def on_prompt(self, action: str, session: LiveSession) -> None:
        self.queue = self.event_frames(action, self.reaction_s)

    def on_seen(self, session: LiveSession) -> None:
        pass

    def frame(self) -> np.ndarray:
        i = self.queue.pop(0) if self.queue else self.next_calm()
        img = self.src.frames[i]
        if self.rgb is not None:
            img = add_light(img, self.src.ellipses[i], self.rgb, self.light)
        return img


class Early(Client):
    """Does each step's action before it is asked (it peeks at the session's steps)."""

    def on_prompt(self, action, session):
        self.queue = []

    def on_seen(self, session):
        k = sum(s.seen_at is not None for s in session.steps)
        if k < len(session.steps):
            self.queue = self.event_frames(session.steps[k].action, 0.1)

    def on_message(self, msg, session):
        super().on_message(msg, session)
        if msg.type == "light" and msg.rgb is None:  # the first step: straight after the light
            self.queue = self.event_frames(session.steps[0].action, 0.1)


class Late(Client):
    """Does each action ``late_s`` after its prompt."""

    late_s = 3.5

    def on_prompt(self, action, session):
        n = int(self.late_s * 10)
        self.queue = [self.next_calm() for _ in range(n)] + self.event_frames(action, 0.3)


class Loop(Client):
    """Plays the source in a loop, whatever the server says."""

    def __init__(self, src, **kw):
        super().__init__(src, light=0.0, **kw)
        self.k = 0

    def on_message(self, msg, session):
        pass

    def frame(self):
        img = self.src.frames[self.k % len(self.src.frames)]
        self.k += 1
        return img


def run_session(
    verifier: Verifier,
    reference,
    client: Client,
    *,
    actions,
    fps: float = 10.0,
    net_s: float = 0.1,
    seed: int | None = None,
    config: StreamConfig | None = None,
    jpeg_quality: int = 85,
):
    """One session on a simulated clock: frames every ``1/fps`` s, messages reaching the
    client ``net_s`` later. Returns ``(result, session)``."""
    rng = random.Random(seed) if seed is not None else None
    session = LiveSession(verifier, reference, actions=actions, config=config, rng=rng)
    t0 = 1000.0
    pending = [(t0 + net_s, m) for m in session.start(now=t0)]
    k = 0
    while not session.done and k < 60 * fps:
        now = t0 + (k + 1) / fps
        for _due, m in [p for p in pending if p[0] <= now]:
            client.on_message(m, session)
        pending = [p for p in pending if p[0] > now]
        ok, jpg = cv2.imencode(".jpg", client.frame(), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        cpu = time.process_time()
        pending += [(now + net_s, m) for m in session.push(jpg.tobytes(), now=now)]
        session.frame_cpu_ms = getattr(session, "frame_cpu_ms", [])
        session.frame_cpu_ms.append((time.process_time() - cpu) * 1000)
        k += 1
    result = session.finish(now=t0 + (k + 1) / fps)
    return result, session


def _summary(rows: list[dict]) -> dict:
    codes: dict[str, int] = {}
    for r in rows:
        for c in r["reasons"]:
            codes[c] = codes.get(c, 0) + 1
    decisions = {d: sum(r["decision"] == d for r in rows) for d in ("accept", "review", "reject")}
    return {"tries": len(rows), "decisions": decisions, "reason_counts": codes, "runs": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(parents=[parent_parser()], description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=None, help="default: $LIVENESS_DATA_DIR")
    p.add_argument(
        "--video",
        default="videos-wild/AlaaAElshafei__Head-Pose-Estimation__test_video.mp4",
        help="live clip to answer prompts from (relative to the data dir)",
    )
    p.add_argument("--reference", default="frame:2.0")
    p.add_argument("--actions", default="turn_right,turn_left")
    p.add_argument("--photo", default="faces/deepface/img33.jpg", help="photo for the attacks")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--tries", type=int, default=3)
    p.add_argument("--attacks", action="store_true", help="also run the attack clients")
    args = p.parse_args(argv)
    set_progress(False if args.no_progress else None)
    import os

    from benchmarks.render import render_live_frames
    from benchmarks.speed import reference_image

    data = Path(args.data_dir or os.environ.get("LIVENESS_DATA_DIR", "../shared/data"))
    video = data / args.video
    actions = args.actions.split(",")
    t = time.perf_counter()
    verifier = Verifier(args.model_dir)
    load_s = time.perf_counter() - t
    src = load_source(video, verifier, args.fps)
    ref = verifier.enroll(reference_image(args.reference, video))
    clients = {
        "responder": lambda: Client(src),
        "responder_no_light": lambda: Client(src, light=0.0),
    }
    if args.attacks:
        photo = data / args.photo
        clip = render_live_frames(photo, EVERY_ACTION, size=(480, 360), fps=args.fps, seed=7)
        fake = load_source(
            [(i / args.fps, f) for i, f in enumerate(clip.frames)], verifier, args.fps
        )
        photo_ref = verifier.enroll(photo)
        clients |= {
            "universal": lambda: Loop(fake),
            "photo_animation": lambda: Client(fake, light=0.0),
            "photo_animation_with_light": lambda: Client(fake),
            "early": lambda: Early(src),
            "late": lambda: Late(src),
        }
    out: dict = {"video": str(video), "actions": actions, "fps": args.fps, "load_s": load_s}
    frame_ms: list[float] = []
    frame_cpu_ms: list[float] = []
    finish_ms: list[float] = []
    jobs = [(name, k) for name in clients for k in range(args.tries)]
    rows: dict[str, list[dict]] = {}
    for name, _k in progress(jobs, desc="sessions"):
        client = clients[name]()
        is_photo = name.startswith(("universal", "photo"))
        t = time.perf_counter()
        result, session = run_session(
            verifier, photo_ref if is_photo else ref, client, actions=actions, fps=args.fps
        )
        finish_ms.append(result.timings_ms.get("total", 0.0))
        frame_ms += session.frame_ms
        frame_cpu_ms += session.frame_cpu_ms
        ch = result.liveness.challenge or {}
        rows.setdefault(name, []).append(
            {
                "decision": result.decision,
                "reasons": result.reason_codes,
                "details": [r.detail for r in result.reasons if r.detail],
                "outcome": ch.get("outcome"),
                "light_correlation": (ch.get("screen_light") or {}).get("correlation"),
                "light_face_gain": (ch.get("screen_light") or {}).get("face_gain"),
                "wall_s": round(time.perf_counter() - t, 2),
            }
        )
    out["clients"] = {name: _summary(r) for name, r in rows.items()}
    fm = np.array(frame_ms)
    out["per_frame_ms"] = {
        "frames": len(fm),
        "median": round(float(np.median(fm)), 1),
        "p95": round(float(np.percentile(fm, 95)), 1),
        "max": round(float(fm.max()), 1),
        "over_frame_interval": int((fm > 1000 / args.fps).sum()),
    }
    cm = np.array(frame_cpu_ms)
    out["per_frame_cpu_ms"] = {
        "median": round(float(np.median(cm)), 1),
        "p95": round(float(np.percentile(cm, 95)), 1),
        "max": round(float(cm.max()), 1),
    }
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out["finish_ms_median"] = round(statistics.median(finish_ms), 1)
    out["peak_rss_mb"] = peak_rss_mb()
    out["cpus"] = os.cpu_count()
    emit(out, args.json)
    verifier.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
