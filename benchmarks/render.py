"""Challenge and attack clips with ground truth, rendered from one real face photo.

A *live* clip re-animates a real photo: the MediaPipe Face Landmarker gives the 478 3D face
landmarks of the photo; for every frame those points are deformed (eyelids closed, jaw
opened, mouth corners pulled for a smile), rotated in 3D (yaw, pitch, a little sway) and
projected back, and the photo texture is warped triangle by triangle onto the new positions
(painter's order, so the nose hides the far cheek). A ring of anchor points around the face
and a frame of points beyond the image border make the background warp smoothly. Camera
effects follow: hand shake, exposure and white-balance drift, sensor noise, JPEG
compression.

*Attack* clips come from the same photo: ``print`` (a printed photo moved rigidly in front
of the camera: homography motion, paper border, optional fingers, no blink, no parallax),
``replay`` (a live clip shown on a screen and filmed: pixel grid and moiré, gamma and colour
shift, bezel, glare, refresh banding) and ``still`` (the photo with only camera shake).

Every clip is written with a JSON file of the same stem holding the ground truth:
``fps``, ``frames``, ``attack`` (``null`` for live) and ``actions``, a list of
``{kind, start, peak, end}`` in seconds, plus per-frame ``yaw_deg`` / ``pitch_deg``.

Conventions (the library must use the same ones):

* ``turn_left`` is the person's OWN left. In a non-mirrored camera video that is the
  viewer's right: the nose moves toward the image's right side. ``look_up`` is chin up.
* Head yaw and pitch in degrees come from the Face Landmarker's facial transformation
  matrix ``M`` (4x4, OpenGL camera frame: x right, y up, z toward the viewer) through
  :func:`yaw_pitch_from_matrix`: with ``R`` the orthonormalised rotation part and
  ``f = R[:, 2]`` the face's forward direction, ``yaw = atan2(f_x, f_z)`` and
  ``pitch = atan2(f_y, hypot(f_x, f_z))``. Yaw is positive on ``turn_left`` and negative on
  ``turn_right``; pitch is positive on ``look_up`` and negative on ``look_down``.

CLI::

    python -m benchmarks.render --photo P --script "blink,turn_left,smile" --out DIR
    python -m benchmarks.render --photo P --attack print --out DIR --contact-sheet s.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import Delaunay

REPO_ROOT = Path(__file__).resolve().parents[1]
LANDMARKER_FILE = "face_landmarker.task"

ACTION_KINDS = ("blink", "turn_left", "turn_right", "look_up", "look_down", "smile", "open_mouth")
ATTACK_KINDS = ("print", "replay", "still")

# --- MediaPipe face-mesh landmark indices (478-point topology) -----------------------------
# fmt: off
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
             54, 103, 67, 109)
# fmt: on
# Eyes named by the person's side; corners first, then lid points from corner to corner.
RIGHT_EYE = ((33, 133), (246, 161, 160, 159, 158, 157, 173), (7, 163, 144, 145, 153, 154, 155))
LEFT_EYE = ((263, 362), (466, 388, 387, 386, 385, 384, 398), (249, 390, 373, 374, 380, 381, 382))
IRISES = tuple(range(468, 478))
MOUTH_CORNERS = (61, 291)
INNER_UPPER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
N_MESH = 478


# --- typed structures ----------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    """One scripted action; times in seconds from the clip start.

    ``start`` is where the motion begins, ``peak`` the middle of its full-strength hold (for a
    blink: the eyes fully closed), ``end`` where the face is back at neutral.
    """

    kind: str
    start: float
    peak: float
    end: float


@dataclass(frozen=True)
class GroundTruth:
    """What a clip shows, as written to the JSON file beside it.

    ``yaw_deg`` / ``pitch_deg`` are the rendered head angles per frame (script plus natural
    sway) in the convention of :func:`yaw_pitch_from_matrix`; empty for attacks.
    """

    fps: float
    frames: int
    attack: str | None
    actions: tuple[Action, ...]
    size: tuple[int, int]
    seed: int
    photo: str = ""
    angle_deg: float = 0.0
    yaw_deg: tuple[float, ...] = ()
    pitch_deg: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        """The JSON-ready form (``actions`` as a list of dicts, angles rounded)."""
        d = asdict(self)
        d["actions"] = [asdict(a) for a in self.actions]
        d["size"] = list(self.size)
        d["yaw_deg"] = [round(v, 3) for v in self.yaw_deg]
        d["pitch_deg"] = [round(v, 3) for v in self.pitch_deg]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GroundTruth:
        """Inverse of :meth:`to_dict`."""
        return cls(
            fps=float(d["fps"]),
            frames=int(d["frames"]),
            attack=d.get("attack"),
            actions=tuple(Action(**a) for a in d.get("actions", [])),
            size=tuple(d.get("size", (0, 0))),
            seed=int(d.get("seed", 0)),
            photo=d.get("photo", ""),
            angle_deg=float(d.get("angle_deg", 0.0)),
            yaw_deg=tuple(d.get("yaw_deg", ())),
            pitch_deg=tuple(d.get("pitch_deg", ())),
        )


@dataclass
class Clip:
    """A rendered clip in memory: BGR uint8 frames of shape (T, H, W, 3) and its truth."""

    frames: np.ndarray
    truth: GroundTruth


@dataclass(frozen=True)
class Timing:
    """Durations (s) of an action's rise to full strength, hold, and fall back."""

    rise: float
    hold: float
    fall: float

    @property
    def total(self) -> float:
        return self.rise + self.hold + self.fall


ACTION_TIMING = {
    "blink": Timing(0.10, 0.06, 0.14),
    "turn_left": Timing(0.45, 0.50, 0.45),
    "turn_right": Timing(0.45, 0.50, 0.45),
    "look_up": Timing(0.45, 0.50, 0.45),
    "look_down": Timing(0.45, 0.50, 0.45),
    "smile": Timing(0.35, 0.70, 0.35),
    "open_mouth": Timing(0.30, 0.60, 0.30),
}


@dataclass(frozen=True)
class Camera:
    """Strength of the simulated phone camera's imperfections."""

    shake_px: float = 3.0  # hand-shake translation amplitude, pixels at 640 px width
    shake_deg: float = 0.6  # hand-shake roll amplitude
    noise_sigma: float = 2.5  # sensor noise, grey levels
    exposure_drift: float = 0.05  # relative gain drift amplitude
    jpeg_quality: int = 80  # per-frame re-encode (0 disables)


@dataclass(frozen=True)
class PhotoFace:
    """Face Landmarker result on the source photo.

    ``points`` are the 478 landmarks in photo pixels (x right, y down) with depth ``z`` in
    the same pixel scale (smaller = closer to the camera, as MediaPipe gives it);
    ``matrix`` is the 4x4 facial transformation matrix.
    """

    image: np.ndarray
    points: np.ndarray
    matrix: np.ndarray


