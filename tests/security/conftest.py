"""Helpers for the issue-12 attack replays: peak memory of a child process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


@pytest.fixture(scope="session")
def verifier(model_dir):
    """One real Verifier (models loaded once) for every service in this folder."""
    from liveness import Verifier

    v = Verifier(model_dir)
    yield v
    v.close()


@pytest.fixture(scope="session")
def reference_png(data_dir) -> bytes:
    """A usable reference photo: the genuine clip's frame at 7.5 s."""
    import cv2

    from liveness.video import frame_at

    ok, buf = cv2.imencode(".png", frame_at(data_dir / "videos/talking_head_wda_1.mp4", 7.5))
    assert ok
    return buf.tobytes()
