"""Face embedding: one class per model input contract, and comparison of embeddings.

Like InsightFace's model_zoo, each embedder class owns its model's whole input contract,
alignment included: ``align(image, points)`` cuts the face the model expects from the
library's 5 points, ``embed(faces)`` turns such faces into unit-length vectors.

* :class:`FaceEmbedder` (``ArcFaceEmbedder``): any ArcFace-format model (``w600k_mbf``,
  ``sface``, a caller's own): 112x112 face on the ArcFace 5-point template;
  :class:`EmbedderContract` says how its pixels are scaled.
* :class:`DlibResNetEmbedder` (``dlib_resnet``): dlib's ResNet converted to ONNX
  (:mod:`liveness.dlib_convert`): dlib's 150x150 face chip, RGB 0-255 (the model subtracts
  dlib's channel means and divides by 256 itself), 128-d.

:func:`make_embedder` picks the class for a model name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .align import align_face, dlib_chip
from .runtime import OnnxModel, Runtime


@dataclass(frozen=True)
class EmbedderContract:
    """Input preparation: ``(pixel - mean) / std`` in RGB or BGR order.

    ``batch``: the model may embed several faces in one call, with the same result as one at
    a time (the file must also declare a free batch dimension: ``OnnxModel.accepts_batch``).
    """

    rgb: bool = True
    mean: float = 127.5
    std: float = 127.5
    size: int = 112
    batch: bool = True
    max_batch: int = 32


CONTRACTS = {
    # The int8 w600k quantises its activations dynamically, with one scale for the whole
    # input tensor: a face embedded in a batch of 4 differed from the same face alone by up
    # to 0.36 per component (measured), so it runs one face per call.
    "w600k_mbf": EmbedderContract(rgb=True, mean=127.5, std=127.5, batch=False),
    # SFace's file declares a fixed batch of 1.
    "sface": EmbedderContract(rgb=False, mean=0.0, std=1.0, batch=False),
}


class FaceEmbedder:
    """Turns aligned faces (BGR uint8, 112x112) into unit-length embeddings (ArcFace format)."""

    def __init__(self, model: OnnxModel, contract: EmbedderContract | None = None) -> None:
        self.model = model
        self.contract = contract or CONTRACTS.get(model.name, EmbedderContract())
        self.size = self.contract.size

    def align(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The face this model expects: ``points`` on the ArcFace template, ``size`` square."""
        return align_face(image, points, self.size)

    def embed(self, faces: list[np.ndarray]) -> np.ndarray:
        """``(N, D)`` L2-normalised embeddings of ``N`` aligned faces."""
        c = self.contract
        out = []
        step = c.max_batch if self.batched else 1
        for k in range(0, len(faces), step):
            x = np.stack([self._input(f) for f in faces[k : k + step]])
            out.extend(v.astype(np.float32) for v in self.model.run(x)[0])
        e = np.stack(out) if out else np.zeros((0, 1), np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    @property
    def batched(self) -> bool:
        """Whether :meth:`embed` sends several faces per model call."""
        return self.contract.batch and self.model.accepts_batch

    def _input(self, face: np.ndarray) -> np.ndarray:
        """One aligned face as the model's ``(3, size, size)`` float32 input."""
        c = self.contract
        x = face[:, :, ::-1] if c.rgb else face
        x = (x.astype(np.float32) - c.mean) / c.std
        return np.ascontiguousarray(x.transpose(2, 0, 1))


ArcFaceEmbedder = FaceEmbedder


class DlibResNetEmbedder:
    """dlib's ResNet face descriptor (ONNX): 150x150 dlib chips (BGR uint8) -> unit 128-d.

    dlib compares raw descriptors by Euclidean distance (< 0.6 = same person); the library
    compares the normalised descriptors by cosine, calibrated in
    ``calibration_dlib_resnet.json``. The descriptors share a large common part, so cosines
    between different people are high (0.8-0.9 on the shared deepface photos) and the
    thresholds sit near 1; subtracting the mean descriptor first spreads them around 0 but
    costs accuracy (all pairs of 700 LFW DevTrain images: TAR at FAR 1e-3 0.865 centred,
    0.923 raw cosine, 0.905 Euclidean), so it is not done.

    The check that all keyframes show one person needs no setting of its own: it takes the
    cosine at ``VerifierConfig.subject_different_fmr`` from this model's calibration.
    """

    size = 150

    def __init__(self, model: OnnxModel, batch: int = 8) -> None:
        self.model = model
        self.batch = batch

    def align(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """dlib's face chip (padding 0.25) cut from the library's 5 points."""
        return dlib_chip(image, points, self.size)

    def descriptors(self, chips: list[np.ndarray]) -> np.ndarray:
        """``(N, 128)`` raw dlib descriptors (not normalised) of ``N`` BGR chips."""
        out = []
        for k in range(0, len(chips), self.batch):
            x = np.stack([c[:, :, ::-1] for c in chips[k : k + self.batch]])
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)
            out.append(self.model.run(x)[0].astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)

    def embed(self, faces: list[np.ndarray]) -> np.ndarray:
        """``(N, 128)`` L2-normalised descriptors of ``N`` chips from :meth:`align`."""
        e = self.descriptors(faces)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


EMBEDDERS = {"w600k_mbf": FaceEmbedder, "sface": FaceEmbedder, "dlib_resnet": DlibResNetEmbedder}


def make_embedder(runtime: Runtime, name: str) -> FaceEmbedder | DlibResNetEmbedder:
    """The embedder class for model ``name`` around its shared session; names not listed in
    :data:`EMBEDDERS` (a caller's own file) are taken as ArcFace-format."""
    return EMBEDDERS.get(name, FaceEmbedder)(runtime.onnx(name))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (not assumed unit length)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
