"""ONNX Runtime sessions: provider choice, thread counts, one session per model, shared.

:class:`Runtime` is the only place that creates ``onnxruntime.InferenceSession`` objects.
Each model file is loaded once and the session is reused; ``InferenceSession.run`` is safe
to call from several threads at once, so one :class:`Runtime` serves concurrent ``verify``
calls.

Provider choice: with ``providers=None`` the best available of CUDA, CoreML and DirectML is
used, then CPU (TensorRT is used only when asked for, because building its engines takes
minutes on first use). ``LIVENESS_ORT_PROVIDERS`` (comma separated) or the ``providers``
argument override it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import models
from .errors import SetupError

PROVIDERS_ENV = "LIVENESS_ORT_PROVIDERS"
_PREFERRED = (
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)


def choose_providers(requested: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Providers to ask ONNX Runtime for, best first, always ending with CPU.

    ``requested`` (or ``LIVENESS_ORT_PROVIDERS``) may name providers or short names
    (``cuda``, ``tensorrt``, ``coreml``, ``dml``, ``cpu``); unknown or unavailable ones are
    an error, so that a typo does not silently fall back to the CPU.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested is None and os.environ.get(PROVIDERS_ENV):
        requested = [p.strip() for p in os.environ[PROVIDERS_ENV].split(",") if p.strip()]
    if requested is None:
        chosen = [p for p in _PREFERRED if p in available]
    else:
        short = {
            "cuda": "CUDAExecutionProvider",
            "tensorrt": "TensorrtExecutionProvider",
            "coreml": "CoreMLExecutionProvider",
            "dml": "DmlExecutionProvider",
            "cpu": "CPUExecutionProvider",
        }
        chosen = [short.get(p.lower(), p) for p in requested]
        missing = [p for p in chosen if p not in available]
        if missing:
            raise SetupError(
                f"ONNX Runtime providers {missing} are not available here "
                f"(available: {available}); install onnxruntime-gpu for CUDA"
            )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


@dataclass
class OnnxModel:
    """A loaded ONNX model: its session, the provider that runs it and the file's SHA-256."""

    name: str
    path: Path
    sha256: str
    session: object  # onnxruntime.InferenceSession
    provider: str

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def accepts_batch(self) -> bool:
        """Whether the file declares a free batch dimension (a name or ``None``, not 1).

        Of the shared models the MiniFASNets and w600k do; YuNet, SFace and the 128x128
        print/replay model are fixed at 1. A free dimension is necessary, not sufficient: see
        :class:`liveness.embed.EmbedderContract` for a model whose results change in a batch.
        """
        return not isinstance(self.session.get_inputs()[0].shape[0], int)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on one input tensor and return every output."""
        return self.session.run(None, {self.input_name: x})


class Runtime:
    """Creates and caches ONNX Runtime sessions for registered models.

    Parameters
    ----------
    model_dir : directory searched for model files (else ``LIVENESS_MODEL_DIR``, the cache).
    providers : ONNX Runtime providers, best first; ``None`` picks automatically.
    intra_op_threads : threads per session; ``None`` lets ONNX Runtime choose (all cores).
    allow_download : permit checksum-verified downloads of missing models.
    model_paths : explicit file per model name, overriding the search; names outside the
        registry add the caller's own models (e.g. ``{"my_arcface": "/models/r50.onnx"}``).
    """

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        *,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        allow_download: bool | None = None,
        model_paths: dict[str, str | os.PathLike] | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.providers = choose_providers(providers)
        self.intra_op_threads = intra_op_threads
        self.allow_download = allow_download
        self.model_paths = dict(model_paths or {})
        self._models: dict[str, OnnxModel] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        """Verified path of a registered model (see :func:`liveness.models.resolve`).

        A name that is not in the registry but is given in ``model_paths`` is a caller's own
        model (say another ArcFace-format embedder): it is loaded as given, unverified.
        """
        if name not in models.REGISTRY and name in self.model_paths:
            p = Path(self.model_paths[name]).expanduser()
            if not p.is_file():
                raise SetupError(f"model file {p} for {name!r} does not exist")
            return p
        return models.resolve(
            name,
            path=self.model_paths.get(name),
            model_dir=self.model_dir,
            allow_download=self.allow_download,
        )

    def onnx(self, name: str) -> OnnxModel:
        """The session for model ``name``, created on first use and then shared."""
        with self._lock:
            if name in self._models:
                return self._models[name]
            import onnxruntime as ort

            path = self.path(name)
            opts = ort.SessionOptions()
            if self.intra_op_threads:
                opts.intra_op_num_threads = self.intra_op_threads
            opts.log_severity_level = 3  # shape warnings from the int8 model are noise
            # Idle ONNX Runtime threads spin by default, burning the cores the landmarker
            # threads need; these models are small, so waking costs little.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                session = ort.InferenceSession(str(path), opts, providers=self.providers)
            except Exception as exc:
                raise SetupError(f"ONNX Runtime could not load {path}: {exc}") from exc
            model = OnnxModel(
                name, path, models.sha256_of(path), session, session.get_providers()[0]
            )
            self._models[name] = model
            return model

    def loaded(self) -> dict[str, OnnxModel]:
        """The models loaded so far."""
        with self._lock:
            return dict(self._models)
