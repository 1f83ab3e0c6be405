"""The pipeline's replaceable parts: one small protocol per stage model, and their registry.

Like InsightFace's ``model_zoo`` there is one class per model contract (YuNet and SCRFD in
:mod:`liveness.detect`, the ArcFace-format and dlib embedders in :mod:`liveness.embed`, the
MiniFASNet-style ensemble in :mod:`liveness.attack`, MediaPipe in :mod:`liveness.landmarks`),
and like httpx's client a :class:`~liveness.verify.Verifier` uses a part when one is given
and builds the default from this registry when not::

    rt = Runtime(model_dir)
    v = Verifier(runtime=rt, detector=build_detector(rt, "scrfd_500m"),
                 embedder=build_embedder(rt, "dlib_resnet"))

A part is anything with the protocol's methods (checked with ``isinstance`` at
construction: a ``SetupError`` names what is missing). A new detector, embedder or PAD
model is one class and one :class:`PartSpec` given to :func:`register`; its file, SHA-256
and license stay in :data:`liveness.models.REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from . import models
from .attack import PAD_CONTRACTS, PresentationAttackDetector
from .decision import MatchCalibration
from .detect import Face, FaceDetector, ScrfdDetector
from .embed import CONTRACTS, DlibResNetEmbedder, FaceEmbedder
from .errors import SetupError
from .landmarks import FaceLandmarks, FaceMesh
from .runtime import Runtime
from .video import Frame

Kind = Literal["detector", "landmarker", "embedder", "pad"]


# -- protocols -----------------------------------------------------------------------------


@runtime_checkable
class Detector(Protocol):
    """Finds faces: boxes and the 5 points (eyes, nose tip, mouth corners in image order)."""

    score_threshold: float

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, best score first."""
        ...

    def with_threshold(self, score_threshold: float) -> Detector:
        """The same detector with another score threshold (the pipeline's low-score pass)."""
        ...


class NamedModel(Protocol):
    """What a result says about a model: its name and file hash."""

    name: str
    sha256: str


