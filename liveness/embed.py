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
    """Input preparation: ``(pixel - mean) / std`` in RGB or BGR order."""

    rgb: bool = True
    mean: float = 127.5
    std: float = 127.5
    size: int = 112


CONTRACTS = {
    "w600k_mbf": EmbedderContract(rgb=True, mean=127.5, std=127.5),
    "sface": EmbedderContract(rgb=False, mean=0.0, std=1.0),
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
        # One face per run: the int8 export declares a batch of 1 for its output.
        for face in faces:
            x = face[:, :, ::-1] if c.rgb else face
            x = (x.astype(np.float32) - c.mean) / c.std
            v = self.model.run(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))[0][0]
            out.append(v.astype(np.float32))
        e = np.stack(out) if out else np.zeros((0, 1), np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (not assumed unit length)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
