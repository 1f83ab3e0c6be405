"""Photo attacks rendered from a real photo (benchmarks.render) are never accepted, and
the reason says why."""

from __future__ import annotations

import pytest

from benchmarks.render import render_attack
from liveness import Verifier

PHOTOS = ["faces/deepface/img33.jpg", "faces/face_recognition/obama.jpg"]


@pytest.fixture(scope="module")
def verifier(model_dir):
    with Verifier(model_dir) as v:
        yield v


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("kind", ["print", "still", "replay"])
def test_rendered_photo_attacks_are_not_accepted(
    verifier, model_dir, data_dir, tmp_path, photo, kind
):
    clip = render_attack(
        data_dir / photo,
        kind,
        tmp_path / f"{kind}.mp4",
        size=(360, 480),
        fps=15,
        seed=1,
        duration=4.0,
        model_dir=model_dir,
    )
    result = verifier.verify(clip, data_dir / photo)
    # The face matches (it is the same photo), so only liveness evidence can stop it.
    assert result.match.similarity > 0.5
    assert result.decision != "accept", result.to_dict()["liveness"]
    assert set(result.reason_codes) & {"PRESENTATION_ATTACK_SUSPECTED", "LIVENESS_UNCERTAIN"}


def test_a_still_photo_is_caught_by_the_motion_gate_not_only_the_model(
    verifier, model_dir, data_dir, tmp_path
):
    clip = render_attack(
        data_dir / PHOTOS[0],
        "still",
        tmp_path / "still.mp4",
        size=(360, 480),
        fps=15,
        seed=1,
        duration=4.0,
        model_dir=model_dir,
    )
    result = verifier.verify(clip, data_dir / PHOTOS[0])
    temporal = result.liveness.temporal
    assert temporal["blinks"] == 0 and temporal["expression_motion"] < 0.02
    reason = next(r for r in result.reasons if r.code.value == "LIVENESS_UNCERTAIN")
    assert reason.detail == "no blink or expression change seen"
