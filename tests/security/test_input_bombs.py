"""Issue 12, items 2, 3, 4 and 10 (rotation): bombs and smuggled formats against the video
and image loaders, generated on the fly (small), each refused or bounded, with peak memory
and time measured in a child process so one test's allocations cannot hide another's."""

from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from benchmarks import bombs
from benchmarks.bombs import hidden_frames_mkv
from liveness.errors import ImageDecodeError, VideoDecodeError, VideoLimitError
from liveness.video import VideoLimits, load_image, load_video, mp4_rotation

from .conftest import child_env


def measure(kind: str, path) -> dict:
    """Outcome, time and peak RSS (VmHWM: ru_maxrss is inherited from this process) of
    loading ``path`` in a fresh process; see benchmarks.bombs."""
    result = bombs.measure(kind, path, env=child_env())
    print(kind, path.name, result)  # shown with -s
    return result


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR for ``width`` x ``height`` with a tiny zero IDAT: what
    a decompression bomb looks like from its header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # Rows of zeros compress to almost nothing; 64 rows are enough to look real.
    raw = zlib.compress(b"\0" * ((width * 3 + 1) * 64), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def write_video(path, frames, fourcc="mp4v", fps=15.0):
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert out.isOpened()
    for f in frames:
        out.write(f)
    out.release()
    return path


def test_image_pixel_bomb_is_refused_from_its_header(tmp_path):
    # Item 2: a 30000x30000 PNG cost 5.1 GB and 16.5 s; refused from its header now.
    bomb = png_header_bomb(30000, 30000)
    assert len(bomb) < 3 * 1024 * 1024
    t = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="over the"):
        load_image(bomb)
    assert time.perf_counter() - t < 1.0
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    m = measure("image", path)
    assert m["outcome"].startswith("ImageDecodeError")
    assert m["peak_rss_mb"] - m["rss_after_imports_mb"] < 50 and m["seconds"] < 2.0