@dataclass(frozen=True)
class Rig:
    """Everything the per-frame warp needs, fixed for a clip.

    ``src``: (N, 2) photo pixel position of every warp point; ``framed``: (N, 2) the same
    points in the output frame before any motion. The first 478 points are the face mesh,
    ``head`` holds them in 3D (frontalised, OpenGL axes: x right, y up, z toward the camera,
    relative to the rotation ``pivot`` given in output pixels, y down). Every other point
    copies the 2D displacement of its ``parent`` mesh point scaled by ``follow`` (1 moves
    with the head, 0 static), which moves hair, neck and background smoothly without
    folding; ``depth_offset`` places them behind the face for the painter's order.
    ``triangles``: (K, 3) point indices; ``mesh_tri`` marks triangles of face points only.
    """

    src: np.ndarray
    framed: np.ndarray
    head: np.ndarray
    parent: np.ndarray
    follow: np.ndarray
    depth_offset: np.ndarray
    triangles: np.ndarray
    mesh_tri: np.ndarray
    pivot: np.ndarray
    size: tuple[int, int]
    face_width: float


@dataclass
class Track:
    """Per-frame animation parameters (arrays of length T)."""

    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    blink: np.ndarray
    smile: np.ndarray
    mouth: np.ndarray
    head_shift: np.ndarray  # (T, 2) pixels
    shake: np.ndarray  # (T, 4): dx, dy, roll deg, log scale
    gain: np.ndarray  # (T, 3) per-channel exposure gain


# --- model and photo -----------------------------------------------------------------------
def resolve_model_dir(model_dir: str | Path | None = None) -> Path:
    """The model directory: the argument, else ``$LIVENESS_MODEL_DIR``, else
    ``../shared/models`` relative to the repository root."""
    if model_dir is not None:
        return Path(model_dir)
    env = os.environ.get("LIVENESS_MODEL_DIR")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "models"


def open_landmarker(model_dir: str | Path | None = None, *, video: bool = False):
    """A MediaPipe Face Landmarker with blendshapes and transformation matrices.

    Use it as a context manager (``with open_landmarker(...) as lm``) so it is closed.
    """
    from mediapipe.tasks.python import BaseOptions, vision

    path = resolve_model_dir(model_dir) / LANDMARKER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass model_dir or set LIVENESS_MODEL_DIR")
    mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
    opts = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(path)),
        running_mode=mode,
        num_faces=1,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    return vision.FaceLandmarker.create_from_options(opts)


def to_mp_image(bgr: np.ndarray):
    """A MediaPipe SRGB image from an OpenCV BGR array."""
    import mediapipe as mp

    rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)


