"""Shared fixtures: where the real models and data live.

Tests run on the real models and data beside the project (``../shared``), found through
``LIVENESS_MODEL_DIR`` and ``LIVENESS_DATA_DIR``; ``.ci/run`` sets both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dir(var: str, default: Path) -> Path:
    return Path(os.environ.get(var, default)).resolve()


MODEL_DIR = _dir("LIVENESS_MODEL_DIR", ROOT.parent / "shared" / "models")
DATA_DIR = _dir("LIVENESS_DATA_DIR", ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    if not MODEL_DIR.is_dir():
        pytest.fail(f"model directory {MODEL_DIR} not found; set LIVENESS_MODEL_DIR")
    return MODEL_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"data directory {DATA_DIR} not found; set LIVENESS_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def verifier(model_dir):
    """One Verifier (models loaded once) for every test module that does not make its own."""
    from liveness import Verifier

    with Verifier(model_dir) as v:
        yield v