@pytest.mark.parametrize(
    "data, what",
    [
        (b"GIF89a" + b"\0" * 100, "gif"),
        (b"BM" + b"\0" * 100, "bmp"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image"),
    ],
)
def test_images_outside_the_allow_list_are_refused(data, what):
    with pytest.raises(ImageDecodeError, match=what):
        load_image(data)


def test_ordinary_photo_still_loads(data_dir):
    image = load_image(data_dir / "faces/deepface/couple.jpg")
    assert image.ndim == 3 and image.dtype == np.uint8


def test_ffconcat_pointing_at_a_local_file_is_refused(tmp_path, data_dir):
    # Item 4: a text file of under 48 bytes made FFmpeg analyse a video already on the
    # server (the concat demuxer takes relative paths by default).
    (tmp_path / "clip.mp4").write_bytes((data_dir / "videos/talking_head_wda_1.mp4").read_bytes())
    text = b"ffconcat version 1.0\nfile 'clip.mp4'\n"
    path = tmp_path / "upload.webm"
    path.write_bytes(text)
    with pytest.raises(VideoDecodeError, match="ffconcat"):
        load_video(path)
    with pytest.raises(VideoDecodeError, match="ffconcat"):
        load_video(text)
    # A format without a whitelisted demuxer cannot be allowed in.
    with pytest.raises(VideoDecodeError, match="ffconcat"):
        load_video(path, limits=VideoLimits(formats=frozenset({"ffconcat"})))


def test_ffmpeg_demuxer_whitelist_holds_when_the_sniffer_is_bypassed(
    tmp_path, data_dir, monkeypatch
):
    # Second line of defence: with the magic-byte check bypassed (a mock, only to reach
    # FFmpeg), the decoder child's format whitelist still refuses the concat demuxer.
    import liveness.video as video

    (tmp_path / "clip.mp4").write_bytes((data_dir / "videos/talking_head_wda_1.mp4").read_bytes())
    path = tmp_path / "upload.webm"
    path.write_bytes(b"ffconcat version 1.0\nfile 'clip.mp4'\n")
    monkeypatch.setattr(video, "_check_video_format", lambda p, limits: "matroska")
    with pytest.raises(VideoDecodeError, match="not a readable video"):
        load_video(path)


def test_animated_gif_and_avi_are_refused(tmp_path):
    frames = [np.full((64, 64, 3), i * 20, np.uint8) for i in range(8)]
    avi = write_video(tmp_path / "clip.avi", frames, "MJPG")
    with pytest.raises(VideoDecodeError, match="avi"):
        load_video(avi)
    with pytest.raises(VideoDecodeError, match="gif"):
        load_video(b"GIF89a" + b"\0" * 200)


def test_large_frames_hidden_between_sampled_ones_are_caught(tmp_path):
    # Item 3: a stream declared 320x240 with far larger frames between the sampled ones was
    # decoded whole (+1.5 GB, 42.7 s at 16000x16000). OpenCV scales every frame to the
    # declared size, so the decoder child watches what decoding costs instead: refused at
    # the first hidden frame.
    path = tmp_path / "hidden.mkv"
    path.write_bytes(hidden_frames_mkv(small=30, big_side=8000, every=2))
    t = time.perf_counter()
    with pytest.raises(VideoLimitError, match="larger frames"):
        load_video(path, sample_fps=1)
    assert time.perf_counter() - t < 10
    # The same stream without the large frames is fine.
    path.write_bytes(hidden_frames_mkv(small=30, big_side=240, every=2))
    assert load_video(path, sample_fps=1).frames_decoded == 30


def test_decoder_memory_is_capped(tmp_path):
    # A stream within the pixel limit but a decoder given too little memory: refused, not
    # grown. This is the bound on what any hostile file can cost the decoder.
    frames = [np.random.default_rng(i).integers(0, 255, (720, 1280, 3), np.uint8) for i in range(4)]
    path = write_video(tmp_path / "noise.mp4", frames)
    with pytest.raises(VideoLimitError):
        load_video(path, limits=VideoLimits(decoder_memory_bytes=200 * 1024 * 1024))


def test_kept_frames_have_a_memory_budget(tmp_path):
    # Item 3: a long clip at high resolution cost +3.6 GB of kept frames; now bounded.
    frames = [np.full((720, 1280, 3), i % 255, np.uint8) for i in range(30)]
    path = write_video(tmp_path / "long.mp4", frames, fps=15)
    limits = VideoLimits(max_kept_bytes=10 * 1280 * 720 * 3)
    with pytest.raises(VideoLimitError, match="shorter"):
        load_video(path, limits=limits)


def test_decoding_has_a_wall_time_limit(data_dir):
    with pytest.raises(VideoLimitError, match="longer than the limit"):
        load_video(
            data_dir / "videos/talking_head_wda_1.mp4", limits=VideoLimits(decoder_wall_s=0.05)
        )


def _set_matrix(data: bytes, a: int, b: int, c: int, d: int) -> bytes:
    i = data.index(b"tkhd")
    payload = i + 4
    version = data[payload]
    offset = payload + 4 + (32 if version == 1 else 20) + 16
    fixed = [v * 65536 for v in (a, b)] + [0] + [v * 65536 for v in (c, d)]
    return data[:offset] + struct.pack(">iiiii", *fixed) + data[offset + 20 :]


@pytest.mark.parametrize(
    "matrix, rotation, problem",
    [
        ((1, 0, 0, 1), 0, False),
        ((0, 1, -1, 0), 90, False),
        ((-1, 0, 0, 1), 0, True),  # mirror: used to turn frames upside down
        ((0, 0, 0, 0), 0, True),  # all zero: used to report rotation=-2147483287
    ],
)
def test_rotation_metadata_is_parsed_safely(tmp_path, matrix, rotation, problem):
    frames = [np.zeros((48, 64, 3), np.uint8) for _ in range(5)]
    for f in frames:
        f[:8] = 255  # a white band at the top
    path = write_video(tmp_path / "r.mp4", frames)
    path.write_bytes(_set_matrix(path.read_bytes(), *matrix))
    got, why = mp4_rotation(path)
    assert got == rotation and (why is not None) == problem
    video = load_video(path)
    assert video.rotation == rotation and (video.rotation_problem is not None) == problem
    img = video.frames[0].image
    if rotation == 90:
        assert img.shape[:2] == (64, 48) and img[:, -8:].mean() > 200  # band now on the right
    else:
        assert img.shape[:2] == (48, 64) and img[:8].mean() > 200  # still the right way up