def rotation_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """The nearest pure rotation to the 3x3 part of a 4x4 transform (scale removed)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, float)[:3, :3])
    r = u @ vt
    if np.linalg.det(r) < 0:  # guard against a reflection from a degenerate fit
        u[:, -1] *= -1
        r = u @ vt
    return r


def yaw_pitch_from_matrix(matrix: np.ndarray) -> tuple[float, float]:
    """Head (yaw, pitch) in degrees from a Face Landmarker facial transformation matrix.

    The matrix maps the canonical face (looking along +z) into the OpenGL camera frame
    (x right, y up, z toward the viewer). With ``f = R[:, 2]`` the face's forward
    direction: ``yaw = atan2(f_x, f_z)`` (positive: nose toward image right = the person's
    own left, ``turn_left``), ``pitch = atan2(f_y, hypot(f_x, f_z))`` (positive: chin up,
    ``look_up``).
    """
    f = rotation_from_matrix(matrix)[:, 2]
    yaw = math.degrees(math.atan2(f[0], f[2]))
    pitch = math.degrees(math.atan2(f[1], math.hypot(f[0], f[2])))
    return yaw, pitch


def load_photo(photo: str | Path | np.ndarray) -> np.ndarray:
    """A BGR uint8 image from a path or an array (grayscale and BGRA are converted)."""
    img = (
        cv2.imread(str(photo), cv2.IMREAD_UNCHANGED) if not isinstance(photo, np.ndarray) else photo
    )
    if img is None:
        raise FileNotFoundError(f"cannot read photo {photo}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1.0, float(img.max())))
    return np.ascontiguousarray(img)


def detect_photo_face(photo: str | Path | np.ndarray, model_dir=None) -> PhotoFace:
    """Run the Face Landmarker (IMAGE mode) on the photo; fail if no face is found."""
    img = load_photo(photo)
    with open_landmarker(model_dir) as lm:
        res = lm.detect(to_mp_image(img))
    if not res.face_landmarks:
        raise ValueError(
            f"no face found in photo {photo if not isinstance(photo, np.ndarray) else ''}"
        )
    h, w = img.shape[:2]
    pts = np.array([[p.x * w, p.y * h, p.z * w] for p in res.face_landmarks[0]], float)
    return PhotoFace(img, pts, np.asarray(res.facial_transformation_matrixes[0], float))


# --- the rig: warp points, 3D head, triangulation ------------------------------------------
def _framing(
    points: np.ndarray,
    size: tuple[int, int],
    face_frac: float,
    photo_hw: tuple[int, int] | None = None,
) -> tuple[float, np.ndarray]:
    """Scale and offset (photo -> output pixels) that centre the face, ``face_frac`` of the
    frame height tall. With ``photo_hw`` the face is enlarged and shifted as needed so the
    frame stays inside the photo (mirrored borders look fake)."""
    h, w = size
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    scale = face_frac * h / (hi[1] - lo[1])
    centre = (lo + hi) / 2
    offset = np.array([w / 2, 0.47 * h]) - scale * centre
    if photo_hw is not None:
        ph, pw = photo_hw
        scale = max(scale, w / pw, h / ph)
        offset = np.array([w / 2, 0.47 * h]) - scale * centre
        # Shift so that 0 <= (out - offset) / scale <= photo size on both axes.
        offset = np.clip(offset, [w - scale * pw, h - scale * ph], [0.0, 0.0])
    return scale, offset


def _ring(centre: np.ndarray, contour: np.ndarray, factor: float) -> np.ndarray:
    """The contour scaled by ``factor`` about ``centre`` (2D)."""
    return centre + factor * (contour - centre)


def _gl(xy_z: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """Output-pixel (x down-y, MediaPipe z) points to OpenGL axes relative to the pivot."""
    out = np.empty_like(xy_z)
    out[:, 0] = xy_z[:, 0] - pivot[0]
    out[:, 1] = -(xy_z[:, 1] - pivot[1])
    out[:, 2] = -(xy_z[:, 2] - pivot[2])
    return out


def build_rig(
    face: PhotoFace,
    size: tuple[int, int],
    *,
    frontalize: bool = True,
    face_frac: float = 0.46,
    oval_inset: float = 0.10,
    depth_scale: float = 1.7,
) -> Rig:
    """Warp points, neutral 3D head and triangulation for rendering ``face`` at ``size``.

    Points: the 478 landmarks; a skull ring (face oval x1.35: hair, ears, neck) that moves
    with the oval (the part under the chin at 70%, the neck lags); a shoulder ring (x2.1,
    15%); a static frame of points 20% beyond the image border (so hand shake never
    uncovers the corners). ``depth_scale`` deepens MediaPipe's relative depth (a landmarker
    measures only about 2/3 of a rotation applied to the raw points; 1.7 makes measured
    and rendered angles agree). With ``frontalize`` the photo's own head rotation is undone
    so that neutral is yaw = pitch = roll = 0 and scripted angles are absolute.
    """
    h, w = size
    scale, offset = _framing(face.points, size, face_frac, face.image.shape[:2])
    mesh = face.points.copy()
    mesh[:, :2] = mesh[:, :2] * scale + offset
    mesh[:, 2] *= scale
    oval_idx = np.array(FACE_OVAL)
    oval = mesh[oval_idx]
    centre2 = mesh[:, :2].mean(0)
    face_width = float(np.ptp(oval[:, 0]))
    # Rotation centre: between the ears (oval depth) and a little behind, where the neck is.
    pivot = np.array(
        [centre2[0], centre2[1] + 0.1 * face_width, oval[:, 2].mean() + 0.15 * face_width]
    )

    skull = _ring(centre2, oval[:, :2], 1.35)
    shoulder = _ring(centre2, oval[::2, :2], 2.1)
    # The oval landmarks sit on the photo's silhouette, some just outside it. Moving them
    # slightly inside (in the photo and the model alike, so neutral stays the identity)
    # keeps background out of the face triangles, which a head turn stretches several-fold
    # on the side that swings toward the camera; the edge then rides in the skull band.
    mesh[oval_idx, :2] = _ring(centre2, oval[:, :2], 1 - oval_inset)
    gx = np.linspace(-0.2 * w, 1.2 * w, 9)
    gy = np.linspace(-0.2 * h, 1.2 * h, 7)
    border = np.array(
        [(x, y) for x in gx for y in gy if x in (gx[0], gx[-1]) or y in (gy[0], gy[-1])]
    )

    framed = np.vstack([mesh[:, :2], skull, shoulder, border])
    under_chin = skull[:, 1] > mesh[152, 1] - 0.1 * face_width
    parent = np.concatenate(
        [np.arange(N_MESH), oval_idx, oval_idx[::2], np.zeros(len(border), int)]
    )
    follow = np.concatenate(
        [
            np.ones(N_MESH),
            np.where(under_chin, 0.7, 1.0),
            np.full(len(shoulder), 0.15),
            np.zeros(len(border)),
        ]
    )
    depth_offset = np.concatenate(
        [
            np.zeros(N_MESH),
            np.full(len(skull), -0.5 * face_width),
            np.full(len(shoulder), -2 * face_width),
            np.full(len(border), -5 * face_width),
        ]
    )

    mesh[:, 2] = pivot[2] + depth_scale * (mesh[:, 2] - pivot[2])
    head = _gl(mesh, pivot)
    if frontalize:
        head = head @ rotation_from_matrix(face.matrix)  # row form of R^T p: undo the photo's pose
    src = (framed - offset) / scale
    # Triangulate in the photo itself: a valid planar embedding whatever the pose.
    tri = Delaunay(src).simplices.astype(np.int32)
    mesh_tri = (tri < N_MESH).all(1)
    return Rig(
        src, framed, head, parent, follow, depth_offset, tri, mesh_tri, pivot, (h, w), face_width
    )


# --- expressions (deformations in the frontal head frame, GL axes: y up) -------------------
def _lid_curve(
    p: np.ndarray, idx: Sequence[int], corners: Sequence[int], x: np.ndarray
) -> np.ndarray:
    """y of the lid polyline through ``corners`` and ``idx`` interpolated at ``x``."""
    pts = p[list(corners) + list(idx)]
    order = np.argsort(pts[:, 0])
    return np.interp(x, pts[order, 0], pts[order, 1])


def _blink_eye(p: np.ndarray, eye, irises: np.ndarray, amount: float) -> np.ndarray:
    """Displacement closing one eye by ``amount`` in [0, 1].

    Points inside the opening (lids, iris) are squashed onto the closed-lid line, 30% up
    from the lower lid; the skin above the upper lid follows with a Gaussian fall-off
    (gentle enough that triangles never fold), stretching the lid over the eye.
    """
    corners, upper, lower = eye
    x = p[:, 0]
    xs = p[list(corners), 0]
    xc = np.clip(x, xs.min(), xs.max())
    y_up = _lid_curve(p, upper, corners, xc)
    y_lo = _lid_curve(p, lower, corners, xc)
    y_cl = y_lo + 0.3 * (y_up - y_lo)
    eye_w = float(np.ptp(xs))
    sigma = 0.32 * eye_w
    lateral = np.exp(-(((x - xc) / sigma) ** 2))
    y = p[:, 1]
    dy = np.zeros(len(p))
    inside = (y <= y_up + 1e-6) & (y >= y_lo - 1e-6) & (lateral > 0.99)
    inside[list(upper) + list(lower) + list(irises)] = True
    dy[inside] = (y_cl - y)[inside] * amount
    above = ~inside & (y > y_up)
    fall = np.exp(-(((y - y_up) / sigma) ** 2)) * lateral
    dy[above] = (-(y_up - y_cl) * fall * amount)[above]
    below = ~inside & (y < y_lo)
    fall_lo = np.exp(-(((y_lo - y) / (0.6 * sigma)) ** 2)) * lateral
    dy[below] = ((y_cl - y_lo) * fall_lo * amount)[below]
    # Keep far-away points (other eye, mouth) untouched despite the clipped x.
    near = np.abs(x - xs.mean()) < 1.5 * eye_w
    dy[~near] = 0.0
    out = np.zeros_like(p)
    out[:, 1] = dy
    return out


def _iris_split(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Iris landmark indices of the right and left eye, assigned by distance."""
    irises = np.array(IRISES)
    rc = p[list(RIGHT_EYE[0]), :2].mean(0)
    lc = p[list(LEFT_EYE[0]), :2].mean(0)
    d_r = np.linalg.norm(p[irises, :2] - rc, axis=1)
    d_l = np.linalg.norm(p[irises, :2] - lc, axis=1)
    return irises[d_r < d_l], irises[d_r >= d_l]


def _smile(p: np.ndarray, amount: float) -> np.ndarray:
    """Displacement pulling the mouth corners out and up and raising the cheeks."""
    c_r, c_l = p[MOUTH_CORNERS[0]], p[MOUTH_CORNERS[1]]
    mw = float(np.linalg.norm(c_l[:2] - c_r[:2]))
    mid = (c_r + c_l) / 2
    out = np.zeros_like(p)
    for c in (c_r, c_l):
        u = (c[:2] - mid[:2]) / np.linalg.norm(c[:2] - mid[:2])
        d = mw * (0.13 * u + np.array([0.0, 0.10]))
        wgt = np.exp(-np.sum((p[:, :2] - c[:2]) ** 2, 1) / (2 * (0.24 * mw) ** 2))
        out[:, :2] += amount * wgt[:, None] * d
        out[:, 2] -= amount * wgt * 0.06 * mw  # corners sink back into the cheeks
        cheek = c[:2] + mw * (0.2 * u + np.array([0.0, 0.45]))
        wc = np.exp(-np.sum((p[:, :2] - cheek) ** 2, 1) / (2 * (0.35 * mw) ** 2))
        out[:, 1] += amount * wc * 0.05 * mw
    # Lips part slightly so the teeth show.
    lower = list(INNER_LOWER_LIP[1:-1])
    out[lower, 1] -= amount * 0.05 * mw
    return out


