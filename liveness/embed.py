"""Face embedding with an ArcFace-format ONNX model, and comparison of embeddings.

Any model with the ArcFace contract can be plugged in: an aligned 112x112 face in, one
vector out. :class:`EmbedderContract` says how pixels are prepared for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .runtime import OnnxModel


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
    """Turns aligned faces (BGR uint8, 112x112) into unit-length embeddings."""

    def __init__(self, model: OnnxModel, contract: EmbedderContract | None = None) -> None:
        self.model = model
        self.contract = contract or CONTRACTS.get(model.name, EmbedderContract())

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


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (not assumed unit length)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
