"""5-point similarity alignment to the ArcFace 112x112 template."""

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