def _jaw(p: np.ndarray, amount: float) -> np.ndarray:
    """Displacement dropping the jaw: lower lip, chin and jawline move down.

    Everything below the mouth line moves, with a lateral fall-off toward the jaw hinges;
    the tear is sharp between the inner lips and smooth beside the corners.
    """
    a, b = p[INNER_UPPER_LIP[0], :2], p[INNER_UPPER_LIP[-1], :2]
    halfw = float(np.linalg.norm(b - a)) / 2
    mx = (a[0] + b[0]) / 2
    x = p[:, 0]
    xc = np.clip(x, min(a[0], b[0]), max(a[0], b[0]))
    y_mid = 0.5 * (
        _lid_curve(p, INNER_UPPER_LIP[1:-1], INNER_UPPER_LIP[::10], xc)
        + _lid_curve(p, INNER_LOWER_LIP[1:-1], INNER_LOWER_LIP[::10], xc)
    )
    u = (x - mx) / halfw
    tau = 0.02 * halfw + 0.6 * halfw * np.maximum(0.0, np.abs(u) - 1.0)
    s = 1.0 / (1.0 + np.exp(-np.clip((y_mid - p[:, 1]) / tau, -50, 50)))
    s[list(INNER_UPPER_LIP)] = 0.0
    s[list(INNER_LOWER_LIP[1:-1])] = 1.0
    g = np.exp(-(u**2) / (2 * 1.6**2))
    out = np.zeros_like(p)
    out[:, 1] = -amount * 0.9 * halfw * s * g
    out[:, 2] = -amount * 0.15 * halfw * s * g  # the chin swings back a little
    return out


