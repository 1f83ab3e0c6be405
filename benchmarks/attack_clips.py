"""Presentation-attack clips made from real live recordings, independent of ``benchmarks.render``.

Each attack shows a *victim* (a real live clip in the shared data) to the camera:

* ``print_flat``: a frame of the victim printed on a sheet with a white border, held by hand
  in front of a room: the sheet tilts (up to about 40 degrees about both axes, as if to
  fake a head turn), turns in plane, drifts and shakes. A plane: every frame is one
  homography of the print.
* ``print_bent``: the same sheet bent into a cylinder (sagitta about 12 % of its width),
  rendered as vertical strips, each a plane.
* ``print_cutout``: a flat print with the eyes cut out and the victim's own eyes (the live
  clip, aligned to the print by the eye corners) behind the holes, so the eyes blink while
  the rest of the face is paper.
* ``print_fill``: a flat print held so close that it fills the frame (no border, no
  background).
* ``replay_bezel``: the victim's live clip played on a screen (a pixel grid with RGB
  sub-pixels, gamma and colour shift) inside a black bezel, held by hand, with a moving
  glare spot; the camera's resampling of the pixel grid makes moiré.
* ``replay_fill``: the same screen filling the frame (no bezel in view).

Every clip goes through the same camera: sensor noise, a slight blur, MP4 compression.
Motion and looks are drawn from a seeded generator, so a clip is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from liveness.video import LAB_VIDEO_FORMATS, Frame, VideoLimits, load_video

KINDS = ("print_flat", "print_bent", "print_cutout", "print_fill", "replay_bezel", "replay_fill")

# Eye outlines (478-point MediaPipe mesh), the person's right and left eye.
_EYE_RINGS = (
    (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
    (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249),
)
_EYE_CORNERS = (33, 133, 362, 263)


@dataclass(frozen=True)
class Victim:
    """Frames of a live clip (BGR, at ``fps``) and their face meshes (``None``: no face)."""

    frames: list[np.ndarray]
    fps: float
    points: list[np.ndarray | None]  # (478, 3) pixel coordinates per frame

    def print_index(self) -> int:
        """The frame printed: the first one with a face and open eyes (widest eye opening)."""
        best, k = -1.0, 0
        for i, p in enumerate(self.points):
            if p is None:
                continue
            w = np.linalg.norm(p[33, :2] - p[133, :2]) + 1e-6
            opening = np.linalg.norm(p[159, :2] - p[145, :2]) / w
            if opening > best + 0.02:
                best, k = opening, i
        return k


def load_victim(path: str | Path, landmarks, *, seconds: float = 4.0, fps: float = 15.0) -> Victim:
    """The first ``seconds`` of a live clip at ``fps``, with landmarks from ``landmarks``
    (a :class:`liveness.landmarks.FaceLandmarks`)."""
    # lab clips include AVI and MPEG-PS files, which a server would refuse
    v = load_video(path, sample_fps=fps, limits=VideoLimits(formats=LAB_VIDEO_FORMATS))
    frames = [f for f in v.frames if f.t < seconds]
    meshes = landmarks.analyse([Frame(i, f.t, f.image) for i, f in enumerate(frames)])
    return Victim(
        [f.image for f in frames],
        fps,
        [None if m is None else np.asarray(m.points, np.float64) for m in meshes],
    )


# --- geometry --------------------------------------------------------------------------------


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    cx, sx, cy, sy, cz, sz = (math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry),
                              math.cos(rz), math.sin(rz))  # fmt: skip
    rx_ = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry_ = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz_ = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz_ @ ry_ @ rx_


@dataclass(frozen=True)
class Pose:
    """Where a sheet or screen is: its centre in the image (pixels), its width in the image
    as a fraction of the frame width, and its rotation (radians)."""

    cx: float
    cy: float
    width_frac: float
    rx: float
    ry: float
    rz: float


def project(
    src_xy: np.ndarray,
    src_size: tuple[int, int],
    out_size: tuple[int, int],
    pose: Pose,
    bend: float = 0.0,
) -> np.ndarray:
    """Image positions of points on a sheet of ``src_size`` (w, h) pixels.

    The sheet is bent into a cylinder about its vertical axis with depth
    ``bend * (x / half_width)^2`` (in sheet widths), rotated by ``pose`` and seen by a pinhole
    camera with a focal length of 1.1 frame widths.
    """
    sw, sh = src_size
    ow, oh = out_size
    f = 1.1 * ow
    k = pose.width_frac * ow / (sw * f)  # sheet pixel -> world units at depth 1
    x = (src_xy[:, 0] - sw / 2) * k
    y = (src_xy[:, 1] - sh / 2) * k
    half = sw / 2 * k
    z = bend * sw * k * (x / half) ** 2
    p = np.stack([x, y, z], axis=1) @ rotation(pose.rx, pose.ry, pose.rz).T
    p[:, 0] += (pose.cx - ow / 2) / f
    p[:, 1] += (pose.cy - oh / 2) / f
    p[:, 2] += 1.0
    return np.stack([f * p[:, 0] / p[:, 2] + ow / 2, f * p[:, 1] / p[:, 2] + oh / 2], axis=1)


def render_sheet(
    sheet: np.ndarray, background: np.ndarray, pose: Pose, bend: float = 0.0, strips: int = 14
) -> np.ndarray:
    """``sheet`` (BGR) composited over ``background`` at ``pose``; bent sheets are drawn as
    ``strips`` vertical planar strips (far strips first)."""
    h, w = sheet.shape[:2]
    oh, ow = background.shape[:2]
    out = background.copy()
    n = 1 if bend == 0.0 else strips
    edges = np.linspace(0, w, n + 1)
    parts = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        src = np.array([[a, 0], [b, 0], [b, h], [a, h]], np.float64)
        dst = project(src, (w, h), (ow, oh), pose, bend)
        depth = float(np.mean(src[:, 0]))  # painter's order is not needed for gentle bends
        parts.append((depth, src, dst, int(a), int(math.ceil(b))))
    for _, src, dst, a, b in parts:
        hom = cv2.getPerspectiveTransform((src - [a, 0]).astype(np.float32), dst.astype(np.float32))
        piece = np.ascontiguousarray(sheet[:, a:b])
        warped = cv2.warpPerspective(piece, hom, (ow, oh), flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(
            np.full(piece.shape[:2], 255, np.uint8), hom, (ow, oh), flags=cv2.INTER_LINEAR
        )
        alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
        out = (warped * alpha + out * (1 - alpha)).astype(np.uint8)
    return out


def hand_motion(
    rng: np.random.Generator,
    n: int,
    fps: float,
    out_size: tuple[int, int],
    *,
    width_frac: float,
    tilt_deg: float = 22.0,
    fill: bool = False,
) -> list[Pose]:
    """A hand-held path: slow tilts of up to ``tilt_deg`` about both axes, in-plane turn,
    drift, and a 4-9 Hz tremor."""
    ow, oh = out_size
    t = np.arange(n) / fps

    def wave(amp: float) -> np.ndarray:
        f1, f2 = rng.uniform(0.15, 0.5), rng.uniform(0.5, 1.2)
        p1, p2 = rng.uniform(0, 2 * math.pi, 2)
        return amp * (
            0.7 * np.sin(2 * math.pi * f1 * t + p1) + 0.3 * np.sin(2 * math.pi * f2 * t + p2)
        )

    def tremor(amp: float) -> np.ndarray:
        f = rng.uniform(4, 9)
        return amp * np.sin(2 * math.pi * f * t + rng.uniform(0, 6.3)) + rng.normal(0, amp / 3, n)

    tilt = math.radians(tilt_deg)
    rx, ry = wave(tilt) + tremor(0.004), wave(tilt) + tremor(0.004)
    rz = wave(math.radians(8)) + tremor(0.003)
    drift = 0.02 if fill else 0.06
    cx = ow / 2 + wave(drift * ow) + tremor(1.0)
    cy = oh / 2 + wave(drift * oh) + tremor(1.0)
    scale = width_frac * (1 + wave(0.06))
    return [Pose(*v) for v in zip(cx, cy, scale, rx, ry, rz, strict=True)]


# --- looks -----------------------------------------------------------------------------------


def room(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A plain room: a wall gradient, a door or shelf, a lamp glow, fine texture."""
    w, h = size
    base = rng.uniform(90, 200, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grad = 1 + 0.25 * (xx / w - 0.5) * rng.choice([-1, 1]) + 0.15 * (yy / h - 0.5)
    img = base[None, None, :] * grad[:, :, None]
    for _ in range(3):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        cv2.rectangle(
            img,
            (int(x0), int(y0)),
            (int(x0 + rng.integers(30, w // 2)), int(y0 + rng.integers(30, h // 2))),
            tuple(float(c) for c in rng.uniform(40, 230, 3)),
            -1,
        )
    img = cv2.GaussianBlur(img, (0, 0), 3) + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def printed(image: np.ndarray, rng: np.random.Generator, border: float = 0.06) -> np.ndarray:
    """An image as a print: lower contrast, warmer, paper-white border, faint halftone."""
    h, w = image.shape[:2]
    x = image.astype(np.float32)
    x = 30 + 0.8 * x  # ink on paper: blacks are grey, whites dimmer
    x *= np.array([0.95, 1.0, 1.04])[None, None, :] * rng.uniform(0.95, 1.05)
    dots = 4 * np.sin(np.arange(w)[None, :] * 1.9) * np.sin(np.arange(h)[:, None] * 1.9)
    x += dots[:, :, None]
    b = int(border * w)
    sheet = np.full((h + 2 * b, w + 2 * b, 3), 235, np.float32)
    sheet[b : b + h, b : b + w] = x
    return np.clip(sheet, 0, 255).astype(np.uint8)


def screen_texture(image: np.ndarray, px: int, rng_gamma: float, bezel: float) -> np.ndarray:
    """A frame as shown by a screen ``px`` pixels wide, drawn 3 texels per pixel with RGB
    sub-pixel stripes and dark gaps, gamma and a blue cast; with a black bezel of
    ``bezel`` of the width around it."""
    h, w = image.shape[:2]
    ph = max(2, round(px * h / w))
    small = cv2.resize(image, (px, ph), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    small = small**rng_gamma * np.array([1.08, 0.98, 0.9])  # BGR: screens run blue
    big = np.repeat(np.repeat(small, 3, axis=0), 3, axis=1)
    mask = np.full((3, 3, 3), 0.3, np.float32)
    mask[2] = 0.15  # the dark gap between pixel rows
    for c, col in ((2, 0), (1, 1), (0, 2)):  # R, G, B columns (BGR order)
        mask[:2, col, c] = 1.0
    big = big * np.tile(mask, (ph, px, 1)) * 1.9
    tex = np.clip(big * 255, 0, 255).astype(np.uint8)
    if bezel > 0:
        b = int(bezel * tex.shape[1])
        tex = cv2.copyMakeBorder(tex, b, b, b, b, cv2.BORDER_CONSTANT, value=(12, 12, 14))
    return tex


def glare(
    frame: np.ndarray, centre: tuple[float, float], radius: float, strength: float
) -> np.ndarray:
    """A soft specular spot added to ``frame``."""
    h, w = frame.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d2 = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (radius**2)
    spot = strength * np.exp(-d2)[:, :, None]
    return np.clip(frame.astype(np.float32) + spot, 0, 255).astype(np.uint8)


def camera(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise and a slight lens blur."""
    x = cv2.GaussianBlur(frame, (0, 0), 0.7).astype(np.float32)
    x += rng.normal(0, 2.5, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


# --- attacks ---------------------------------------------------------------------------------


def _eye_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for ring in _EYE_RINGS:
        poly = points[list(ring), :2]
        c = poly.mean(axis=0)
        poly = c + 1.35 * (poly - c)  # holes a little larger than the eye
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255)
    return mask


def _cutout_texture(victim: Victim, k: int, i: int) -> np.ndarray:
    """The printed frame ``k`` with the eyes of frame ``i`` (aligned by the eye corners)."""
    base = victim.frames[k]
    p_k, p_i = victim.points[k], victim.points[i]
    if p_i is None or p_k is None:
        return base
    m, _ = cv2.estimateAffinePartial2D(
        p_i[list(_EYE_CORNERS), :2].astype(np.float32),
        p_k[list(_EYE_CORNERS), :2].astype(np.float32),
    )
    if m is None:
        return base
    h, w = base.shape[:2]
    live = cv2.warpAffine(victim.frames[i], m, (w, h), flags=cv2.INTER_LINEAR)
    mask = _eye_mask(p_k, (h, w))
    out = base.copy()
    out[mask > 0] = live[mask > 0]
    return out


def make_attack(
    victim: Victim, kind: str, *, size: tuple[int, int] = (360, 480), seed: int = 0
) -> list[np.ndarray]:
    """The frames (BGR, at ``victim.fps``) of one attack of ``kind`` on ``victim``.

    ``size`` is the camera frame (width, height).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown attack kind {kind!r}; one of {KINDS}")
    rng = np.random.default_rng(seed)
    n = len(victim.frames)
    ow, oh = size
    bg = room(rng, size)
    k = victim.print_index()
    out: list[np.ndarray] = []
    if kind.startswith("print"):
        fill = kind == "print_fill"
        tilt = 15.0 if fill else 40.0
        poses = hand_motion(
            rng, n, victim.fps, size, width_frac=1.6 if fill else 0.75, tilt_deg=tilt, fill=fill
        )
        bend = 0.12 if kind == "print_bent" else 0.0
        still_sheet = printed(victim.frames[k], rng, border=0.0 if fill else 0.06)
        for i in range(n):
            sheet = still_sheet
            if kind == "print_cutout":
                sheet = printed(_cutout_texture(victim, k, i), np.random.default_rng(seed))
            out.append(camera(render_sheet(sheet, bg, poses[i], bend), rng))
        return out
    fill = kind == "replay_fill"
    gamma = rng.uniform(1.1, 1.4)
    poses = hand_motion(
        rng,
        n,
        victim.fps,
        size,
        width_frac=1.5 if fill else 0.85,
        tilt_deg=6.0 if fill else 12.0,
        fill=fill,
    )
    gx, gy = rng.uniform(0.25, 0.75) * ow, rng.uniform(0.2, 0.6) * oh
    for i in range(n):
        h, w = victim.frames[i].shape[:2]
        px = int(rng.uniform(0.9, 1.1) * (ow if fill else 0.85 * ow) * 0.8)
        tex = screen_texture(victim.frames[i], px, gamma, 0.0 if fill else 0.05)
        frame = render_sheet(tex, bg, poses[i])
        t = i / victim.fps
        frame = glare(frame, (gx + 25 * math.sin(t), gy + 15 * math.cos(0.7 * t)), 0.12 * ow, 70)
        out.append(camera(frame, rng))
    return out


def write_clip(frames: list[np.ndarray], fps: float, path: str | Path) -> Path:
    """Write ``frames`` as an MP4 (``mp4v``) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        for f in frames:
            wr.write(f)
    finally:
        wr.release()
    return path
