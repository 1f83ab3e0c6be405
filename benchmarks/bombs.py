"""Input bombs of issue 12, generated on the fly, and their cost: peak memory, time, outcome.

    python -m benchmarks.bombs [--out DIR] [--only NAME,...]
    python -m benchmarks.bombs --budget CLIP...    # memory of real verifications

Each input is loaded in a fresh child process (``load_image`` or ``load_video`` with the
default limits) and the child reports its outcome, wall time, its own peak RSS (``VmHWM``)
and the decoder process's peak RSS where there is one (code without a decoder process
decodes in the child itself). One JSON object is printed. Run it with
``PYTHONPATH`` pointing at another checkout to measure that code on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

# -- generators ---------------------------------------------------------------------------------


def png_zero_bomb(width: int, height: int) -> bytes:
    """A valid ``width`` x ``height`` RGB PNG of zeros (compresses about 1000:1)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    comp = zlib.compressobj(9)
    row = b"\0" * (width * 3 + 1)
    parts = []
    for _ in range(height):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = b"".join(parts)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _uint(v: int) -> bytes:
    return v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")


def _el(eid: int, payload: bytes) -> bytes:
    """An EBML element with an 8-byte size."""
    return _uint(eid) + b"\x01" + len(payload).to_bytes(7, "big") + payload


def mkv_mjpeg(frames: list[bytes], width: int, height: int, fps: float = 30.0) -> bytes:
    """A Matroska file with one MJPEG track whose header says ``width`` x ``height`` and
    whose frames are the given JPEG files (each may have its own size)."""
    header = _el(
        0x1A45DFA3,
        _el(0x4286, _uint(1))
        + _el(0x42F7, _uint(1))
        + _el(0x42F2, _uint(4))
        + _el(0x42F3, _uint(8))
        + _el(0x4282, b"matroska")
        + _el(0x4287, _uint(4))
        + _el(0x4285, _uint(2)),
    )
    info = _el(0x1549A966, _el(0x2AD7B1, _uint(1_000_000)) + _el(0x4D80, b"x") + _el(0x5741, b"x"))
    video = _el(0xE0, _el(0xB0, _uint(width)) + _el(0xBA, _uint(height)))
    track = _el(
        0xAE,
        _el(0xD7, _uint(1))
        + _el(0x73C5, _uint(1))
        + _el(0x83, _uint(1))
        + _el(0x86, b"V_MJPEG")
        + video,
    )
    tracks = _el(0x1654AE6B, track)
    clusters = b""
    per_cluster = 100  # block times are int16 milliseconds from the cluster's time
    for start in range(0, len(frames), per_cluster):
        t0 = round(start * 1000 / fps)
        blocks = b""
        for i, jpeg in enumerate(frames[start : start + per_cluster], start):
            rel = round(i * 1000 / fps) - t0
            blocks += _el(0xA3, b"\x81" + struct.pack(">hB", rel, 0x80) + jpeg)
        clusters += _el(0x1F43B675, _el(0xE7, _uint(t0)) + blocks)
    return header + _el(0x18538067, info + tracks + clusters)


def jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def hidden_frames_mkv(small: int = 60, big_side: int = 16000, every: int = 2) -> bytes:
    """320x240 frames declared and shown at the sampled instants, with ``big_side``-square
    frames in between (frame indices ``1, 1 + every, ...`` of the first ``small``)."""
    little = jpeg(np.full((240, 320, 3), 100, np.uint8))
    big = jpeg(np.zeros((big_side, big_side, 3), np.uint8), quality=10)
    frames = [big if i % every == 1 else little for i in range(small)]
    return mkv_mjpeg(frames, 320, 240)