def deform(head: np.ndarray, blink: float, smile: float, mouth: float) -> np.ndarray:
    """The frontal mesh points (478, 3) with the expression applied."""
    d = np.zeros_like(head)
    if blink > 1e-3:
        ir_r, ir_l = _iris_split(head)
        d += _blink_eye(head, RIGHT_EYE, ir_r, blink) + _blink_eye(head, LEFT_EYE, ir_l, blink)
    if smile > 1e-3:
        d += _smile(head, smile)
    if mouth > 1e-3:
        d += _jaw(head, mouth)
    return head + d


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Head rotation in GL axes, ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``.

    Positive yaw turns the face toward +x (image right, the person's own left); positive
    pitch turns it toward +y (chin up). :func:`yaw_pitch_from_matrix` recovers both.
    """
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_points(
    rig: Rig, head: np.ndarray, yaw: float, pitch: float, roll: float, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project the (deformed) head: output-pixel positions (N, 2) and depths (N,).

    Mesh points are rotated about the pivot, shifted, and projected orthographically (the
    photo's own perspective is already baked into its landmarks); every other point moves
    by its parent's displacement times ``follow``. Depth is GL z: larger is nearer.
    """
    rot = head @ rotation(yaw, pitch, roll).T
    mesh_xy = np.column_stack([rig.pivot[0] + rot[:, 0], rig.pivot[1] - rot[:, 1]]) + shift
    disp = mesh_xy - rig.framed[:N_MESH]
    xy = rig.framed + rig.follow[:, None] * disp[rig.parent]
    depth = rig.follow * rot[rig.parent, 2] + rig.depth_offset
    return xy, depth


# --- the warp ------------------------------------------------------------------------------
def _affines(dst: np.ndarray, src: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Per-triangle 3x2 matrices A with ``[x, y, 1] @ A = source xy`` (batched solve)."""
    d = np.concatenate([dst[tri], np.ones((len(tri), 3, 1))], axis=2)
    s = src[tri]
    det = np.linalg.det(d)
    ok = np.abs(det) > 1e-9
    out = np.zeros((len(tri), 3, 2))
    out[ok] = np.linalg.solve(d[ok], s[ok])
    # A collapsed triangle covers no pixel; give it its centroid's source to be safe.
    out[~ok, 2] = s[~ok].mean(1)
    return out


def warp_frame(
    image: np.ndarray, rig: Rig, dst: np.ndarray, depth: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """Warp the photo so that ``rig.src`` lands on ``dst``, triangle by triangle.

    Triangles are rasterised into a label map far-to-near (painter's algorithm, so the
    near side of a turned face hides the far side); triangles whose orientation flipped
    face away from the camera and are culled (drawing them makes saw-tooth folds at the
    far cheek). Each pixel then takes its triangle's inverse affine map, and a single
    ``cv2.remap`` samples the photo. Pixels no triangle covers use ``fallback``, a 3x2
    output-to-photo affine.
    """
    h, w = rig.size
    tri = rig.triangles
    aff = _affines(dst, rig.src, tri)
    # det of the dst->src map < 0 means the triangle is seen from behind.
    det = aff[:, 0, 0] * aff[:, 1, 1] - aff[:, 0, 1] * aff[:, 1, 0]
    order = np.argsort(depth[tri].mean(1), kind="stable")
    # Cull only face-mesh triangles: a flipped background triangle is a fold of the
    # surroundings and must still be drawn, or the unwarped fallback shows through.
    order = order[(det[order] > 0) | ~rig.mesh_tri[order]]
    labels = np.zeros((h, w), np.uint16)
    fixed = np.round(dst * 16).astype(np.int32)
    for k in order:
        cv2.fillConvexPoly(labels, fixed[tri[k]], int(k) + 1, cv2.LINE_8, 4)
    aff = np.concatenate([fallback[None], aff]).astype(np.float32)
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    coef = [np.take(np.ascontiguousarray(aff[:, r, c]), labels) for r in range(3) for c in range(2)]
    map_x = coef[0] * xs + coef[2] * ys + coef[4]
    map_y = coef[1] * xs + coef[3] * ys + coef[5]
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def paint_mouth(frame: np.ndarray, dst: np.ndarray) -> None:
    """Fill the opening between the inner lips with a dark mouth and upper teeth."""
    poly = np.vstack([dst[list(INNER_UPPER_LIP)], dst[list(INNER_LOWER_LIP[-2:0:-1])]])
    gap = dst[list(INNER_LOWER_LIP[1:-1]), 1] - dst[list(INNER_UPPER_LIP[1:-1]), 1]
    if gap.max() < 1.0:
        return
    h, w = frame.shape[:2]
    x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int) - 3, 0)
    x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + 4, [w, h])
    if x1 <= x0 or y1 <= y0:
        return
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    mask = np.zeros(roi.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round((poly - [x0, y0]) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    teeth = np.zeros_like(mask)
    upper = dst[list(INNER_UPPER_LIP)] - [x0, y0]
    # A narrow gap (smile) shows only teeth; a wide one teeth at the top, dark below.
    band = upper + [0.0, min(gap.max(), 0.1 * np.ptp(poly[:, 0]))]
    cv2.fillPoly(
        teeth, [np.round(np.vstack([upper, band[::-1]]) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4
    )
    mask_f = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] / 255
    teeth_f = (cv2.GaussianBlur(teeth, (3, 3), 0).astype(np.float32)[..., None] / 255) * mask_f
    dark = np.array([28, 22, 45], np.float32)  # BGR: dark red-brown mouth cavity
    tooth = np.array([190, 205, 215], np.float32)
    roi = roi * (1 - mask_f) + dark * (mask_f - teeth_f) + tooth * teeth_f
    frame[y0:y1, x0:x1] = np.clip(roi, 0, 255).astype(np.uint8)


# --- scripts and motion --------------------------------------------------------------------
def parse_script(script: str | Sequence[str]) -> list[str]:
    """Action kinds from ``"blink,turn_left"`` or a list; unknown kinds raise ValueError."""
    kinds = [k.strip() for k in script.split(",")] if isinstance(script, str) else list(script)
    kinds = [k for k in kinds if k]
    bad = [k for k in kinds if k not in ACTION_KINDS]
    if bad:
        raise ValueError(f"unknown action(s) {bad}; choose from {ACTION_KINDS}")
    return kinds


def schedule(
    kinds: Sequence[str], duration: float | None = None, gap: float = 0.5
) -> tuple[list[Action], float]:
    """Lay actions out in time with neutral gaps; returns (actions, clip duration).

    Without ``duration`` every gap (also before the first and after the last action) is
    ``gap`` seconds; with it the spare time is shared equally among the gaps.
    """
    busy = sum(ACTION_TIMING[k].total for k in kinds)
    if duration is None:
        duration = busy + gap * (len(kinds) + 1)
    else:
        spare = duration - busy
        if spare < 0.2 * (len(kinds) + 1):
            raise ValueError(f"duration {duration}s too short for script ({busy:.2f}s of actions)")
        gap = spare / (len(kinds) + 1)
    actions, t = [], gap
    for k in kinds:
        tm = ACTION_TIMING[k]
        actions.append(
            Action(k, round(t, 4), round(t + tm.rise + tm.hold / 2, 4), round(t + tm.total, 4))
        )
        t += tm.total + gap
    return actions, duration


def envelope(t: np.ndarray, action: Action) -> np.ndarray:
    """Strength in [0, 1] of ``action`` at times ``t``: smooth rise, hold, smooth fall."""
    tm = ACTION_TIMING[action.kind]
    t_hold, t_fall = action.start + tm.rise, action.start + tm.rise + tm.hold

    def smooth(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3 - 2 * x)

    rise = smooth((t - action.start) / tm.rise)
    fall = 1 - smooth((t - t_fall) / tm.fall)
    return np.where(t < t_hold, rise, np.where(t <= t_fall, 1.0, fall))


def smooth_noise(
    rng: np.random.Generator, t: np.ndarray, freqs: tuple[float, float], n: int = 4
) -> np.ndarray:
    """A smooth random signal of unit RMS: a sum of ``n`` sinusoids, random frequency in
    ``freqs`` (Hz) and random phase."""
    f = rng.uniform(*freqs, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0.5, 1.0, n)
    s = (amp[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None])).sum(0)
    return s / math.sqrt(0.5 * float((amp**2).sum()))


def make_track(
    actions: Sequence[Action],
    n: int,
    fps: float,
    angle_deg: float,
    rng: np.random.Generator,
    camera: Camera,
    width: int,
    sway: bool = True,
) -> Track:
    """Per-frame parameters: scripted angles and expressions plus natural head sway, hand
    shake and exposure drift (all drawn from ``rng``, so a seed fixes the clip)."""
    t = np.arange(n) / fps
    env = {k: np.zeros(n) for k in ACTION_KINDS}
    for a in actions:
        env[a.kind] = np.maximum(env[a.kind], envelope(t, a))
    k = 1.0 if sway else 0.0
    px = width / 640.0
    return Track(
        yaw=angle_deg * (env["turn_left"] - env["turn_right"])
        + k * 0.8 * smooth_noise(rng, t, (0.1, 0.5)),
        pitch=angle_deg * (env["look_up"] - env["look_down"])
        + k * 0.8 * smooth_noise(rng, t, (0.1, 0.5)),
        roll=k * 1.0 * smooth_noise(rng, t, (0.05, 0.3)),
        blink=env["blink"],
        smile=env["smile"],
        mouth=env["open_mouth"],
        head_shift=k
        * 2.0
        * px
        * np.column_stack([smooth_noise(rng, t, (0.1, 0.6)) for _ in range(2)]),
        shake=np.column_stack(
            [
                camera.shake_px * px * smooth_noise(rng, t, (0.5, 3.0)),
                camera.shake_px * px * smooth_noise(rng, t, (0.5, 3.0)),
                camera.shake_deg * smooth_noise(rng, t, (0.3, 2.0)),
                0.006 * smooth_noise(rng, t, (0.2, 1.0)),
            ]
        ),
        gain=1.0
        + camera.exposure_drift * np.column_stack([smooth_noise(rng, t, (0.05, 0.4))] * 3)
        + 0.015 * np.column_stack([smooth_noise(rng, t, (0.05, 0.3)) for _ in range(3)]),
    )


# --- camera --------------------------------------------------------------------------------
def shake_matrix(shake: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """2x3 similarity for one frame's hand shake (dx, dy, roll deg, log scale)."""
    h, w = size
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(shake[2]), float(math.exp(shake[3])))
    m[:, 2] += shake[:2]
    return m


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """2x3 affine applied to (N, 2) points."""
    return pts @ m[:, :2].T + m[:, 2]


@dataclass(frozen=True)
class NoiseBank:
    """Pre-drawn unit Gaussian noise fields; each frame takes a random window of one.

    Drawing 1M Gaussian samples per frame costs more than the whole warp; shifted windows
    of a few larger fields are indistinguishable at sensor-noise amplitude.
    """

    fields: np.ndarray  # (K, H + M, W + M, 3) float32
    margin: int

    @classmethod
    def make(
        cls, rng: np.random.Generator, size: tuple[int, int], k: int = 3, margin: int = 64
    ) -> NoiseBank:
        h, w = size
        return cls(rng.standard_normal((k, h + margin, w + margin, 3), dtype=np.float32), margin)

    def sample(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        k, dy, dx = rng.integers(len(self.fields)), *rng.integers(0, self.margin, 2)
        return self.fields[k, dy : dy + size[0], dx : dx + size[1]]


def camera_effects(
    frame: np.ndarray, gain: np.ndarray, rng: np.random.Generator, camera: Camera, noise: NoiseBank
) -> np.ndarray:
    """Exposure/white-balance gain, a touch of lens blur, sensor noise and JPEG coding."""
    img = cv2.GaussianBlur(frame, (3, 3), 0.6).astype(np.float32)
    img *= gain.astype(np.float32)
    if camera.noise_sigma > 0:
        # Shot noise grows with brightness; read noise is the floor.
        sigma = (camera.noise_sigma / 255.0) * img + 0.5 * camera.noise_sigma
        img += sigma * noise.sample(rng, frame.shape[:2])
    out = np.clip(img, 0, 255).astype(np.uint8)
    if camera.jpeg_quality > 0:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg_quality])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def _fallback_map(rig: Rig) -> np.ndarray:
    """3x2 output-to-photo affine of the static background (least squares over the
    border points), for pixels that no drawn triangle covers."""
    static = rig.follow == 0
    a = np.column_stack([rig.framed[static], np.ones(int(static.sum()))])
    return np.linalg.lstsq(a, rig.src[static], rcond=None)[0]


# --- live clips ----------------------------------------------------------------------------
def _photo_name(photo) -> str:
    return "" if isinstance(photo, np.ndarray) else str(photo)


