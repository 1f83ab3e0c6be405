"""Model registry: resolution order, checksum verification, download from a local server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from liveness import models
from liveness.cli import main as cli_main
from liveness.errors import ModelChecksumError, ModelNotFoundError

YUNET = models.REGISTRY["yunet"]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(models, "default_cache_dir", lambda: cache)
    monkeypatch.delenv(models.MODEL_DIR_ENV, raising=False)
    monkeypatch.delenv(models.ALLOW_DOWNLOAD_ENV, raising=False)
    return cache


def test_registry_pins_the_manifest_checksums(model_dir):
    for spec in models.REGISTRY.values():
        path = model_dir / spec.filename
        if spec.name == "sface" or spec.built_from:
            continue  # listed for download only, or converted: not among the shared files
        assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256, spec.name


def test_non_commercial_models_are_marked():
    assert models.REGISTRY["w600k_mbf"].commercial_use is False
    assert models.REGISTRY["yunet"].commercial_use is True


def test_resolve_order_explicit_path_then_dir_then_env(
    model_dir, empty_cache, monkeypatch, tmp_path
):
    explicit = tmp_path / "elsewhere" / YUNET.filename
    explicit.parent.mkdir()
    shutil.copy(model_dir / YUNET.filename, explicit)
    assert models.resolve("yunet", path=explicit, model_dir=model_dir) == explicit
    assert models.resolve("yunet", model_dir=model_dir) == model_dir / YUNET.filename
    monkeypatch.setenv(models.MODEL_DIR_ENV, str(explicit.parent))
    assert models.resolve("yunet") == explicit
    monkeypatch.delenv(models.MODEL_DIR_ENV)
    empty_cache.mkdir()
    shutil.copy(model_dir / YUNET.filename, empty_cache / YUNET.filename)
    assert models.resolve("yunet") == empty_cache / YUNET.filename


def test_missing_model_error_names_file_variable_and_fix(empty_cache, tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        models.resolve("yunet", model_dir=tmp_path)
    msg = str(e.value)
    assert YUNET.filename in msg and models.MODEL_DIR_ENV in msg and str(tmp_path) in msg
    assert models.ALLOW_DOWNLOAD_ENV in msg


def test_corrupt_model_is_refused(empty_cache, tmp_path):
    bad = tmp_path / YUNET.filename
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelChecksumError, match=YUNET.sha256):
        models.resolve("yunet", model_dir=tmp_path)


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server over a folder (no internet here; the code path is the real one)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_verifies_checksum(model_dir, empty_cache, file_server):
    root, base = file_server
    shutil.copy(model_dir / YUNET.filename, root / "yunet.onnx")
    path = models.download(YUNET, empty_cache, url=f"{base}/yunet.onnx")
    assert path == empty_cache / YUNET.filename
    assert models.sha256_of(path) == YUNET.sha256
    # now found in the cache without a download
    assert models.resolve("yunet", allow_download=False) == path


def test_download_of_wrong_bytes_is_rejected_and_not_kept(empty_cache, file_server):
    root, base = file_server
    (root / "yunet.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelChecksumError):
        models.download(YUNET, empty_cache, url=f"{base}/yunet.onnx")
    assert not (empty_cache / YUNET.filename).exists()


def test_download_failure_is_a_clear_error(empty_cache, file_server):
    _, base = file_server
    with pytest.raises(ModelNotFoundError, match="could not download"):
        models.download(YUNET, empty_cache, url=f"{base}/missing.onnx")


def test_resolve_downloads_only_when_allowed(
    model_dir, empty_cache, file_server, monkeypatch, tmp_path
):
    root, base = file_server
    shutil.copy(model_dir / YUNET.filename, root / YUNET.filename)
    patched = models.ModelSpec(**{**YUNET.__dict__, "url": f"{base}/{YUNET.filename}"})
    monkeypatch.setitem(models.REGISTRY, "yunet", patched)
    with pytest.raises(ModelNotFoundError):
        models.resolve("yunet", model_dir=tmp_path / "none")
    assert not empty_cache.exists() or not any(empty_cache.iterdir())
    monkeypatch.setenv(models.ALLOW_DOWNLOAD_ENV, "1")
    path = models.resolve("yunet", model_dir=tmp_path / "none")
    assert path.parent == empty_cache and models.sha256_of(path) == YUNET.sha256


def test_cli_models_check_and_list(model_dir, empty_cache, capsys, tmp_path):
    assert cli_main(["models", "check", "--model-dir", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert '"ok": true' in out
    assert cli_main(["models", "check", "--model-dir", str(tmp_path)]) == 2
    assert cli_main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "NON-COMMERCIAL ONLY" in listing and "w600k_mbf" in listing


def test_model_paths_are_real_files():
    assert all(
        isinstance(s.filename, str) and Path(s.filename).suffix for s in models.REGISTRY.values()
    )