def long_mjpeg_mkv(seconds: float = 59.0, side: int = 1280, fps: float = 30.0) -> bytes:
    """A long, sharp-enough MJPEG clip at ``side`` x ``side``: small on disk, large decoded."""
    frames = []
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (side // 16, side // 16, 3), np.uint8)
    img = cv2.resize(base, (side, side), interpolation=cv2.INTER_NEAREST)
    frame = jpeg(img, quality=30)
    frames = [frame] * int(seconds * fps)
    return mkv_mjpeg(frames, side, side, fps)


# -- measurement --------------------------------------------------------------------------------

CHILD = r"""
import json, sys, time
from liveness.video import load_image, load_video

def hwm():  # this process's own peak RSS (ru_maxrss is inherited across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024

kind, path = sys.argv[1], sys.argv[2]
before = hwm()
t = time.perf_counter()
decoder = None
try:
    out = (load_image if kind == "image" else load_video)(path)
    decoder = getattr(out, "decoder_peak_rss", None)
    outcome = "accepted"
except Exception as e:
    decoder = getattr(e, "decoder_peak_rss", None)
    outcome = type(e).__name__ + ": " + str(e)[:160]
print(json.dumps({
    "outcome": outcome,
    "seconds": round(time.perf_counter() - t, 2),
    "peak_rss_mb": hwm(),
    "rss_after_imports_mb": before,
    "decoder_peak_rss_mb": None if decoder is None else round(decoder / 2**20),
}))
"""

BOMBS = {
    "png_30000x30000": ("image", ".png", lambda: png_zero_bomb(30000, 30000)),
    "mjpeg_59s_1280x1280": ("video", ".mkv", long_mjpeg_mkv),
    "hidden_16000x16000_frames": ("video", ".mkv", hidden_frames_mkv),
    # Names a clip already on the server, next to the upload (FFmpeg's concat demuxer
    # refuses absolute paths by default, not relative ones).
    "ffconcat_48_bytes": ("video", ".webm", lambda: b"ffconcat version 1.0\nfile 'clip.mp4'\n"),
    "animated_gif": ("video", ".webm", lambda: _gif()),
}
DATA_CLIP = (
    Path(os.environ.get("LIVENESS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared/data"))
    / "videos/talking_head_wda_1.mp4"
)


def _gif() -> bytes:
    from PIL import Image

    frames = [Image.new("RGB", (64, 64), (i * 20, 0, 0)) for i in range(10)]
    path = Path(tempfile.mkdtemp()) / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path.read_bytes()


def measure(kind: str, path: Path, timeout: float = 600, env: dict | None = None) -> dict:
    """Load ``path`` in a fresh process (with ``env``, default this one's environment)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if out.returncode != 0:
        return {"outcome": f"child exited {out.returncode}", "stderr": out.stderr[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


BUDGET = r"""
import json, sys, time
from liveness import Verifier
from liveness.video import frame_at

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) // 1024

ref_clip, clips = sys.argv[1], sys.argv[2:]
v = Verifier()
ref = v.enroll(frame_at(ref_clip, 7.5))
v.verify(ref_clip.replace("talking_head_wda_1", "blink_2x_tiny"), ref)  # warm-up, tiny clip
out = {"rss_after_models_mb": status("VmRSS:")}
for clip in clips:
    base = status("VmHWM:")
    t = time.perf_counter()
    r = v.verify(clip, ref)
    out[clip] = {"seconds": round(time.perf_counter() - t, 2),
                 "peak_rss_increase_mb": status("VmHWM:") - base, "decision": r.decision}
print(json.dumps(out))
"""


def budget(clips: list[Path]) -> dict:
    """Peak RSS added by one verification of each clip (after a warm-up), in a fresh
    process with the real models."""
    ref = DATA_CLIP
    out = subprocess.run(
        [sys.executable, "-c", BUDGET, str(ref), *map(str, clips)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="keep the generated inputs here")
    ap.add_argument("--only", help="comma-separated names of bombs: " + ", ".join(BOMBS))
    ap.add_argument(
        "--budget",
        nargs="+",
        type=Path,
        metavar="CLIP",
        help="instead: the peak memory one verification of each clip adds",
    )
    args = ap.parse_args(argv)
    if args.budget:
        report = budget(args.budget)
        print(json.dumps(report, indent=1))
        return report
    names = args.only.split(",") if args.only else list(BOMBS)
    folder = args.out or Path(tempfile.mkdtemp(prefix="bombs-"))
    folder.mkdir(parents=True, exist_ok=True)
    import liveness

    report = {"code": str(Path(liveness.__file__).parent), "bombs": {}}
    for name in names:
        kind, suffix, make = BOMBS[name]
        path = folder / f"{name}{suffix}"
        if not path.exists():
            path.write_bytes(make())
        if name.startswith("ffconcat") and not (folder / "clip.mp4").exists():
            (folder / "clip.mp4").write_bytes(DATA_CLIP.read_bytes())
        result = measure(kind, path)
        result["input_bytes"] = path.stat().st_size
        report["bombs"][name] = result
        print(name, result, file=sys.stderr)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