@runtime_checkable
class Embedder(Protocol):
    """Cuts the face its model expects from the 5 points and turns it into a unit vector."""

    model: NamedModel
    size: int

    def align(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The aligned face (BGR uint8) from an image and its 5 points."""
        ...

    def embed(self, faces: list[np.ndarray]) -> np.ndarray:
        """``(N, D)`` L2-normalised embeddings of ``N`` aligned faces."""
        ...


@runtime_checkable
class PadEnsemble(Protocol):
    """Live probability of a face from one or more anti-spoofing models."""

    models: Sequence[NamedModel]

    def per_model_many(self, faces: list[tuple[np.ndarray, np.ndarray]]) -> list[list[float]]:
        """Each model's live probability for each ``(image, box)``: ``[n_faces][n_models]``."""
        ...

    def live_probability(self, image: np.ndarray, box: np.ndarray) -> float:
        """The ensemble's mean live probability for one face."""
        ...


class Tracker(Protocol):
    """One landmarker following one recording's frames in time order."""

    def process(self, frame: Frame) -> FaceMesh | None: ...


class FrameStream(Protocol):
    """Frames pushed as they are decoded; ``finish`` gives one mesh (or None) per frame."""

    def push(self, frame: Frame) -> None: ...

    def finish(self) -> list[FaceMesh | None]: ...

    def evenly_spaced(self) -> list[FaceMesh | None]:
        """After ``finish``: the meshes of evenly spaced frames (all of them without a
        landmark plan), for statistics over the clip."""
        ...

    def abort(self) -> None: ...

    @property
    def failed(self) -> bool:
        """A worker failed (``finish`` raises its error)."""
        ...


@runtime_checkable
class Landmarker(Protocol):
    """The face mesh, blendshapes and head pose of every frame."""

    @property
    def provider(self) -> str:
        """Where it runs, for the result's model list."""
        ...

    def stream(self, on_mesh=None, *, plan=None, on_skip=None, sample_fps=15.0) -> FrameStream:
        """A stream of frames; ``on_mesh(k, frame, mesh)`` as each pushed frame is done.
        With a :class:`~liveness.landmark_plan.LandmarkPlan` (``VerifierConfig.landmark_plan``)
        only some frames are landmarked, the others given to ``on_skip(k, frame)``; a
        landmarker may also landmark every frame whatever the plan."""
        ...

    def analyse(self, frames: Sequence[Frame]) -> list[FaceMesh | None]: ...

    def acquire(self) -> Tracker: ...

    def release(self, tracker: Tracker) -> None: ...

    def warm_up(self) -> None: ...

    def close(self) -> None: ...


# -- registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartSpec:
    """One registered part: the model file it runs, the class around it, its input contract
    and its calibration or thresholds.

    * ``name``: the model's name in :data:`liveness.models.REGISTRY` (file, SHA-256, license).
    * ``cls``: the class; detectors take ``(model, **thresholds)``, embedders ``(model,
      contract)`` (or ``(model)`` without one), PAD models are run by
      :class:`~liveness.attack.PresentationAttackDetector` with their ``contract``.
    * ``contract``: the input contract object (crop, size, scaling), where the class has one.
    * ``calibration``: for an embedder, the name of its packaged similarity calibration
      (``liveness/data/calibration_<name>.json``, measured by ``benchmarks/calibrate.py``).
    * ``thresholds``: keyword arguments of the class (a detector's score and NMS).
    """

    name: str
    kind: Kind
    cls: type
    contract: Any = None
    calibration: str | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @property
    def model(self) -> models.ModelSpec:
        """The file's registry entry."""
        return models.spec(self.name)


PARTS: dict[str, PartSpec] = {}


def register(spec: PartSpec) -> PartSpec:
    """Add (or replace) a part; its model must be in :data:`liveness.models.REGISTRY` or be
    given to the :class:`~liveness.runtime.Runtime` in ``model_paths``."""
    PARTS[spec.name] = spec
    return spec


for _spec in (
    # YuNet: 0.6 is OpenCV's FaceDetectorYN default; the pipeline's low pass (masks) uses
    # VerifierConfig.low_detection_score (0.4, measured on videos-wild, see there).
    PartSpec("yunet", "detector", FaceDetector, None, None, {"score_threshold": 0.6}),
    # SCRFD: InsightFace's defaults (det_thresh 0.5, NMS 0.4); non-commercial weights.
    PartSpec(
        "scrfd_500m",
        "detector",
        ScrfdDetector,
        None,
        None,
        {"score_threshold": 0.5, "nms_threshold": 0.4},
    ),
    PartSpec("face_landmarker", "landmarker", FaceLandmarks),
    PartSpec("w600k_mbf", "embedder", FaceEmbedder, CONTRACTS["w600k_mbf"], "w600k_mbf"),
    # no calibration ships for SFace: pass one (python -m benchmarks.calibrate)
    PartSpec("sface", "embedder", FaceEmbedder, CONTRACTS["sface"]),
    PartSpec("dlib_resnet", "embedder", DlibResNetEmbedder, None, "dlib_resnet"),
    *(
        PartSpec(name, "pad", PresentationAttackDetector, contract)
        for name, contract in PAD_CONTRACTS.items()
    ),
):
    register(_spec)


def part(name: str, kind: Kind) -> PartSpec:
    """The registered part ``name`` of ``kind``; ``KeyError`` lists those of that kind."""
    spec = PARTS.get(name)
    if spec is None or spec.kind != kind:
        known = sorted(k for k, s in PARTS.items() if s.kind == kind)
        raise KeyError(f"no {kind} part {name!r}; registered: {', '.join(known)}")
    return spec


def build_detector(runtime: Runtime, name: str = "yunet", **thresholds: float) -> Detector:
    """The detector ``name`` around its shared session, with the registry's thresholds
    (``thresholds`` override them)."""
    spec = part(name, "detector")
    return spec.cls(runtime.onnx(name), **({**spec.thresholds, **thresholds}))


def build_embedder(runtime: Runtime, name: str = "w600k_mbf") -> Embedder:
    """The embedder ``name``; a name not registered (a caller's own file in the runtime's
    ``model_paths``) is taken as ArcFace-format, as :func:`liveness.embed.make_embedder`."""
    spec = PARTS.get(name)
    if spec is None or spec.kind != "embedder":
        return FaceEmbedder(runtime.onnx(name))
    if spec.contract is None:
        return spec.cls(runtime.onnx(name))
    return spec.cls(runtime.onnx(name), spec.contract)


def build_pad(runtime: Runtime, names: Sequence[str]) -> PadEnsemble:
    """The ensemble of the PAD models ``names`` (their live probabilities averaged)."""
    specs = [part(n, "pad") for n in names]
    classes = {s.cls for s in specs}
    if len(classes) != 1:
        raise ValueError(f"PAD models {list(names)} need different ensemble classes")
    return classes.pop()([runtime.onnx(n) for n in names], [s.contract for s in specs])


def build_landmarker(
    runtime: Runtime, name: str = "face_landmarker", *, workers: int = 2, delegate: str = "cpu"
) -> Landmarker:
    """The pooled landmarker ``name`` (not yet warmed up)."""
    return part(name, "landmarker").cls(runtime.path(name), workers=workers, delegate=delegate)


def calibration_for(embedder: str) -> MatchCalibration:
    """The similarity calibration of embedder ``embedder``: the packaged one its registry
    entry names, else :meth:`MatchCalibration.load` by name (a ``SetupError`` saying how to
    make one when none ships)."""
    spec = PARTS.get(embedder)
    name = spec.calibration if spec is not None and spec.calibration else embedder
    return MatchCalibration.load(model=name)


def check_part(obj: object, kind: Kind) -> None:
    """:class:`~liveness.errors.SetupError` naming what is missing when ``obj`` is not a
    ``kind`` part."""
    proto = {
        "detector": Detector,
        "embedder": Embedder,
        "pad": PadEnsemble,
        "landmarker": Landmarker,
    }[kind]
    if not isinstance(obj, proto):
        need = [
            n
            for n in dir(proto)
            if not n.startswith("_") and not hasattr(obj, n)
        ]
        raise SetupError(
            f"{type(obj).__name__} is not a {kind}: it lacks {', '.join(need) or 'a method'}"
        )


@dataclass(frozen=True)
class Parts:
    """The stage objects one analysis runs: the detector and its low-score copy (faces the
    landmarks already show; reference photos), the embedder, the PAD ensemble."""

    detector: Detector
    low_detector: Detector
    embedder: Embedder
    pad: PadEnsemble
