"""Fuzz targets (Hypothesis) over the video loader, the image loader and the token parser.

Each runs a bounded number of examples with a deadline, so the whole file takes well under
a minute; every input must end in a typed error (or a valid result), never another
exception, a hang or a crash. Set ``LIVENESS_FUZZ_EXAMPLES`` to run longer locally.
"""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveness.errors import InputError
from liveness.sessions import (
    ChallengeClaims,
    Keyring,
    SessionError,
    encode_token,
    verify_token,
)
from liveness.video import VideoLimits, load_image, load_video

N = int(os.environ.get("LIVENESS_FUZZ_EXAMPLES", "0"))
FAST = settings(
    max_examples=N or 200,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=not N,
    database=None,
)
# Every video input starts a decoder process (~0.4 s), so fewer of them.
VIDEO = settings(
    max_examples=N or 15,
    deadline=20000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not N,
    database=None,
)
KEYRING = Keyring.single(b"fuzz-key-Vq8Lr2Xp7Tn4")


def _seed_png() -> bytes:
    ok, buf = cv2.imencode(".png", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def _seed_mp4() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.mp4")
        out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
        for i in range(5):
            out.write(np.full((32, 32, 3), i * 40, np.uint8))
        out.release()
        with open(path, "rb") as f:
            return f.read()


SEED_PNG = _seed_png()
SEED_MP4 = _seed_mp4()


def mutated(seed: bytes):
    """The seed with a few bytes changed, cut short, or with bytes inserted."""

    @st.composite
    def build(draw):
        data = bytearray(seed)
        for _ in range(draw(st.integers(0, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        if draw(st.booleans()):
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(max_size=64))
        return bytes(data)

    return build()


def png_with_size():
    @st.composite
    def build(draw):
        w, h = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc

    return build()


@FAST
@given(st.one_of(st.binary(max_size=2048), mutated(SEED_PNG), png_with_size()))
def test_image_loader_gives_an_image_or_a_typed_error(data):
    try:
        image = load_image(data)
    except InputError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


LIMITS = VideoLimits(decoder_wall_s=15, max_kept_bytes=64 * 1024 * 1024)


@VIDEO
@given(
    st.one_of(
        mutated(SEED_MP4),
        st.binary(min_size=1, max_size=512).map(lambda b: b"\x1a\x45\xdf\xa3" + b),
        st.binary(min_size=1, max_size=512).map(lambda b: b"\0\0\0\x18ftypmp42" + b),
    )
)
def test_video_loader_gives_frames_or_a_typed_error(data):
    try:
        video = load_video(data, limits=LIMITS)
    except InputError:
        return
    assert video.frames and all(f.image.dtype == np.uint8 for f in video.frames)


def _claims(**kw) -> ChallengeClaims:
    base = dict(
        session_id="s" * 22,
        nonce="n" * 22,
        account="alice",
        actions=("blink",),
        issued_at=1_700_000_000,
        expires_at=1_700_000_120,
        kid="default",
    )
    base.update(kw)
    return ChallengeClaims(**base)


GOOD = encode_token(KEYRING, _claims())


@FAST
@given(
    st.one_of(
        st.text(max_size=600),
        st.binary(max_size=600).map(lambda b: b.decode("latin-1")),
        mutated(GOOD.encode()).map(lambda b: b.decode("latin-1")),
    )
)
def test_token_parser_refuses_everything_but_its_own_tokens(token):
    try:
        claims = verify_token(KEYRING, token, now=1_700_000_010)
    except SessionError:
        return
    assert token == GOOD and claims.account == "alice"
