"""Face detection: one class per detector model contract (YuNet, SCRFD), run through ONNX
Runtime. Both give :class:`Face` s with the same 5 points in the same order, so either can
serve the pipeline (see :mod:`liveness.parts`).

:class:`FaceDetector` (``yunet``): the 2023mar YuNet graph takes a fixed
``[1, 3, 640, 640]`` BGR 0-255 input. The image is scaled to fit (aspect kept) and padded
at the bottom and right, and the outputs are decoded here as OpenCV's ``FaceDetectorYN``
decodes them: for each stride ``s`` of 8, 16, 32 and each grid cell ``(row, col)``,
score = sqrt(cls * obj), centre = ``(col + dx, row + dy) * s``, size = ``exp(dw, dh) * s``,
landmarks = ``(col + kx, row + ky) * s``.

:class:`ScrfdDetector` (``scrfd_500m``): see its docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .runtime import OnnxModel

INPUT_SIZE = 640
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Face:
    """A detected face in image pixels.

    ``box`` is ``(x1, y1, x2, y2)``; ``points`` is ``(5, 2)``: the eye on the image's left
    (the person's right eye), the other eye, nose tip, left and right mouth corners in image
    order, the same order as the ArcFace template.
    """

    box: np.ndarray
    points: np.ndarray
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """Side of the face box (the smaller of width and height), in pixels."""
        return min(self.width, self.height)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


def _priors() -> list[tuple[int, np.ndarray]]:
    out = []
    for s in STRIDES:
        n = INPUT_SIZE // s
        rows, cols = np.mgrid[0:n, 0:n]
        out.append((s, np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)))
    return out


_PRIORS = _priors()


class FaceDetector:
    """YuNet detector over an ONNX Runtime session.

    Parameters
    ----------
    model : the loaded ``yunet`` model (:meth:`liveness.runtime.Runtime.onnx`).
    score_threshold : minimum face score.
    nms_threshold : IoU above which overlapping boxes are merged.
    """

    def __init__(
        self, model: OnnxModel, score_threshold: float = 0.6, nms_threshold: float = 0.3
    ) -> None:
        self.model = model
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold

    def with_threshold(self, score_threshold: float) -> FaceDetector:
        """The same model and NMS with another score threshold (shares the session)."""
        return FaceDetector(self.model, score_threshold, self.nms_threshold)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, best score first."""
        h, w = image.shape[:2]
        scale = INPUT_SIZE / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=interp)
        blob = canvas.transpose(2, 0, 1)[None]
        outputs = dict(
            zip(
                (o.name for o in self.model.session.get_outputs()),
                self.model.run(blob),
                strict=True,
            )
        )
        boxes, points, scores = [], [], []
        for s, prior in _PRIORS:
            cls = outputs[f"cls_{s}"][0, :, 0]
            obj = outputs[f"obj_{s}"][0, :, 0]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = score >= self.score_threshold
            if not keep.any():
                continue
            bbox = outputs[f"bbox_{s}"][0, keep]
            kps = outputs[f"kps_{s}"][0, keep].reshape(-1, 5, 2)
            p = prior[keep]
            centre = (p + bbox[:, :2]) * s
            size = np.exp(bbox[:, 2:4]) * s
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            points.append((kps + p[:, None, :]) * s)
            scores.append(score[keep])
        if not scores:
            return []
        boxes_a = np.concatenate(boxes) / scale
        points_a = np.concatenate(points) / scale
        scores_a = np.concatenate(scores)
        xywh = np.concatenate([boxes_a[:, :2], boxes_a[:, 2:] - boxes_a[:, :2]], axis=1)
        idx = cv2.dnn.NMSBoxes(
            xywh.tolist(), scores_a.tolist(), self.score_threshold, self.nms_threshold
        )
        idx = np.asarray(idx, dtype=int).ravel()
        faces = []
        for i in sorted(idx, key=lambda i: -scores_a[i]):
            box = boxes_a[i].copy()
            box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            faces.append(Face(box, points_a[i].astype(np.float32), float(scores_a[i])))
        return faces


