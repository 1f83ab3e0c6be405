"""5-point similarity alignment: the ArcFace 112x112 template, and dlib's 150x150 face chip.

Both take the library's 5 points (YuNet order: eye centres, nose tip, mouth corners).
:func:`align_face` cuts ArcFace-format faces; :func:`dlib_chip` cuts the chip dlib's ResNet
descriptor expects (dlib's ``get_face_chip`` geometry, padding 0.25).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

# InsightFace's template for 112x112 crops: eye centres, nose tip, mouth corners, in image
# order (the eye on the image's left first).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_matrix(points: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) taking ``points`` to the
    template scaled to ``size``, by least squares (Umeyama)."""
    dst = ARCFACE_TEMPLATE * (size / 112.0)
    tform = (
        SimilarityTransform.from_estimate(np.asarray(points, np.float64), dst)
        if hasattr(SimilarityTransform, "from_estimate")
        else None
    )
    if tform is None:
        tform = SimilarityTransform()
        tform.estimate(np.asarray(points, np.float64), dst)
    return tform.params[:2]


def align_face(image: np.ndarray, points: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image`` so that the 5 ``points`` land on the ArcFace template; a new array."""
    m = similarity_matrix(points, size)
    return cv2.warpAffine(
        image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


# dlib's get_face_chip_details template for its 5-point shape predictor (dlib
# image_transforms/interpolation.h), in [0, 1] chip units before padding: outer and inner
# corner of the eye on the image's right, outer and inner corner of the other eye, nose base.
DLIB5_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)


def dlib5_chip_points(size: int = 150, padding: float = 0.25) -> np.ndarray:
    """Where dlib's ``get_face_chip(img, shape5, size, padding)`` puts its 5 landmarks."""
    return (padding + DLIB5_TEMPLATE) / (2 * padding + 1) * size


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity taking ``src`` points to ``dst`` (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if hasattr(SimilarityTransform, "from_estimate"):
        return SimilarityTransform.from_estimate(src, dst).params[:2]
    tform = SimilarityTransform()
    tform.estimate(src, dst)
    return tform.params[:2]


# The library's 5 points (YuNet order: eye centres, nose tip, mouth corners) in dlib's
# 150x150 face chip (padding 0.25). Measured: mean position, in chips cut by dlib's own
# pipeline (HOG detector + shape_predictor_5_face_landmarks + get_face_chip), of the YuNet
# points of the same face, over the first 1,000 LFW View 1 DevTrain images (989 with both faces)
# (python -m benchmarks.dlib_resnet template; DevTest untouched). Aligning these points to
# this template reproduces dlib's chip geometry from the library's own landmarks.
DLIB_CHIP_TEMPLATE = np.array(
    [
        [48.557, 45.4651],
        [101.5706, 45.4802],
        [75.2696, 77.3997],
        [52.5467, 103.5288],
        [97.5497, 103.5692],
    ],
    dtype=np.float64,
)  # std over the 989 faces used: 1.9-2.4 px at the eyes, 2.4-6.1 px at the nose, 4-4.9 mouth


def dlib_chip_matrix(points: np.ndarray, size: int = 150) -> np.ndarray:
    """2x3 similarity taking the library's 5 points to :data:`DLIB_CHIP_TEMPLATE`."""
    return _similarity(points, DLIB_CHIP_TEMPLATE * (size / 150.0))


def warp_chip(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """``size``x``size`` chip of ``image`` under the 2x3 image-to-chip matrix ``m``.

    A chip much smaller than the face it covers is cut from a shrunken copy (area
    interpolation), as dlib's ``extract_image_chip`` uses an image pyramid, so that fine
    texture does not alias."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        f = 0.5 / scale
        h, w = image.shape[:2]
        image = cv2.resize(
            image, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA
        )
        m = m.copy()
        m[:, :2] *= f
    return cv2.warpAffine(
        image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def dlib_chip(image: np.ndarray, points: np.ndarray, size: int = 150) -> np.ndarray:
    """dlib's 150x150 face chip (padding 0.25) cut from the library's 5 points; a new array."""
    return warp_chip(image, dlib_chip_matrix(points, size), size)
