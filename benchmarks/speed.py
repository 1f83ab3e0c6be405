"""Speed of one verification, stage by stage, against a naive per-frame baseline.

    python -m benchmarks.speed --video ../shared/data/videos/talking_head_wda_1.mp4 \
        --reference frame:7.5 [--repeat 3]

``--reference`` is an image path or ``frame:<seconds>`` (a frame of the video itself).
``--synthetic SECONDS`` verifies instead a clip made from ``--video`` in a temporary folder
(deleted after): its frames scaled to ``--synthetic-side`` pixels square and played
forwards and backwards to the length asked, at 15 fps (MPEG-4 part 2 in MP4, as a phone
upload within the size limit); ``frame:<seconds>`` then refers to ``--video``.

Memory: ``peak_rss_mb`` is the process's peak resident memory, ``rss_before_mb`` its
resident memory after loading and the first call, so the difference is what the timed
calls added; ``frames_held_peak`` / ``held_mb_peak`` are the pixels the verification held
at once (:mod:`liveness.keep`; the bound is ``frames_held_bound``).
Model loading (``load_s``) and the first call (``warmup_s``) are reported apart; ``wall_s``
is the median end-to-end wall time of ``--repeat`` further calls and ``cpu_s`` their median
process CPU time (less sensitive to other load on the machine than wall time);
``decoder_cpu_s`` is the median CPU time of the decoder child processes of a call (each
forked from a zygote that has OpenCV loaded, :class:`liveness.decoders.Decoders`), and
``landmarker_graph_cpu_s`` the part of ``cpu_s`` spent in MediaPipe's graph threads (the
face landmarker's models; Linux only, else ``null``).
``--landmark-plan on|off`` landmarks a first pass and the frames where the eyes move
(:class:`~liveness.landmark_plan.LandmarkPlan`) or every sampled frame (default: the
library's, ``VerifierConfig.landmark_plan``); ``frames_landmarked`` says how many frames the
landmarker saw.

The naive baseline uses the same models with none of the pipeline's economies: every
decoded frame is detected (YuNet), landmarked (a fresh VIDEO-mode landmarker), aligned,
embedded and scored by the anti-spoofing pair (the landmarker on its own thread).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import emit, parent_parser, peak_rss_mb, progress, set_progress
from liveness import Verifier, VerifierConfig
from liveness.align import align_face
from liveness.keep import frame_bound
from liveness.landmark_plan import LandmarkPlan
from liveness.landmarks import FaceLandmarks
from liveness.video import Frame, frame_at


def synthetic_clip(source: Path, dest: Path, seconds: float, side: int, fps: float = 15.0):
    """Write ``dest`` (MP4): ``source``'s frames scaled to ``side`` x ``side``, played
    forwards then backwards until ``seconds`` long, at ``fps``. Returns ``dest``."""
    cap = cv2.VideoCapture(str(source))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    if not frames:
        raise ValueError(f"no frame in {source}")
    cycle = frames + frames[-2:0:-1] if len(frames) > 2 else frames
    out = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), fps, (side, side))
    try:
        for n in range(round(seconds * fps)):
            out.write(cv2.resize(cycle[n % len(cycle)], (side, side)))
    finally:
        out.release()
    return dest


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / (1024 * 1024)


def reference_image(spec: str, video: Path) -> np.ndarray | str:
    """An image path, or ``frame:<seconds>``: that frame of ``video``."""
    if not spec.startswith("frame:"):
        return spec
    return frame_at(video, spec.split(":", 1)[1])


def decoder_cpu_seconds(v: Verifier) -> float:
    """CPU time of the video decoders so far: the finished child processes of ours
    (fresh decoders) and what the children forked from the verifier's zygote reported
    (:class:`liveness.decoders.Decoders`; the zygote's own start is not counted)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + v.decoders.cpu_s


def graph_cpu_seconds() -> float | None:
    """CPU time so far of MediaPipe's graph threads (named ``drishti``), where the face
    landmarker's models run (``None`` without ``/proc``). These threads live as long as
    the pooled landmarkers, so the difference over a call is that call's landmarking."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if name.startswith("drishti"):
            parts = fields.split()
            total += (int(parts[11]) + int(parts[12])) / tick
    return total


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def naive(v: Verifier, video: Path) -> tuple[float, int]:
    """Every frame through every model; returns (wall seconds, frames).

    One landmarker tracks the whole video on its own thread (as in the pipeline, so that the
    baseline is not slowed by a tracker reset per frame); detection, alignment, embedding
    and PAD run on every frame in the calling thread.
    """
    lm = FaceLandmarks(v.runtime.path("face_landmarker"), workers=1)
    lm.warm_up()  # model loading is not part of either figure
    t0 = time.perf_counter()
    stream = lm.stream()
    try:
        cap = cv2.VideoCapture(str(video))
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        n = 0
        while True:
            ok, image = cap.read()
            if not ok:
                break
            stream.push(Frame(n, n / fps, image))
            faces = v.detector.detect(image)
            if faces:
                face = max(faces, key=lambda f: f.size)
                v.embedder.embed([align_face(image, face.points)])
                v.pad.live_probability(image, face.box)
            n += 1
        cap.release()
        stream.finish()
    except BaseException:
        stream.abort()
        raise
    finally:
        lm.close()
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("--video", type=Path, required=True)
    ap.add_argument("--reference", required=True, help="image path or frame:<seconds>")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    ap.add_argument(
        "--synthetic",
        type=float,
        metavar="SECONDS",
        help="verify a clip this long made from --video (see the module docstring)",
    )
    ap.add_argument("--synthetic-side", type=int, default=1280, help="its side, pixels")
    ap.add_argument(
        "--sample-fps",
        type=float,
        default=None,
        help="analysis rate (default: the library's, VerifierConfig.sample_fps)",
    )
    ap.add_argument(
        "--landmark-plan",
        choices=["on", "off"],
        default=None,
        help="landmark a first pass and where the eyes move, or every frame (default: the "
        "library's)",
    )
    ap.add_argument(
        "--face-workers",
        type=int,
        default=None,
        help="threads for the work after decoding (VerifierConfig.face_workers; 0: one "
        "step after the other; default: the library's)",
    )
    ap.add_argument(
        "--providers",
        nargs="+",
        metavar="SET",
        help="time each ONNX Runtime provider set instead (cpu cuda ...; see benchmarks.providers)",
    )
    ap.add_argument(
        "--landmark-delegate", choices=["cpu", "gpu"], default="cpu", help="with --providers"
    )
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    if args.providers:  # one timing per provider set, then stop
        return compare_providers(args)
    if args.synthetic:
        with tempfile.TemporaryDirectory(prefix="liveness-speed-") as tmp:
            clip = synthetic_clip(
                args.video, Path(tmp) / "synthetic.mp4", args.synthetic, args.synthetic_side
            )
            return timed(args, clip)
    return timed(args, args.video)


def timed(args, clip: Path) -> dict:
    """Load, warm up, time ``--repeat`` verifications of ``clip``; the JSON result."""
    t0 = time.perf_counter()
    cfg = (
        VerifierConfig() if args.sample_fps is None else VerifierConfig(sample_fps=args.sample_fps)
    )
    if args.landmark_plan is not None:
        cfg = replace(cfg, landmark_plan=LandmarkPlan() if args.landmark_plan == "on" else None)
    if args.face_workers is not None:
        cfg = replace(cfg, face_workers=args.face_workers)
    v = Verifier(args.model_dir, config=cfg)
    load_s = time.perf_counter() - t0
    try:
        ref = v.enroll(reference_image(args.reference, args.video))
        t1 = time.perf_counter()
        v.verify(clip, ref)
        warmup_s = time.perf_counter() - t1
        rss_before = rss_mb()
        walls, cpus, child_cpus, graph_cpus, results = [], [], [], [], []
        for _ in progress(range(args.repeat), args.repeat, "timing"):
            c0, k0, g0 = cpu_seconds(), decoder_cpu_seconds(v), graph_cpu_seconds()
            w0 = time.perf_counter()
            results.append(v.verify(clip, ref))
            walls.append(time.perf_counter() - w0)
            cpus.append(cpu_seconds() - c0)
            child_cpus.append(decoder_cpu_seconds(v) - k0)
            g1 = graph_cpu_seconds()
            graph_cpus.append(None if g0 is None or g1 is None else g1 - g0)
        k = int(np.argsort(walls)[len(walls) // 2])
        r = results[k]
        naive_wall, naive_frames = (None, None) if args.no_naive else naive(v, clip)
    finally:
        v.close()
    wall = statistics.median(walls)
    duration = r.video["duration_s"]
    result = {
        "benchmark": "speed",
        "video": str(args.video),
        "synthetic": None
        if not args.synthetic
        else {"seconds": args.synthetic, "side": args.synthetic_side, "fps": 15.0},
        "decision": r.decision,
        "wall_s": round(wall, 3),
        "cpu_s": round(statistics.median(cpus), 3),
        "decoder_cpu_s": round(statistics.median(child_cpus), 3),
        "landmarker_graph_cpu_s": None
        if None in graph_cpus
        else round(statistics.median(graph_cpus), 3),
        "load_s": round(load_s, 3),
        "warmup_s": round(warmup_s, 3),
        "video_s": round(duration, 3),
        "realtime_factor": round(wall / duration, 4),
        "stages_ms": r.timings_ms,
        "frames_decoded": r.video["frames_decoded"],
        "frames_analysed": r.video["frames_analysed"],
        "frames_landmarked": r.video.get("frames_landmarked"),
        "landmark_plan": None if cfg.landmark_plan is None else asdict(cfg.landmark_plan),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_mb": round(rss_before, 1),
        "frames_held_peak": r.video.get("frames_held_peak"),
        "held_mb_peak": r.video.get("held_mb_peak"),
        "frames_held_bound": frame_bound(
            sample_fps=cfg.sample_fps,
            best_k=cfg.best_k,
            keyframe_every_s=cfg.keyframe_every_s,
            max_duration_s=cfg.limits.max_duration_s,
            max_pending=cfg.max_pending_frames,
            **plan_bound(cfg),
        ),
        "naive_wall_s": None if naive_wall is None else round(naive_wall, 3),
        "naive_frames": naive_frames,
        "speedup_vs_naive": None if naive_wall is None else round(naive_wall / wall, 2),
        "sample_fps": cfg.sample_fps,
        "face_workers": cfg.face_workers,
        "repeat": args.repeat,
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    emit(result, args.json)
    return result


def plan_bound(cfg: VerifierConfig) -> dict:
    """The landmark plan's terms of :func:`liveness.keep.frame_bound` (none without one)."""
    plan = cfg.landmark_plan
    if plan is None:
        return {}
    return {
        "plan_hold": plan.hold_frames(cfg.sample_fps),
        "plan_spacing": plan.spacing(cfg.sample_fps),
    }


def compare_providers(args) -> dict:
    from benchmarks.providers import time_providers

    cfg = VerifierConfig(landmark_delegate=args.landmark_delegate)
    if args.sample_fps is not None:
        cfg = VerifierConfig(sample_fps=args.sample_fps, landmark_delegate=args.landmark_delegate)
    runs = time_providers(
        args.video,
        reference_image(args.reference, args.video),
        args.providers,
        model_dir=args.model_dir,
        config=cfg,
        repeat=args.repeat,
    )
    result = {"benchmark": "speed", "video": str(args.video), "providers": runs}
    result |= {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