class ScrfdDetector:
    """InsightFace SCRFD (``scrfd_500m``: ``det_500m.onnx`` of the buffalo_sc pack).

    Contract, as InsightFace's ``model_zoo/scrfd.py`` runs it: the image scaled to fit
    ``input_size`` (aspect kept, padded at the bottom and right), RGB, ``(x - 127.5) / 128``;
    outputs per stride 8, 16, 32 with 2 anchors per cell: score, box as distances
    ``(left, top, right, bottom)`` from the anchor centre and 5 keypoints as offsets, all in
    units of the stride. The keypoints are the eyes, nose tip and mouth corners in image
    order, the same order as :class:`FaceDetector`'s.

    Parameters
    ----------
    model : the loaded ``scrfd_500m`` model.
    score_threshold : minimum face score (InsightFace's default 0.5).
    nms_threshold : IoU above which overlapping boxes are merged (InsightFace: 0.4).
    input_size : side of the square network input (640, as InsightFace's ``det_size``).
    """

    ANCHORS = 2

    def __init__(
        self,
        model: OnnxModel,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        input_size: int = INPUT_SIZE,
    ) -> None:
        self.model = model
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.input_size = input_size
        self._centres = {s: _anchor_centres(input_size // s, s, self.ANCHORS) for s in STRIDES}

    def with_threshold(self, score_threshold: float) -> ScrfdDetector:
        """The same model, NMS and input size with another score threshold."""
        return ScrfdDetector(self.model, score_threshold, self.nms_threshold, self.input_size)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, best score first."""
        h, w = image.shape[:2]
        n = self.input_size
        scale = n / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((n, n, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        blob = (canvas[:, :, ::-1].astype(np.float32) - 127.5) / 128.0
        outs = self.model.run(np.ascontiguousarray(blob.transpose(2, 0, 1))[None])
        k = len(STRIDES)
        boxes, points, scores = [], [], []
        for j, s in enumerate(STRIDES):
            score = outs[j].reshape(-1)
            keep = score >= self.score_threshold
            if not keep.any():
                continue
            c = self._centres[s][keep]
            d = outs[j + k].reshape(-1, 4)[keep] * s
            kp = outs[j + 2 * k].reshape(-1, 5, 2)[keep] * s
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
            points.append(kp + c[:, None, :])
            scores.append(score[keep])
        if not scores:
            return []
        return _nms_faces(
            np.concatenate(boxes) / scale,
            np.concatenate(points) / scale,
            np.concatenate(scores).astype(np.float64),
            (w, h),
            self.score_threshold,
            self.nms_threshold,
        )


def _anchor_centres(cells: int, stride: int, anchors: int) -> np.ndarray:
    """``(cells * cells * anchors, 2)`` anchor centres (x, y) in input pixels, row-major,
    each repeated ``anchors`` times (SCRFD's output order)."""
    rows, cols = np.mgrid[0:cells, 0:cells]
    xy = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32) * stride
    return np.repeat(xy, anchors, axis=0)


def _nms_faces(
    boxes: np.ndarray,
    points: np.ndarray,
    scores: np.ndarray,
    size: tuple[int, int],
    score_threshold: float,
    nms_threshold: float,
) -> list[Face]:
    """Non-maximum suppression of ``(N, 4)`` boxes in image pixels; the kept faces, boxes
    clipped to the image ``size`` (w, h), best score first, those under 2 px dropped."""
    w, h = size
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), score_threshold, nms_threshold)
    faces = []
    for i in sorted(np.asarray(idx, dtype=int).ravel(), key=lambda i: -scores[i]):
        box = boxes[i].astype(np.float32).copy()
        box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
        box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        faces.append(Face(box, points[i].astype(np.float32), float(scores[i])))
    return faces
