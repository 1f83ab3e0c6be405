"""Video input: a path, bytes, or frames with timestamps, decoded within limits.

The pipeline analyses a sample of the frames (``sample_fps``), not all of them: a selfie
video at 30 fps carries little more about a face than the same video at 15 fps, and the
landmark model costs the same for every frame it sees.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

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


VideoSource = str | os.PathLike | bytes | bytearray | memoryview | Iterable


def load_video(
    source: VideoSource,
    *,
    sample_fps: float = 15.0,
    limits: VideoLimits | None = None,
    fps: float | None = None,
    on_frame: Callable[[Frame], None] | None = None,
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
        # is deleted straight after decoding.
        fd, tmp = tempfile.mkstemp(suffix=".video")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            video = _decode_file(Path(tmp), sample_fps, limits, on_frame)
        finally:
            os.unlink(tmp)
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
        video = _decode_file(path, sample_fps, limits, on_frame)
        video.sha256 = video_digest(path)
        return video
    if isinstance(source, np.ndarray):
        raise InputError("a single array is not a video: pass a list of frames, a path or bytes")
    if isinstance(source, Iterable):
        return _from_frames(source, sample_fps, limits, fps, on_frame)
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


class _Sampler:
    """Keeps a frame when its time reaches the next sampling instant."""

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


def _decode_file(
    path: Path,
    sample_fps: float | None,
    limits: VideoLimits,
    on_frame: Callable[[Frame], None] | None = None,
) -> Video:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoDecodeError(f"{path.name}: not a readable video file")
        # Honour rotation metadata (phones store portrait video as rotated landscape).
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0)
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            fps = 30.0  # containers without a rate (some webm): timestamps still rule
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w * h > limits.max_pixels:
            raise VideoLimitError(
                f"{path.name}: frames of {w}x{h} are over the limit of {limits.max_pixels} pixels"
            )
        frames: list[Frame] = []
        sampler = _Sampler(sample_fps)
        index = 0
        last_t = -1.0
        while True:
            # grab() decodes without the colour conversion; retrieve() only kept frames.
            if not cap.grab():
                break
            pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            # Some containers report no or non-increasing timestamps; fall back to the rate.
            t = (
                pos
                if (np.isfinite(pos) and pos > last_t and (pos > 0 or index == 0))
                else index / fps
            )
            if index == 0:
                t0 = t
            t -= t0
            last_t = t + t0
            if t > limits.max_duration_s:
                raise VideoLimitError(
                    f"{path.name}: longer than the limit of {limits.max_duration_s:.0f} s"
                )
            index += 1
            if index > limits.max_frames:
                raise VideoLimitError(
                    f"{path.name}: more than the limit of {limits.max_frames} frames"
                )
            if sampler.keep(t):
                ok, image = cap.retrieve()
                if not ok or image is None:
                    continue
                if image.shape[0] * image.shape[1] > limits.max_pixels:
                    raise VideoLimitError(f"{path.name}: a frame is over the pixel limit")
                frames.append(Frame(index - 1, t, _shrink(image, limits.analysis_long_side)))
                if on_frame is not None:
                    on_frame(frames[-1])
    finally:
        cap.release()
    if index == 0 or not frames:
        raise VideoDecodeError(f"{path.name}: no frame could be decoded")
    if index < limits.min_frames:
        raise VideoDecodeError(
            f"{path.name}: only {index} frame(s); a video needs at least {limits.min_frames}"
        )
    hh, ww = frames[0].image.shape[:2]
    duration = max(frames[-1].t, (index - 1) / fps) if len(frames) > 1 else index / fps
    return Video(frames, fps, duration, ww, hh, index, rotation)


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
) -> Video:
    sampler = _Sampler(sample_fps)
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
            if on_frame is not None:
                on_frame(frames[-1])
    if index < limits.min_frames:
        raise VideoDecodeError(f"only {index} frame(s); a video needs at least {limits.min_frames}")
    h, w = frames[0].image.shape[:2]
    rate = fps or (index - 1) / max(last_t - t0, 1e-6)
    # Frames have no file bytes; the digest of the analysed pixels and times stands in for
    # it, so that the same frames submitted twice are recognised (see sessions).
    digest = hashlib.sha256()
    for f in frames:
        digest.update(f"{f.t:.6f}|{f.image.shape}".encode())
        digest.update(np.ascontiguousarray(f.image).data)
    return Video(frames, rate, last_t - t0, w, h, index, sha256=digest.hexdigest())


def load_image(source: str | os.PathLike | bytes | np.ndarray) -> np.ndarray:
    """Read a reference image as BGR uint8 (EXIF orientation applied); never modifies input."""
    from .errors import ImageDecodeError

    if isinstance(source, np.ndarray):
        return _as_bgr(source, 0)
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(bytes(source), np.uint8)
        if buf.size == 0:
            raise ImageDecodeError("the reference image is empty (0 bytes)")
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if image is None:
            raise ImageDecodeError("the reference image bytes are not a readable image")
        return image
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"reference image {path} does not exist")
        if path.stat().st_size == 0:
            raise ImageDecodeError(f"reference image {path} is empty (0 bytes)")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageDecodeError(f"reference image {path} is not a readable image")
        return image
    raise InputError(
        f"unsupported reference image of type {type(source).__name__}: pass a path, bytes "
        "or a uint8 array"
    )


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
