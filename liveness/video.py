"""Video input: a path, bytes, or frames with timestamps, decoded within limits.

The pipeline analyses a sample of the frames (``sample_fps``), not all of them: a selfie
video at 30 fps carries little more about a face than the same video at 15 fps, and the
landmark model costs the same for every frame it sees.

Files and bytes are untrusted (issue 12). Before FFmpeg sees them their first bytes must
name an allowed container (:func:`sniff_video`: WebM/Matroska or MP4 by default); they are
decoded in a child process (:mod:`liveness._decoder`) with an address-space, CPU and
wall-time limit, FFmpeg restricted to the ``file`` protocol and the allowed demuxers, and
refused as soon as decoding costs more memory than frames of the declared size can; the
frames kept for analysis have a byte budget; rotation comes from the MP4 matrix, parsed
here (:func:`mp4_rotation`). Reference images are checked from their header
(:func:`sniff_image`, :func:`image_size`) before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .decoders import Decoders, hand_over, spawn_decoder
from .errors import InputError, VideoDecodeError, VideoLimitError

# The same digest a server computes with sessions.video_digest, so that the two agree.
from .sessions import video_digest


@dataclass(frozen=True)
class VideoLimits:
    """Limits checked before and while decoding; going over one raises VideoLimitError."""

    max_bytes: int = 200 * 1024 * 1024
    max_duration_s: float = 60.0
    max_pixels: int = 3840 * 2160
    max_frames: int = 3600
    min_frames: int = 3
    # frames larger than this (long side) are scaled down for analysis: faces in a selfie
    # video are large, and full 4K frames would only cost memory.
    analysis_long_side: int = 1280
    # Container formats accepted, recognised by their first bytes (see sniff_video): WebM /
    # Matroska and MP4 / QuickTime ("ftyp") are what browsers and phones record. Lab data
    # in other formats can be allowed here ("avi", "mpeg-ps"); anything else (ffconcat and
    # playlists, GIF, raw streams) is refused before FFmpeg sees it.
    formats: frozenset[str] = frozenset({"matroska", "mp4"})
    # The decoder runs in a child process with this much address space (RLIMIT_AS), this
    # much CPU time and this much wall time. The child's own baseline (Python, NumPy,
    # OpenCV, FFmpeg threads) is about 770 MB of address space and 110 MB resident.
    decoder_memory_bytes: int = 2048 * 1024 * 1024
    decoder_wall_s: float = 120.0
    decoder_cpu_s: float = 120.0
    # Decoded frames kept for analysis, in bytes of BGR pixels: 768 MiB holds 20 s at 15
    # fps of 1280x720 frames (2.76 MB each), far more than a recovery clip needs. Only for
    # callers that keep every frame (load_video's default); the Verifier keeps a bounded
    # few (liveness.keep) and does not need it.
    max_kept_bytes: int = 768 * 1024 * 1024


# What benchmarks on lab data sets may allow on top of what a server accepts: AVI and
# MPEG program streams (Replay-Attack and older capture rigs). Never for uploads.
LAB_VIDEO_FORMATS = frozenset({"matroska", "mp4", "avi", "mpeg-ps"})


@dataclass(frozen=True)
class ImageLimits:
    """Limits on a reference image, checked from its header before any pixel is decoded."""

    max_bytes: int = 20 * 1024 * 1024
    # 40 MP: every phone camera up to 8000x5000; 120 MB of BGR pixels once decoded.
    max_pixels: int = 40_000_000
    formats: frozenset[str] = frozenset({"jpeg", "png", "webp"})


@dataclass(frozen=True)
class Frame:
    """One analysed frame: its index in the decoded stream, its time and its BGR pixels."""

    index: int
    t: float
    image: np.ndarray = field(repr=False)


@dataclass
class Video:
    """A decoded, sampled video."""

    frames: list[Frame]
    fps: float
    duration_s: float
    width: int
    height: int
    frames_decoded: int
    rotation: int = 0
    sha256: str | None = None  # digest of the encoded bytes, when there were bytes
    # Set when the container's rotation metadata was not a quarter-turn and was ignored.
    rotation_problem: str | None = None
    # Peak resident memory of the decoder child process, in bytes (files and bytes only).
    decoder_peak_rss: int | None = None
    # CPU time of the decoder child (user + system, s), as it reported it.
    decoder_cpu_s: float | None = None


VideoSource = str | os.PathLike | bytes | bytearray | memoryview | Iterable


def load_video(
    source: VideoSource,
    *,
    sample_fps: float = 15.0,
    limits: VideoLimits | None = None,
    fps: float | None = None,
    on_frame: Callable[[Frame], None] | None = None,
    keep_frames: bool = True,
    decoders: Decoders | None = None,
) -> Video:
    """Decode ``source`` and keep frames at about ``sample_fps``.

    Parameters
    ----------
    source : a file path, the encoded bytes of a video file, or an iterable of frames.
        Frames are ``(t_seconds, image)`` pairs or bare images (then ``fps`` is required);
        images are ``uint8`` BGR ``(H, W, 3)`` or grey ``(H, W)``. They are copied, never
        modified.
    sample_fps : analysis rate; ``None`` or ``0`` keeps every frame.
    limits : :class:`VideoLimits`.
    fps : frame rate of bare frames.
    on_frame : called with each kept frame as soon as it is decoded, so that analysis can
        run while decoding goes on.
    keep_frames : ``False``: ``Video.frames`` holds each sampled frame without its pixels
        (an ``(H, W, 0)`` array), for a caller whose ``on_frame`` keeps what it needs
        (:class:`liveness.keep.FrameKeeper`); ``max_kept_bytes`` then does not apply.
    decoders : a :class:`~liveness.decoders.Decoders` whose zygote forks the decoder
        process (files and bytes only); without it each call starts a fresh interpreter.

    Raises
    ------
    InputError : wrong type; VideoDecodeError : unreadable or empty; VideoLimitError : a limit.
    """
    limits = limits or VideoLimits()
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise VideoDecodeError("the video is empty (0 bytes)")
        if len(data) > limits.max_bytes:
            raise VideoLimitError(
                f"the video is {len(data)} bytes, over the limit of {limits.max_bytes}"
            )
        # OpenCV decodes from files only, so the bytes go to a private temporary file that
        # is deleted straight after decoding (in a 0700 folder of its own, file 0600).
        folder = tempfile.mkdtemp(prefix="liveness-")
        tmp = os.path.join(folder, "upload.video")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            video = _decode_file(Path(tmp), sample_fps, limits, on_frame, keep_frames, decoders)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.rmdir(folder)
        video.sha256 = video_digest(data)
        return video
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise VideoDecodeError(f"video file {path} does not exist")
        size = path.stat().st_size
        if size == 0:
            raise VideoDecodeError(f"video file {path} is empty (0 bytes)")
        if size > limits.max_bytes:
            raise VideoLimitError(
                f"video file {path} is {size} bytes, over the limit of {limits.max_bytes}"
            )
        video = _decode_file(path, sample_fps, limits, on_frame, keep_frames, decoders)
        video.sha256 = video_digest(path)
        return video
    if isinstance(source, np.ndarray):
        raise InputError("a single array is not a video: pass a list of frames, a path or bytes")
    if isinstance(source, Iterable):
        return _from_frames(source, sample_fps, limits, fps, on_frame, keep_frames)
    raise InputError(
        f"unsupported video input of type {type(source).__name__}: pass a path, bytes, "
        "or an iterable of (t, image) frames"
    )


def _shrink(image: np.ndarray, long_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= long_side:
        return image
    s = long_side / max(h, w)
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


class Sampler:
    """Keeps a frame when its time reaches the next sampling instant (the decoder's rule;
    also the landmark plan's first pass, :class:`liveness.landmark_plan.FirstPass`)."""

    def __init__(self, sample_fps: float | None) -> None:
        self.step = 1.0 / sample_fps if sample_fps else 0.0
        self.next_t: float | None = None

    def keep(self, t: float) -> bool:
        if self.next_t is None:
            self.next_t = t + self.step
            return True
        if t + 1e-6 < self.next_t:
            return False
        # Advance from the planned instant, not from t, so the rate does not drift.
        self.next_t = max(self.next_t + self.step, t + self.step / 2)
        return True


# -- formats --------------------------------------------------------------------------------

# What the first bytes say. Only the formats in VideoLimits.formats / ImageLimits.formats
# are decoded; the others are named so the refusal can say what the file was.
_GIF = (b"GIF87a", b"GIF89a")


def sniff_video(head: bytes) -> str | None:
    """The container format named by a file's first 16 bytes: ``"matroska"`` (WebM and
    Matroska: EBML magic ``1A 45 DF A3``), ``"mp4"`` (MP4, MOV, 3GP: a ``ftyp`` box first),
    ``"avi"``, ``"mpeg-ps"``, ``"gif"``, ``"ffconcat"``, ``"playlist"``, or None."""
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpeg-ps"
    if head.startswith(_GIF):
        return "gif"
    text = head.lstrip()
    if text.startswith(b"ffconcat") or text.startswith(b"file "):
        return "ffconcat"
    if text.startswith(b"#EXTM3U") or text.startswith(b"[playlist]"):
        return "playlist"
    return None


def sniff_image(head: bytes) -> str | None:
    """``"jpeg"``, ``"png"``, ``"webp"``, ``"gif"``, ``"bmp"``, ``"tiff"`` or None, from the
    first 16 bytes."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(_GIF):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


# FFmpeg demuxers each allowed format needs (format_whitelist), by sniff_video's name.
_DEMUXERS = {
    "matroska": "matroska,webm",
    "mp4": "mov,mp4,m4a,3gp,3g2,mj2",
    "avi": "avi",
    "mpeg-ps": "mpeg",
}


def _check_video_format(path: Path, limits: VideoLimits) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    kind = sniff_video(head)
    # Only formats with a known FFmpeg demuxer can be allowed (an empty demuxer whitelist
    # would let FFmpeg pick any, the concat demuxer included).
    if kind is None or kind not in limits.formats or kind not in _DEMUXERS:
        what = f"a {kind} file" if kind else "not a video format we accept"
        raise VideoDecodeError(
            f"{path.name}: {what}; send a WebM or MP4 recording"
            + (f" (allowed here: {', '.join(sorted(limits.formats))})" if kind else "")
        )
    return kind


# -- rotation --------------------------------------------------------------------------------

# The track header's matrix (a, b, c, d in 16.16 fixed point) of each rotation that is a
# multiple of 90 degrees, and the clockwise turn that shows the frame upright.
_ROTATIONS = {(1, 0, 0, 1): 0, (0, 1, -1, 0): 90, (-1, 0, 0, -1): 180, (0, -1, 1, 0): 270}
_CV_ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
_MAX_MOOV = 64 * 1024 * 1024


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, payload end) of the ISO-BMFF boxes in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        head = 8
        if size == 1 and pos + 16 <= end:
            size, head = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield kind, pos + head, pos + size
        pos += size


def _matrix_rotation(tkhd: bytes) -> int | None:
    """The clockwise rotation a ``tkhd`` payload's matrix asks for, or None if the matrix
    is anything but a rotation by a multiple of 90 degrees (mirrors, zeros, shears)."""
    if not tkhd:
        return None
    offset = 4 + (32 if tkhd[0] == 1 else 20) + 16  # version/flags, times..duration, layer..
    if len(tkhd) < offset + 36:
        return None
    a, b, _u, c, d = struct.unpack(">iiiii", tkhd[offset : offset + 20])
    key = tuple(v / 65536 for v in (a, b, c, d))
    if not all(float(v).is_integer() for v in key):
        return None
    return _ROTATIONS.get(tuple(int(v) for v in key))


def mp4_rotation(path: str | os.PathLike) -> tuple[int, str | None]:
    """``(degrees, problem)``: the clockwise turn (0, 90, 180 or 270) that shows an MP4's
    video track upright, read from its track header matrix by this parser rather than by
    FFmpeg. A matrix that is not a pure quarter-turn rotation (a mirror, all zeros) is
    ignored: ``(0, "rotation matrix ignored: ...")``. Other files: ``(0, None)``."""
    try:
        with open(path, "rb") as f:
            data = b""
            while True:
                head = f.read(16)
                if len(head) < 8:
                    return 0, None
                size, kind = struct.unpack(">I4s", head[:8])
                hdr = 8
                if size == 1 and len(head) == 16:
                    size, hdr = struct.unpack(">Q", head[8:16])[0], 16
                if size < hdr and size != 0:
                    return 0, None
                if kind == b"moov":
                    if size == 0 or size > _MAX_MOOV:
                        return 0, "rotation not read: moov box too large"
                    f.seek(-len(head) + hdr, 1)
                    data = f.read(size - hdr)
                    break
                if size == 0:
                    return 0, None
                f.seek(size - len(head), 1)
    except OSError:
        return 0, None
    for kind, s0, e0 in _boxes(data, 0, len(data)):
        if kind != b"trak":
            continue
        tkhd, handler = b"", b""
        for k1, s1, e1 in _boxes(data, s0, e0):
            if k1 == b"tkhd":
                tkhd = data[s1:e1]
            elif k1 == b"mdia":
                for k2, s2, e2 in _boxes(data, s1, e1):
                    if k2 == b"hdlr" and e2 - s2 >= 12:
                        handler = data[s2 + 8 : s2 + 12]
        if handler != b"vide":
            continue
        rotation = _matrix_rotation(tkhd)
        if rotation is None:
            return 0, "rotation matrix ignored: not a quarter-turn rotation"
        return rotation, None
    return 0, None


# -- decoding in a child process -------------------------------------------------------------

_FRAME_HEADER = struct.Struct("<IdII")
_LENGTH = struct.Struct("<I")


def _read_image(stream, h: int, w: int) -> np.ndarray:
    """An ``(h, w, 3)`` uint8 image read from ``stream`` straight into its own (writable)
    memory: one copy out of the pipe instead of a bytes object and a copy of it."""
    image = np.empty((h, w, 3), np.uint8)
    view = memoryview(image).cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            raise EOFError
        got += n
    return image


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError
    return data


def _decoder_env(limits: VideoLimits) -> dict[str, str]:
    """The decoder child's whole environment: FFmpeg held to the ``file`` protocol and the
    demuxers of ``limits.formats``, quiet logs, one OpenMP thread."""
    demuxers = ",".join(_DEMUXERS[f] for f in sorted(limits.formats) if f in _DEMUXERS)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "OPENCV_FFMPEG_CAPTURE_OPTIONS": f"protocol_whitelist;file|format_whitelist;{demuxers}"
        "|threads;2",
        "OPENCV_LOG_LEVEL": "ERROR",
        "OPENCV_FFMPEG_LOGLEVEL": "-8",
        "OMP_NUM_THREADS": "1",
    }


def _decode_file(
    path: Path,
    sample_fps: float | None,
    limits: VideoLimits,
    on_frame: Callable[[Frame], None] | None = None,
    keep_frames: bool = True,
    decoders: Decoders | None = None,
) -> Video:
    """Decode ``path`` in a child process within ``limits`` (see :mod:`liveness._decoder`)."""
    kind = _check_video_format(path, limits)
    rotation, rotation_problem = mp4_rotation(path) if kind == "mp4" else (0, None)
    env = _decoder_env(limits)
    args = {
        "path": str(Path(path).resolve()),
        "sample_fps": sample_fps or 0.0,
        "max_pixels": limits.max_pixels,
        "max_duration_s": limits.max_duration_s,
        "max_frames": limits.max_frames,
        "long_side": limits.analysis_long_side,
        "memory_bytes": limits.decoder_memory_bytes,
        "cpu_seconds": limits.decoder_cpu_s,
    }
    request = json.dumps(args).encode() + b"\n"
    proc = decoders.spawn(env) if decoders is not None else spawn_decoder(env)
    try:
        hand_over(proc, request)
    except OSError:  # a forked child died before its arguments (killed from outside)
        if decoders is None:
            raise
        proc = spawn_decoder(env)
        hand_over(proc, request)
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(limits.decoder_wall_s, _kill)
    timer.daemon = True
    timer.start()
    frames: list[Frame] = []
    kept_bytes = 0
    doc: dict | None = None
    try:
        out = proc.stdout
        while True:
            tag = out.read(1)
            if tag == b"F":
                index, t, h, w = _FRAME_HEADER.unpack(_read_exact(out, _FRAME_HEADER.size))
                if not (0 < h * w <= limits.max_pixels) or not math.isfinite(t):
                    raise VideoDecodeError(f"{path.name}: the decoder sent a bad frame")
                kept_bytes += h * w * 3 if keep_frames else 0
                if kept_bytes > limits.max_kept_bytes:
                    raise VideoLimitError(
                        f"{path.name}: the frames to analyse need more than "
                        f"{limits.max_kept_bytes // (1024 * 1024)} MB; record a shorter video"
                    )
                image = _read_image(out, h, w)
                if rotation:
                    image = cv2.rotate(image, _CV_ROTATE[rotation])
                frames.append(Frame(index, t, image))
                if on_frame is not None:
                    on_frame(frames[-1])
                if not keep_frames:
                    frames[-1] = _without_pixels(frames[-1])
            elif tag in (b"E", b"X"):
                (n,) = _LENGTH.unpack(_read_exact(out, _LENGTH.size))
                doc = json.loads(_read_exact(out, min(n, 1 << 16)))
                break
            else:
                break
    except EOFError:
        doc = None
    finally:
        timer.cancel()
        proc.end()
        if decoders is not None and doc is not None:
            decoders.note_cpu(doc.get("cpu_s"))
    if timed_out.is_set():
        raise VideoLimitError(
            f"{path.name}: decoding took longer than the limit of {limits.decoder_wall_s:.0f} s"
        )
    if doc is None:
        # Killed by RLIMIT_CPU (SIGXCPU) or by an allocation FFmpeg could not survive.
        raise VideoLimitError(
            f"{path.name}: the decoder stopped{proc.exit_note()}: over its memory or "
            "CPU budget, or a corrupt stream"
        )
    error = doc.get("error")
    if error:
        cls = VideoLimitError if error in ("limit", "memory") else VideoDecodeError
        exc = cls(f"{path.name}: {doc.get('message')}")
        exc.decoder_peak_rss = doc.get("peak_rss")  # bytes, for measurements
        raise exc
    index = int(doc["frames_decoded"])
    fps = float(doc["fps"])
    if index == 0 or not frames:
        raise VideoDecodeError(f"{path.name}: no frame could be decoded")
    if index < limits.min_frames:
        raise VideoDecodeError(
            f"{path.name}: only {index} frame(s); a video needs at least {limits.min_frames}"
        )
    hh, ww = frames[0].image.shape[:2]
    duration = max(frames[-1].t, (index - 1) / fps) if len(frames) > 1 else index / fps
    video = Video(frames, fps, duration, ww, hh, index, rotation)
    video.rotation_problem = rotation_problem
    video.decoder_peak_rss = doc.get("peak_rss")
    video.decoder_cpu_s = doc.get("cpu_s")
    return video


def _without_pixels(frame: Frame) -> Frame:
    """``frame`` with an ``(H, W, 0)`` image: its size and time, none of its memory."""
    h, w = frame.image.shape[:2]
    return Frame(frame.index, frame.t, np.empty((h, w, 0), np.uint8))


def _as_bgr(image: object, i: int) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InputError(f"frame {i} is a {type(image).__name__}, not a numpy array")
    if image.dtype != np.uint8:
        raise InputError(f"frame {i} has dtype {image.dtype}; frames must be uint8")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.copy()
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise InputError(f"frame {i} has shape {image.shape}; expected (H, W, 3) or (H, W)")


def _from_frames(
    frames_in: Iterable,
    sample_fps: float | None,
    limits: VideoLimits,
    fps: float | None,
    on_frame: Callable[[Frame], None] | None = None,
    keep_frames: bool = True,
) -> Video:
    sampler = Sampler(sample_fps)
    # Frames have no file bytes; the digest of the analysed pixels and times stands in for
    # it, so that the same frames submitted twice are recognised (see sessions).
    digest = hashlib.sha256()
    frames: list[Frame] = []
    index = 0
    last_t = -np.inf
    t0 = 0.0
    for item in frames_in:
        if isinstance(item, tuple) and len(item) == 2:
            t, image = float(item[0]), item[1]
        else:
            if not fps:
                raise InputError("bare frames need fps=...; or pass (t_seconds, image) pairs")
            t, image = index / fps, item
        if not np.isfinite(t) or t <= last_t:
            raise InputError(f"frame {index}: timestamps must increase (got {t} after {last_t})")
        last_t = t
        if frames and t - t0 > limits.max_duration_s:
            raise VideoLimitError(f"longer than the limit of {limits.max_duration_s:.0f} s")
        index += 1
        if index > limits.max_frames:
            raise VideoLimitError(f"more than the limit of {limits.max_frames} frames")
        if not isinstance(image, np.ndarray):
            raise InputError(f"frame {index - 1} is a {type(image).__name__}, not an array")
        if image.shape[0] * image.shape[1] > limits.max_pixels:
            raise VideoLimitError(f"frame {index - 1} is over the pixel limit")
        if sampler.keep(t):
            if not frames:
                t0 = t
            image = _shrink(_as_bgr(image, index - 1), limits.analysis_long_side)
            frames.append(Frame(index - 1, t - t0, image))
            digest.update(f"{t - t0:.6f}|{image.shape}".encode())
            digest.update(np.ascontiguousarray(image).data)
            if on_frame is not None:
                on_frame(frames[-1])
            if not keep_frames:
                frames[-1] = _without_pixels(frames[-1])
    if index < limits.min_frames:
        raise VideoDecodeError(f"only {index} frame(s); a video needs at least {limits.min_frames}")
    h, w = frames[0].image.shape[:2]
    rate = fps or (index - 1) / max(last_t - t0, 1e-6)
    return Video(frames, rate, last_t - t0, w, h, index, sha256=digest.hexdigest())


def image_size(data: bytes) -> tuple[str, int, int]:
    """``(format, width, height)`` from an encoded image's header, without decoding pixels
    (Pillow reads only the header on open). :class:`ImageDecodeError` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    from .errors import ImageDecodeError

    try:
        with Image.open(io.BytesIO(data)) as im:
            # Pillow's own bomb guard raises above its limit; ours is stricter and typed.
            return (im.format or "").lower(), int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as e:
        raise ImageDecodeError(f"the reference image header is not readable: {e}") from None
    except Image.DecompressionBombError:
        raise ImageDecodeError("the reference image is over the pixel limit") from None


def load_image(
    source: str | os.PathLike | bytes | np.ndarray, limits: ImageLimits | None = None
) -> np.ndarray:
    """Read a reference image as BGR uint8 (EXIF orientation applied); never modifies input.

    Encoded images are checked before decoding: at most ``limits.max_bytes``, a JPEG, PNG or
    WebP by their first bytes (:func:`sniff_image`), and a header size of at most
    ``limits.max_pixels`` (a 2.6 MB PNG of 30000x30000 used to take 5.1 GB and 16.5 s to
    decode; now it is refused from its 33-byte header). The decoded image is checked again.
    """
    from .errors import ImageDecodeError

    limits = limits or ImageLimits()
    if isinstance(source, np.ndarray):
        if source.ndim >= 2 and source.shape[0] * source.shape[1] > limits.max_pixels:
            raise ImageDecodeError(f"the reference image is over {limits.max_pixels} pixels")
        return _as_bgr(source, 0)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"reference image {path} does not exist")
        size = path.stat().st_size
        if size == 0:
            raise ImageDecodeError(f"reference image {path} is empty (0 bytes)")
        if size > limits.max_bytes:
            raise ImageDecodeError(
                f"reference image {path} is {size} bytes, over the limit of {limits.max_bytes}"
            )
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)
        name = f"reference image {path}"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "the reference image"
    else:
        raise InputError(
            f"unsupported reference image of type {type(source).__name__}: pass a path, bytes "
            "or a uint8 array"
        )
    if not data:
        raise ImageDecodeError(f"{name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError(f"{name} is {len(data)} bytes, over the limit of {limits.max_bytes}")
    kind = sniff_image(data[:16])
    if kind not in limits.formats:
        raise ImageDecodeError(
            f"{name} is {'a ' + kind if kind else 'not an image format we accept'}; "
            "send a JPEG, PNG or WebP photo"
        )
    _fmt, w, h = image_size(data)
    if w <= 0 or h <= 0 or w * h > limits.max_pixels:
        raise ImageDecodeError(
            f"{name} is {w}x{h} pixels, over the limit of {limits.max_pixels} pixels"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f"{name} is not a readable image")
    if image.shape[0] * image.shape[1] > limits.max_pixels:
        raise ImageDecodeError(f"{name} is over the limit of {limits.max_pixels} pixels")
    return image


def frame_at(source: str | os.PathLike, seconds: float | str) -> np.ndarray:
    """The BGR frame shown at ``seconds`` into a video file (``"last"``: its final frame).

    Frames are decoded in order rather than sought to, because seeking is unreliable in
    some containers (webm). Handy for taking a reference photo from a recording.
    """
    path = Path(source)
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    chosen, index = None, 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 or index / fps
            chosen, index = image, index + 1
            if seconds != "last" and t >= float(seconds):
                break
    finally:
        cap.release()
    if chosen is None:
        raise VideoDecodeError(f"{path.name}: no frame could be decoded")
    return chosen