def render_live_frames(
    photo: str | Path | np.ndarray,
    script: str | Sequence[str] = "",
    *,
    size: tuple[int, int] = (480, 640),
    fps: float = 30,
    seed: int = 0,
    angle_deg: float = 25.0,
    duration: float | None = None,
    model_dir=None,
    camera: Camera | None = None,
    sway: bool = True,
    face: PhotoFace | None = None,
) -> Clip:
    """Render a live clip in memory: the photo's face performing ``script``.

    ``size`` is (height, width); ``duration`` defaults to the script's natural length
    (0.5 s neutral gaps). ``face`` skips the landmark detection when given. The same seed
    gives identical frames.
    """
    camera = camera or Camera()
    face = face or detect_photo_face(photo, model_dir)
    rig = build_rig(face, size)
    actions, duration = schedule(parse_script(script), duration)
    n = int(round(duration * fps))
    rng = np.random.default_rng(seed)
    track = make_track(actions, n, fps, angle_deg, rng, camera, size[1], sway)
    noise = NoiseBank.make(rng, size)
    fallback = _fallback_map(rig)
    frames = np.empty((n, *size, 3), np.uint8)
    for i in range(n):
        head = deform(rig.head, track.blink[i], track.smile[i], track.mouth[i])
        dst, depth = pose_points(
            rig, head, track.yaw[i], track.pitch[i], track.roll[i], track.head_shift[i]
        )
        dst = apply_affine(shake_matrix(track.shake[i], size), dst)
        frame = warp_frame(face.image, rig, dst, depth, fallback)
        if track.mouth[i] > 0.02 or track.smile[i] > 0.02:
            paint_mouth(frame, dst)
        frames[i] = camera_effects(frame, track.gain[i], rng, camera, noise)
    truth = GroundTruth(
        fps=float(fps),
        frames=n,
        attack=None,
        actions=tuple(actions),
        size=tuple(size),
        seed=seed,
        photo=_photo_name(photo),
        angle_deg=float(angle_deg),
        yaw_deg=tuple(float(v) for v in track.yaw),
        pitch_deg=tuple(float(v) for v in track.pitch),
    )
    return Clip(frames, truth)


# --- attacks -------------------------------------------------------------------------------
def room_background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A plausible out-of-focus indoor background: lit wall, a few furniture blocks."""
    h, w = size
    base = rng.uniform(110, 200) * np.array(rng.uniform(0.85, 1.1, 3))
    yy = np.linspace(1.1, 0.8, h)[:, None, None]
    xx = (1 + 0.15 * np.sin(np.linspace(0, np.pi, w) + rng.uniform(0, np.pi)))[None, :, None]
    img = np.broadcast_to(base * yy * xx, (h, w, 3)).astype(np.float32).copy()
    for _ in range(rng.integers(2, 5)):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(w // 8, w // 2), y0 + rng.integers(h // 8, h // 2)
        cv2.rectangle(
            img, (int(x0), int(y0)), (int(x1), int(y1)), rng.uniform(30, 230, 3).tolist(), -1
        )
    img = cv2.GaussianBlur(img, (0, 0), 0.012 * w)
    return np.clip(img, 0, 255).astype(np.uint8)


def _plane_homography(
    src_wh: tuple[float, float],
    centre: np.ndarray,
    width_px: float,
    yaw: float,
    pitch: float,
    roll: float,
    focal: float,
) -> np.ndarray:
    """Homography imaging a flat rectangle (``src_wh`` pixels) held facing the camera,
    ``width_px`` wide at neutral, tilted by the angles and viewed with ``focal`` px."""
    sw, sh = src_wh
    half = np.array([[-sw, -sh], [sw, -sh], [sw, sh], [-sw, sh]]) / 2 * (width_px / sw)
    pts3 = np.column_stack([half[:, 0], -half[:, 1], np.zeros(4)]) @ rotation(yaw, pitch, roll).T
    depth = focal * 2.0  # the plane sits at a distance where its neutral size is width_px
    scale = depth / (depth - pts3[:, 2])
    img = np.column_stack([centre[0] + pts3[:, 0] * scale, centre[1] - pts3[:, 1] * scale])
    src = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    return cv2.getPerspectiveTransform(src, img.astype(np.float32))


@dataclass(frozen=True)
class Hold:
    """Smooth motion of a hand-held flat object: per-frame centre, tilt and scale."""

    centre: np.ndarray  # (T, 2)
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    scale: np.ndarray


def hand_motion(
    rng: np.random.Generator, t: np.ndarray, size: tuple[int, int], tilt_deg: float
) -> Hold:
    """Slow drift and tilt of something held at arm's length (print or phone)."""
    h, w = size
    c = np.column_stack(
        [
            w / 2 + 0.03 * w * smooth_noise(rng, t, (0.1, 0.5)),
            0.5 * h + 0.03 * h * smooth_noise(rng, t, (0.1, 0.5)),
        ]
    )
    return Hold(
        centre=c,
        yaw=tilt_deg * smooth_noise(rng, t, (0.1, 0.4)),
        pitch=tilt_deg * smooth_noise(rng, t, (0.1, 0.4)),
        roll=0.4 * tilt_deg * smooth_noise(rng, t, (0.1, 0.4)),
        scale=1.0 + 0.03 * smooth_noise(rng, t, (0.1, 0.3)),
    )


def _skin_colour(face: PhotoFace) -> np.ndarray:
    """Median BGR of the cheeks, for fingers holding the print."""
    pts = face.points[[50, 280, 205, 425], :2].astype(int)
    h, w = face.image.shape[:2]
    samples = [face.image[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)] for x, y in pts]
    return np.median(np.array(samples, float), axis=0)


