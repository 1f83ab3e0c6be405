"""Passive presentation-attack detection: is the face in a frame live, or a print or screen?

The default is the Silent-Face pair used as upstream uses it: MiniFASNetV2 on a crop of the
face box scaled 2.7x and MiniFASNetV1SE on one scaled 4.0x, each resized to 80x80 BGR
(0-255, not normalised), their softmax averaged; class 1 is live. The crop follows
Silent-Face's ``CropImage``: the scaled box is shifted (not cut) to stay inside the image,
and the scale is reduced when the image is too small to hold it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .runtime import OnnxModel


@dataclass(frozen=True)
class PadModelContract:
    """How one anti-spoofing model wants its crop and which output class is live."""

    scale: float
    size: int
    live_class: int
    rgb: bool = False
    divide: float = 1.0


PAD_CONTRACTS = {
    "minifasnet_v2": PadModelContract(scale=2.7, size=80, live_class=1),
    "minifasnet_v1se": PadModelContract(scale=4.0, size=80, live_class=1),
    "antispoofing_print_replay": PadModelContract(
        scale=1.5, size=128, live_class=0, rgb=True, divide=255.0
    ),
}


def scaled_crop_box(
    image_shape: tuple[int, ...], box: np.ndarray, scale: float
) -> tuple[int, int, int, int]:
    """Silent-Face's crop: ``box`` (x1, y1, x2, y2) scaled around its centre, kept inside.

    Returns integer ``(x1, y1, x2, y2)``, inclusive of ``x2, y2``.
    """
    src_h, src_w = image_shape[:2]
    x, y = float(box[0]), float(box[1])
    bw, bh = max(float(box[2] - box[0]), 1.0), max(float(box[3] - box[1]), 1.0)
    scale = min((src_h - 1) / bh, (src_w - 1) / bw, scale)
    nw, nh = bw * scale, bh * scale
    cx, cy = x + bw / 2, y + bh / 2
    x1, y1, x2, y2 = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if x1 < 0:
        x2 -= x1
        x1 = 0
    if y1 < 0:
        y2 -= y1
        y1 = 0
    if x2 > src_w - 1:
        x1 -= x2 - src_w + 1
        x2 = src_w - 1
    if y2 > src_h - 1:
        y1 -= y2 - src_h + 1
        y2 = src_h - 1
    return int(x1), int(y1), int(x2), int(y2)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class PresentationAttackDetector:
    """Live probability of a face, from an ensemble of anti-spoofing models.

    Parameters
    ----------
    models : loaded models; their live probabilities are averaged.
    contracts : each model's :class:`PadModelContract`, in the same order (default: from
        :data:`PAD_CONTRACTS` by model name; :mod:`liveness.parts` passes its registry's).
    """

    def __init__(
        self, models: list[OnnxModel], contracts: list[PadModelContract] | None = None
    ) -> None:
        self.models = models
        self.contracts = (
            [PAD_CONTRACTS[m.name] for m in models] if contracts is None else list(contracts)
        )
        if len(self.contracts) != len(self.models):
            raise ValueError(f"{len(self.contracts)} contracts for {len(self.models)} PAD models")

    def live_probability(self, image: np.ndarray, box: np.ndarray) -> float:
        """Mean live probability over the ensemble for the face at ``box`` in ``image``."""
        return float(np.mean(self.per_model(image, box)))

    def per_model(self, image: np.ndarray, box: np.ndarray) -> list[float]:
        """Each model's live probability for one face."""
        return [float(p[0]) for p in self._probabilities([(image, box)])]

    def per_model_many(self, faces: list[tuple[np.ndarray, np.ndarray]]) -> list[list[float]]:
        """:meth:`per_model` of each ``(image, box)``: ``[n_faces][n_models]``, with one call
        per model for all the faces where the model takes a batch."""
        if not faces:
            return []
        per_model = np.asarray(self._probabilities(faces), dtype=np.float64)
        return [[float(x) for x in col] for col in per_model.T]

    def live_probabilities(self, faces: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        """:meth:`live_probability` of each ``(image, box)``, with one model call per model
        for all the faces where the model takes a batch (:attr:`OnnxModel.accepts_batch`).

        The MiniFASNet pair gives bit-identical scores in a batch and one at a time (checked
        in ``tests/test_batching.py``), so batching changes no decision.
        """
        return [float(np.mean(p)) for p in self.per_model_many(faces)]

    def _probabilities(self, faces: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Per model, the live probability of each face: ``[n_models][n_faces]``."""
        out = []
        for m, c in zip(self.models, self.contracts, strict=True):
            x = np.stack([_pad_input(image, box, c) for image, box in faces])
            if m.accepts_batch:
                logits = m.run(x)[0]
            else:  # a fixed batch of 1 in the file
                logits = np.concatenate([m.run(x[k : k + 1])[0] for k in range(len(x))])
            out.append(_softmax(logits)[:, c.live_class])
        return out


def _pad_input(image: np.ndarray, box: np.ndarray, c: PadModelContract) -> np.ndarray:
    """The ``(3, size, size)`` float32 input of one face for a model with contract ``c``."""
    x1, y1, x2, y2 = scaled_crop_box(image.shape, box, c.scale)
    crop = image[max(y1, 0) : y2 + 1, max(x1, 0) : x2 + 1]
    crop = cv2.resize(crop, (c.size, c.size), interpolation=cv2.INTER_LINEAR)
    if c.rgb:
        crop = crop[:, :, ::-1]
    return np.ascontiguousarray(crop.astype(np.float32).transpose(2, 0, 1) / c.divide)


def pool(scores: list[float], how: str = "median") -> float:
    """One live score for a recording from its frames' scores: ``median`` (one frame with
    motion blur or a half-closed eye does not pull the clip down, nor does one lucky frame
    lift a replay) or ``mean``. Measured on the shared real clips: benchmarks/README.md,
    "Real recordings"."""
    if not scores:
        raise ValueError("no frame scores to pool")
    if how == "median":
        return float(np.median(scores))
    if how == "mean":
        return float(np.mean(scores))
    raise ValueError(f"unknown pooling {how!r}")
