"""dlib's ResNet face descriptor converted to ONNX: decoding, equivalence with dlib, cache."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import reference  # noqa: F401 (a fixture: a frame of wda_1 as the photo)
from test_cli import run as run_cli

from liveness import models
from liveness.align import dlib5_chip_points, dlib_chip
from liveness.cli import main as cli_main
from liveness.detect import FaceDetector
from liveness.dlib_convert import DlibFormatError, build_onnx, read_dlib_resnet
from liveness.embed import DlibResNetEmbedder, FaceEmbedder, make_embedder
from liveness.runtime import OnnxModel, Runtime
from liveness.video import load_image

DAT = models.REGISTRY["dlib_resnet_dat"]
ONNX = models.REGISTRY["dlib_resnet"]


@pytest.fixture(scope="session")
def net(model_dir):
    return read_dlib_resnet(model_dir / DAT.filename)


@pytest.fixture(scope="session")
def session(net):
    import onnxruntime as ort

    model = build_onnx(net)  # rebuilt from the decoded file, not from a stored graph
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def runtime(model_dir):
    return Runtime(model_dir)


@pytest.fixture(scope="session")
def chips(runtime, data_dir):
    """Chips cut by the library (YuNet points, dlib's geometry) from real photos."""
    det = FaceDetector(runtime.onnx("yunet"))
    out = {}
    for rel in (
        "faces/deepface/img1.jpg",  # person A
        "faces/deepface/img2.jpg",  # person A
        "faces/deepface/img26.jpg",  # another person (identity_clusters.txt)
        "lfw-view1/images/Aaron_Peirsol/Aaron_Peirsol_0001.jpg",  # grey LFW-a
    ):
        img = load_image(data_dir / rel)
        face = max(det.detect(img), key=lambda f: f.size)
        out[rel] = dlib_chip(img, face.points)
    return out


def test_decodes_the_declared_network_from_the_file(net):
    kinds = [dl.layer.kind for dl in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29  # 1 + 14 blocks x 2
    assert kinds.count("add_prev") == 14 and kinds[-1] == "fc"
    assert net.input_size == (150, 150)
    # dlib's input layer means, read from the file (dlib's published values for this model)
    assert np.allclose(net.input_mean, [122.782, 117.001, 104.298], atol=1e-3)
    assert net.layers[-1].weights["W"].shape == (256, 128)
    assert net.layers[-1].meta["out_shape"] == (128, 1, 1)
    assert net.sha256 == DAT.sha256


def test_onnx_equals_dlib_on_library_chips(session, chips, model_dir):
    dlib = pytest.importorskip("dlib")
    fr = dlib.face_recognition_model_v1(str(model_dir / DAT.filename))
    for name, chip in chips.items():
        rgb = np.ascontiguousarray(chip[:, :, ::-1])
        ref = np.array(fr.compute_face_descriptor(rgb))
        got = session.run(None, {"chip": rgb.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
        cos = ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got))
        assert cos >= 0.9999, name
        assert np.abs(ref - got).max() < 1e-4, name


def test_library_chip_lands_where_dlib_puts_the_face(runtime, data_dir, model_dir):
    """The chip from the library's points agrees with dlib's own (HOG + 5-point predictor)
    chip to a few pixels at dlib's 5 landmarks."""
    dlib = pytest.importorskip("dlib")
    from liveness.align import _similarity, dlib_chip_matrix

    img = load_image(data_dir / "faces/deepface/img1.jpg")
    rgb = np.ascontiguousarray(img[:, :, ::-1])
    rect = max(dlib.get_frontal_face_detector()(rgb, 1), key=lambda r: r.area())
    shape = dlib.shape_predictor(str(model_dir / "shape_predictor_5_face_landmarks.dat"))(rgb, rect)
    parts = np.array([[shape.part(k).x, shape.part(k).y] for k in range(5)], float)
    face = max(FaceDetector(runtime.onnx("yunet")).detect(img), key=lambda f: f.size)
    ours = parts @ dlib_chip_matrix(face.points)[:, :2].T + dlib_chip_matrix(face.points)[:, 2]
    theirs = parts @ _similarity(parts, dlib5_chip_points())[:, :2].T
    theirs += _similarity(parts, dlib5_chip_points())[:, 2]
    assert np.abs(ours - theirs).max() < 6.0  # pixels in the 150x150 chip


def test_embedder_separates_people_and_keeps_the_arcface_path(runtime, chips, model_dir):
    emb = make_embedder(runtime, "dlib_resnet")
    assert isinstance(emb, DlibResNetEmbedder) and emb.size == 150
    e = emb.embed(
        [
            chips["faces/deepface/img1.jpg"],
            chips["faces/deepface/img2.jpg"],
            chips["faces/deepface/img26.jpg"],
        ]
    )
    assert e.shape == (3, 128) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.05  # raw cosines: 0.966 vs 0.876
    arc = make_embedder(runtime, "w600k_mbf")
    assert isinstance(arc, FaceEmbedder) and arc.size == 112
    assert arc.align(
        load_image(model_dir.parent / "data/faces/deepface/img1.jpg"),
        np.array([[40, 50], [70, 50], [55, 70], [42, 90], [68, 90]], float),
    ).shape == (112, 112, 3)


def test_truncated_or_foreign_file_is_a_typed_error(model_dir, tmp_path):
    data = (model_dir / DAT.filename).read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match="ends early"):
        read_dlib_resnet(cut)
    other = tmp_path / "sp5.dat"
    other.write_bytes((model_dir / "shape_predictor_5_face_landmarks.dat").read_bytes())
    with pytest.raises(DlibFormatError):
        read_dlib_resnet(other)
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x01\x01\x0dloss_metric_2" + bytes(range(256)) * 4)
    with pytest.raises(DlibFormatError):
        read_dlib_resnet(junk)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(models, "default_cache_dir", lambda: cache)
    monkeypatch.delenv(models.MODEL_DIR_ENV, raising=False)
    return cache


def test_first_use_converts_into_the_cache_and_pins_its_sha256(model_dir, empty_cache, capsys):
    path = models.resolve("dlib_resnet", model_dir=model_dir)  # finds the .dat, converts
    assert path == empty_cache / ONNX.filename
    assert models.sha256_of(path) == ONNX.sha256
    assert models.resolve("dlib_resnet", model_dir=model_dir) == path  # now found, not rebuilt
    assert (
        cli_main(["models", "build", "dlib_resnet", "--source", str(model_dir / DAT.filename)]) == 0
    )
    assert ONNX.sha256 in capsys.readouterr().out
    spec = models.spec("dlib_resnet")
    assert spec.commercial_use and spec.license.startswith("CC0 1.0") and "150" in spec.contract


def test_build_refuses_a_wrong_source(tmp_path, empty_cache):
    bad = tmp_path / DAT.filename
    bad.write_bytes(b"not dlib")
    with pytest.raises(models.ModelChecksumError):
        models.build("dlib_resnet", source=bad)
    assert cli_main(["models", "build", "yunet"]) == 2


def test_models_list_names_the_permissive_pack(capsys):
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    pack = out.split("permissive pack")[1]
    for name, lic in (
        ("yunet", "MIT"),
        ("face_landmarker", "Apache-2.0"),
        ("minifasnet_v2", "Apache-2.0"),
        ("dlib_resnet", "CC0 1.0"),
    ):
        assert f"{name} {lic}" in pack
    assert 'embedder="dlib_resnet"' in pack and "--embedder dlib_resnet" in pack


def test_onnx_model_object_runs_batches(session, chips):
    class _M(OnnxModel):
        pass

    m = _M("dlib_resnet", None, "", session, "CPUExecutionProvider")
    emb = DlibResNetEmbedder(m, batch=2)
    d = emb.descriptors(list(chips.values()))
    single = np.concatenate([emb.descriptors([c]) for c in chips.values()])
    assert d.shape == (4, 128) and np.allclose(d, single, atol=1e-5)


# -- end to end with the permissive embedder -------------------------------------------


def test_cli_verify_with_dlib_resnet_accepts_the_same_person(
    model_dir, data_dir, reference  # noqa: F811 (test_cli's fixture)
):
    import json

    video = str(data_dir / "videos/talking_head_wda_1.mp4")
    p = run_cli(["verify", video, str(reference), "--json", "--embedder", "dlib_resnet"], model_dir)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["decision"] == "accept" and out["reasons"] == []
    assert "dlib_resnet" in out["models"] and "w600k_mbf" not in out["models"]
    assert out["models"]["dlib_resnet"]["license"].startswith("CC0")


@pytest.fixture(scope="module")
def dlib_verifier(model_dir):
    from liveness.verify import Verifier, VerifierConfig

    with Verifier(model_dir, config=VerifierConfig(embedder="dlib_resnet")) as v:
        yield v


def test_dlib_resnet_verifier_rejects_another_person(dlib_verifier, data_dir):
    result = dlib_verifier.verify(
        data_dir / "videos/talking_head_wda_1.mp4", data_dir / "faces/face_recognition/biden.jpg"
    )
    assert result.decision == "reject" and "FACE_MISMATCH" in result.reason_codes


@pytest.mark.slow
def test_dlib_resnet_verifier_sees_a_subject_change(dlib_verifier, data_dir):
    from media import read_frames

    a, fps = read_frames(data_dir / "videos/talking_head_wda_1.mp4", limit=100)
    b, _ = read_frames(data_dir / "videos/talking_head_wda_2.mp4", limit=100)
    result = dlib_verifier.verify(a[:100] + b[:100], a[10], fps=fps)
    assert result.decision == "reject" and "SUBJECT_CHANGED" in result.reason_codes