def print_sheet(face: PhotoFace, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The printed photo: a 4:5 portrait crop around the face with a white paper border,
    printer tone (lifted blacks, less contrast, warm paper), halftone dots and grain."""
    rig_scale, offset = _framing(face.points, (int(size[0] * 1.25), size[0]), 0.42)
    ph, pw = int(size[0] * 1.25), size[0]
    m = np.array([[rig_scale, 0, offset[0]], [0, rig_scale, offset[1]]])
    crop = cv2.warpAffine(
        face.image, m, (pw, ph), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT101
    )
    img = crop.astype(np.float32) * 0.82 + 25
    img *= np.array([0.94, 0.99, 1.03], np.float32)  # warm ink/paper cast (BGR)
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    dots = np.cos((xx + yy) * 2.1) * np.cos((xx - yy) * 2.1)
    img += 6 * dots[..., None]
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    b = int(0.06 * pw)
    paper = np.full((ph + 2 * b, pw + 2 * b, 3), (228, 236, 240), np.float32)
    paper[b:-b, b:-b] = img
    return np.clip(paper, 0, 255).astype(np.uint8)


def _composite(bg: np.ndarray, layer: np.ndarray, hom: np.ndarray) -> np.ndarray:
    """Paste ``layer`` onto ``bg`` through homography ``hom`` with an anti-aliased edge."""
    h, w = bg.shape[:2]
    warped = cv2.warpPerspective(layer, hom, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(
        np.full(layer.shape[:2], 255, np.uint8), hom, (w, h), flags=cv2.INTER_LINEAR
    )
    a = mask.astype(np.float32)[..., None] / 255
    return (bg * (1 - a) + warped * a).astype(np.float32)


def _draw_fingers(
    img: np.ndarray, hom: np.ndarray, sheet_wh: tuple[int, int], skin: np.ndarray
) -> None:
    """Two thumbs gripping the bottom corners of the sheet (moving with it)."""
    sw, sh = sheet_wh
    for fx in (0.1, 0.9):
        c = cv2.perspectiveTransform(np.array([[[fx * sw, 0.97 * sh]]], np.float32), hom)[0, 0]
        ax = cv2.perspectiveTransform(
            np.array([[[fx * sw + 0.07 * sw, 0.97 * sh]]], np.float32), hom
        )[0, 0]
        r = float(np.linalg.norm(ax - c))
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.ellipse(
            mask,
            (int(c[0]), int(c[1] + 0.8 * r)),
            (int(r), int(2.0 * r)),
            0,
            0,
            360,
            255,
            -1,
            cv2.LINE_AA,
        )
        mask = cv2.GaussianBlur(mask, (5, 5), 0)
        a = mask.astype(np.float32)[..., None] / 255
        shade = np.linspace(1.05, 0.8, img.shape[0], dtype=np.float32)[:, None, None]
        img[:] = img * (1 - a) + (skin.astype(np.float32) * shade) * a


def render_print(
    face: PhotoFace, size, fps, n, rng, camera: Camera, fingers: bool = True
) -> np.ndarray:
    """Frames of a printed photo held in front of the camera (rigid planar motion)."""
    t = np.arange(n) / fps
    sheet = print_sheet(face, size, rng)
    sh, sw = sheet.shape[:2]
    bg = room_background(size, rng)
    hold = hand_motion(rng, t, size, tilt_deg=6.0)
    skin = _skin_colour(face)
    frames = np.empty((n, *size, 3), np.uint8)
    for i in range(n):
        hom = _plane_homography(
            (sw, sh),
            hold.centre[i],
            0.62 * size[0] * hold.scale[i] * sw / sh * 1.25,
            hold.yaw[i],
            hold.pitch[i],
            hold.roll[i],
            focal=1.2 * size[1],
        )
        img = _composite(bg, sheet, hom)
        # Paper is matte but not flat: a broad sheen that slides as the sheet tilts.
        yy = np.linspace(-1, 1, size[0], dtype=np.float32)[:, None]
        xx = np.linspace(-1, 1, size[1], dtype=np.float32)[None, :]
        sheen = np.exp(-((xx - 0.02 * hold.yaw[i]) ** 2 + (yy + 0.02 * hold.pitch[i]) ** 2) / 0.3)
        img += (14 * sheen)[..., None]
        if fingers:
            _draw_fingers(img, hom, (sw, sh), skin)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


@dataclass(frozen=True)
class Screen:
    """A phone screen showing frames, precomputed once per clip.

    ``lut``: display tone curve (gamma 1.25, raised black level, cooler white point) as a
    per-channel 8-bit table; ``grid``: the RGB sub-pixel stripes and dark row gaps at
    ``sub`` camera-scale pixels per screen pixel (the camera's resampling of this grid
    makes moiré); ``glare``: a soft reflection of a room light fixed on the glass.
    """

    lut: np.ndarray
    grid: np.ndarray
    glare: np.ndarray
    bezel: tuple[int, int]
    sub: int

    @classmethod
    def make(cls, frame_hw: tuple[int, int], rng: np.random.Generator, sub: int = 2) -> Screen:
        v = np.arange(256, dtype=np.float32) / 255
        tone = (v**1.25) * 0.85 + 0.07
        lut = np.stack([tone * 1.07, tone, tone * 0.9], axis=1) * 255  # BGR
        lut = np.clip(lut, 0, 255).astype(np.uint8)[None]
        h, w = frame_hw[0] * sub, frame_hw[1] * sub
        cols, rows = np.arange(w) % sub, np.arange(h) % sub
        grid = np.empty((h, w, 3), np.float32)
        for c in range(3):  # column c of each pixel lights channel 2-c (R, G, B left to right)
            grid[..., 2 - c] = np.where(cols == c % sub, 1.0, 0.45)[None, :]
        grid *= np.where(rows == sub - 1, 0.7, 1.0)[:, None, None]
        grid = np.clip(grid * 255 * 1.25, 0, 255).astype(np.uint8)
        bez = (max(6, h // 20), max(10, w // 14))
        dh, dw = h + 2 * bez[0], w + 2 * bez[1]
        gx, gy = rng.uniform(0.2, 0.8, 2)
        yy = np.linspace(0, 1, dh, dtype=np.float32)[:, None]
        xx = np.linspace(0, 1, dw, dtype=np.float32)[None, :]
        glare = 60 * np.exp(-((xx - gx) ** 2 / 0.02 + (yy - gy) ** 2 / 0.06))
        glare = np.repeat(glare[..., None], 3, axis=2).astype(np.uint8)
        return cls(lut, grid, glare, bez, sub)

    def device(self, frame: np.ndarray, t: float) -> np.ndarray:
        """The phone (screen and bezel) showing ``frame`` at time ``t``, with a refresh band
        rolling down the screen."""
        img = cv2.LUT(frame, self.lut)
        h = img.shape[0]
        band = 1 - 0.1 * np.exp(-(((np.arange(h) / h - (t * 0.7) % 1.3 + 0.15) / 0.08) ** 2))
        img = (img * band[:, None, None].astype(np.float32)).astype(np.uint8)
        big = cv2.resize(img, None, fx=self.sub, fy=self.sub, interpolation=cv2.INTER_NEAREST)
        big = cv2.multiply(big, self.grid, scale=1 / 255)
        by, bx = self.bezel
        dev = cv2.copyMakeBorder(big, by, by, bx, bx, cv2.BORDER_CONSTANT, value=(18, 18, 20))
        return cv2.add(dev, self.glare)


def render_replay(
    face: PhotoFace, size, fps, n, rng, camera: Camera, script: str, seed: int, angle_deg: float
) -> tuple[np.ndarray, Clip]:
    """Frames of a live clip replayed on a phone screen held in front of the camera."""
    t = np.arange(n) / fps
    kinds = parse_script(script)
    busy = sum(ACTION_TIMING[k].total for k in kinds) + 0.2 * (len(kinds) + 1)
    live = render_live_frames(
        "",
        kinds if busy <= n / fps else [],
        size=size,
        fps=fps,
        seed=seed + 1,
        angle_deg=angle_deg,
        duration=n / fps,
        face=face,
    )
    bg = room_background(size, rng)
    hold = hand_motion(rng, t, size, tilt_deg=4.0)
    screen = Screen.make(size, rng)
    frames = np.empty((n, *size, 3), np.uint8)
    for i in range(n):
        dev = screen.device(live.frames[min(i, len(live.frames) - 1)], float(t[i]))
        dh, dw = dev.shape[:2]
        hom = _plane_homography(
            (dw, dh),
            hold.centre[i],
            0.8 * size[1] * hold.scale[i],
            hold.yaw[i],
            hold.pitch[i],
            hold.roll[i],
            focal=1.2 * size[1],
        )
        frames[i] = np.clip(_composite(bg, dev, hom), 0, 255).astype(np.uint8)
    return frames, live


def _finish_attack(
    frames: np.ndarray, fps: float, rng: np.random.Generator, camera: Camera, shake: bool
) -> np.ndarray:
    """Camera shake (if not already in the motion), exposure drift, noise and JPEG."""
    n, h, w = frames.shape[:3]
    track = make_track([], n, fps, 0.0, rng, camera, w, sway=False)
    noise = NoiseBank.make(rng, (h, w))
    out = np.empty_like(frames)
    for i in range(n):
        f = frames[i]
        if shake:
            f = cv2.warpAffine(
                f,
                shake_matrix(track.shake[i], (h, w)),
                (w, h),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT101,
            )
        out[i] = camera_effects(f, track.gain[i], rng, camera, noise)
    return out


def render_attack_frames(
    photo: str | Path | np.ndarray,
    kind: str,
    *,
    size: tuple[int, int] = (480, 640),
    fps: float = 30,
    seed: int = 0,
    duration: float = 4.0,
    model_dir=None,
    camera: Camera | None = None,
    fingers: bool = True,
    replay_script: str = "blink,turn_left",
    angle_deg: float = 25.0,
    face: PhotoFace | None = None,
) -> Clip:
    """Render an attack clip in memory: ``print``, ``replay`` or ``still``.

    The ground truth has ``attack = kind`` and no actions (even if a replayed clip shows
    some: the person in front of the camera performs none).
    """
    if kind not in ATTACK_KINDS:
        raise ValueError(f"unknown attack {kind!r}; choose from {ATTACK_KINDS}")
    camera = camera or Camera()
    face = face or detect_photo_face(photo, model_dir)
    n = int(round(duration * fps))
    rng = np.random.default_rng(seed)
    if kind == "still":
        clip = render_live_frames(
            photo,
            "",
            size=size,
            fps=fps,
            seed=seed,
            duration=duration,
            camera=camera,
            sway=False,
            face=face,
        )
        frames = clip.frames
    elif kind == "print":
        frames = _finish_attack(
            render_print(face, size, fps, n, rng, camera, fingers), fps, rng, camera, True
        )
    else:
        raw, _ = render_replay(face, size, fps, n, rng, camera, replay_script, seed, angle_deg)
        frames = _finish_attack(raw, fps, rng, camera, True)
    truth = GroundTruth(
        fps=float(fps),
        frames=len(frames),
        attack=kind,
        actions=(),
        size=tuple(size),
        seed=seed,
        photo=_photo_name(photo),
    )
    return Clip(frames, truth)


# --- files ---------------------------------------------------------------------------------
def truth_path(clip_path: str | Path) -> Path:
    """The ground-truth JSON beside a clip (same stem)."""
    return Path(clip_path).with_suffix(".json")


def write_clip(clip: Clip, out_path: str | Path) -> Path:
    """Write the frames as a video (``.mp4``: MPEG-4 Part 2 'mp4v'; ``.avi``: MJPG) and
    the ground truth as JSON beside it. Returns the video path."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if out.suffix.lower() == ".avi" else "mp4v"))
    h, w = clip.frames.shape[1:3]
    writer = cv2.VideoWriter(str(out), fourcc, clip.truth.fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot open video writer for {out}")
    try:
        for f in clip.frames:
            writer.write(f)
    finally:
        writer.release()
    truth_path(out).write_text(json.dumps(clip.truth.to_dict(), indent=1))
    return out


def load_ground_truth(clip_path: str | Path) -> GroundTruth:
    """Read the JSON ground truth written beside ``clip_path``."""
    return GroundTruth.from_dict(json.loads(truth_path(clip_path).read_text()))


def render_live(photo, script, out_path, **kwargs) -> Path:
    """Render a live clip (see :func:`render_live_frames`) to ``out_path`` plus JSON."""
    return write_clip(render_live_frames(photo, script, **kwargs), out_path)


def render_attack(photo, kind, out_path, **kwargs) -> Path:
    """Render an attack clip (see :func:`render_attack_frames`) to ``out_path`` plus JSON."""
    return write_clip(render_attack_frames(photo, kind, **kwargs), out_path)


def active_actions(truth: GroundTruth, t: float) -> list[str]:
    """Kinds of the actions under way at time ``t``."""
    return [a.kind for a in truth.actions if a.start <= t <= a.end]


def contact_sheet(
    clip: Clip, path: str | Path, cols: int = 6, rows: int = 4, thumb_w: int = 240
) -> Path:
    """A PNG grid of frames sampled evenly over the clip, labelled with time and actions."""
    n = len(clip.frames)
    k = min(n, cols * rows)
    idx = np.linspace(0, n - 1, k).round().astype(int)
    # Make sure every action's peak frame is shown: replace the nearest even sample.
    for a in clip.truth.actions:
        p = min(n - 1, int(round(a.peak * clip.truth.fps)))
        if p not in idx:
            idx[np.argmin(np.abs(idx - p))] = p
    idx = np.unique(idx)
    h, w = clip.frames.shape[1:3]
    th = int(round(thumb_w * h / w))
    tiles = []
    for i in idx:
        tile = cv2.resize(clip.frames[i], (thumb_w, th), interpolation=cv2.INTER_AREA)
        t = i / clip.truth.fps
        label = f"{t:.2f}s " + " ".join(active_actions(clip.truth, t))
        if clip.truth.attack:
            label = f"{t:.2f}s {clip.truth.attack}"
        cv2.rectangle(tile, (0, 0), (thumb_w, 18), (0, 0, 0), -1)
        cv2.putText(
            tile, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA
        )
        tiles.append(tile)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack(
        [np.hstack(tiles[r * cols : (r + 1) * cols]) for r in range(len(tiles) // cols)]
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid)
    return path


# --- CLI -----------------------------------------------------------------------------------
def _parse_size(text: str) -> tuple[int, int]:
    """``"480x640"`` (height x width) to (480, 640)."""
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: render one live or attack clip (and optionally a contact sheet)."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.render", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--photo", required=True, help="source face photo")
    ap.add_argument("--script", default="", help='live actions, e.g. "blink,turn_left,smile"')
    ap.add_argument("--attack", choices=ATTACK_KINDS, help="render an attack clip instead")
    ap.add_argument("--out", required=True, help="output directory (or a .mp4/.avi file path)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument(
        "--size", type=_parse_size, default=(480, 640), help="HEIGHTxWIDTH, e.g. 480x640"
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds (default: script length; 4 s for attacks)",
    )
    ap.add_argument("--angle", type=float, default=25.0, help="yaw/pitch angle of turns, degrees")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--contact-sheet", default=None, help="also write a contact sheet PNG here")
    args = ap.parse_args(argv)

    common = dict(size=args.size, fps=args.fps, seed=args.seed, model_dir=args.model_dir)
    if args.attack:
        clip = render_attack_frames(
            args.photo, args.attack, duration=args.duration or 4.0, angle_deg=args.angle, **common
        )
        name = f"{Path(args.photo).stem}_{args.attack}_s{args.seed}.mp4"
    else:
        clip = render_live_frames(
            args.photo, args.script, duration=args.duration, angle_deg=args.angle, **common
        )
        tag = "-".join(parse_script(args.script)) or "neutral"
        name = f"{Path(args.photo).stem}_live_{tag}_s{args.seed}.mp4"
    out = Path(args.out)
    path = write_clip(clip, out if out.suffix.lower() in (".mp4", ".avi") else out / name)
    print(path)
    if args.contact_sheet:
        print(contact_sheet(clip, args.contact_sheet))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
