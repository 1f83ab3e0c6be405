"""Reference photos: from a photo on file to a template (an embedding, no pixels).

A reference is *unusable* when it cannot say whose face it is: no face, two faces of
similar size, or a face below the floor where recognition itself breaks down
(:data:`UNUSABLE_FACE_PX`). It is *weak* when it fails the video quality gates (dim, small,
blurred, not frontal) but is still matched reliably: such a reference is used and its
weaknesses are recorded in the evidence, because the person cannot retake the photo on file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .detect import FaceDetector
from .embed import FaceEmbedder
from .errors import InputError
from .formats import REFERENCE_FORMAT, check_readable
from .quality import FaceQuality, QualityThresholds, measure, prepare_for_embedding
from .track import other_faces
from .video import load_image

# Below this face size (shorter side of the YuNet box, pixels) a reference is unusable.
# Measured by ``python -m benchmarks.gates`` on LFW DevTest (faces shrunk, then scaled back
# up): FNMR 0.09 at 24 px, 0.35 at 16 px (clean 0.03); see benchmarks/README.md "Quality
# gates". Weak problems (``QualityThresholds``) are recorded but the reference is used.
UNUSABLE_FACE_PX = 20.0

# The sentences for each quality problem, as recorded in ``problems`` / ``weaknesses``.
QUALITY_WORDS = {
    "small": "face too small",
    "dark": "too dark",
    "bright": "over-exposed",
    "blur": "blurred",
    "pose": "not frontal",
}
UNUSABLE_WORDS = ("no face found", "more than one face", "face far too small to recognise")


@dataclass
class Reference:
    """A reference face as a template: the embedding and how it was made (no pixels).

    ``problems`` lists why it cannot be used (empty when usable); ``weaknesses`` the
    quality gates it fails although it is used (dim, small, blurred, not frontal).
    """

    embedding: np.ndarray
    model: str
    model_sha256: str
    quality: FaceQuality | None
    problems: list[str]
    faces_found: int
    weaknesses: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def weak(self) -> bool:
        return self.usable and bool(self.weaknesses)

    def to_dict(self) -> dict:
        q = self.quality
        return {
            "format_version": REFERENCE_FORMAT,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "embedding": [float(x) for x in self.embedding],
            "faces_found": self.faces_found,
            "problems": list(self.problems),
            "weaknesses": list(self.weaknesses),
            "quality": None if q is None else q.__dict__.copy(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        """Read :meth:`to_dict`'s output. Templates stored before weak and unusable were told
        apart listed quality problems as ``problems``: they are read as weaknesses."""
        check_readable(d, "reference template", REFERENCE_FORMAT)  # see liveness.formats
        q = d.get("quality")
        problems, weaknesses = [], list(d.get("weaknesses", []))
        for p in d.get("problems", []):
            (weaknesses if p in QUALITY_WORDS.values() else problems).append(p)
        emb = np.asarray(d["embedding"], np.float32)
        if emb.size == 0 and not problems:
            problems.append("no face found")
        return cls(
            emb,
            d["model"],
            d["model_sha256"],
            FaceQuality(**q) if q else None,
            problems,
            int(d.get("faces_found", 1)),
            weaknesses,
        )


class ReferenceUnusableError(InputError):
    """The reference photo has no single usable face; ``reference.problems`` says why."""

    def __init__(self, message: str, reference: Reference) -> None:
        super().__init__(message)
        self.reference = reference


def enroll(
    image,
    detector: FaceDetector,
    low_detector: FaceDetector | None,
    embedder: FaceEmbedder,
    thresholds: QualityThresholds,
    *,
    require_usable: bool = False,
) -> Reference:
    """Make a :class:`Reference` from a photo (path, bytes or BGR array).

    Unusable: no face; a second face at least 70 % the size of the largest (two-person
    photos here: 0.78-0.96; neighbours cut off at the edge of a crop, 9 % of LFW at 0.5, are
    tolerated); a face under :data:`UNUSABLE_FACE_PX`. Weak: any gate of ``thresholds``
    failed, or the face found only by ``low_detector`` (a lower YuNet score threshold,
    tried when ``detector`` finds nothing). With ``require_usable`` an unusable photo
    raises :class:`ReferenceUnusableError`.
    """
    img = load_image(image)
    faces = detector.detect(img)
    weaknesses: list[str] = []
    if not faces and low_detector is not None:
        faces = low_detector.detect(img)
        if faces:
            weaknesses.append("face found only with a low detector score")
    problems: list[str] = []
    quality = None
    emb = np.zeros(0, np.float32)
    main = max(faces, key=lambda f: f.size) if faces else None
    if main is None:
        problems.append("no face found")
    else:
        if other_faces(faces, main, min_relative_size=0.7, min_score=0.8):
            problems.append("more than one face")
        quality = measure(img, main.box)
        if quality.face_px < UNUSABLE_FACE_PX:
            problems.append("face far too small to recognise")
        weaknesses += [QUALITY_WORDS[p] for p in quality.problems(thresholds)]
        aligned = prepare_for_embedding(embedder.align(img, main.points), quality.brightness)
        emb = embedder.embed([aligned])[0]
    m = embedder.model
    ref = Reference(emb, m.name, m.sha256, quality, problems, len(faces), weaknesses)
    if require_usable and problems:
        raise ReferenceUnusableError(
            "the reference photo cannot be used: " + ", ".join(problems), ref
        )
    return ref
