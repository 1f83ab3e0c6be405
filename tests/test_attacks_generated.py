"""Photo attacks made without the renderer (benchmarks.attack_clips) and by it: no challenge
events, no one-step challenge completed, and a print tilted to fake a turn is FLAT_FACE."""

from __future__ import annotations

import pytest

from benchmarks.attack_clips import load_victim, make_attack, write_clip
from benchmarks.render import render_attack
from liveness import Verifier
from liveness.actions import ACTIONS
from liveness.challenges import check_sequence, detect_actions
from liveness.video import frame_at

VICTIM = "videos/talking_head_wda_2.mp4"


@pytest.fixture(scope="module")
def verifier(model_dir):
    with Verifier(model_dir) as v:
        yield v


@pytest.fixture(scope="module")
def print_clip(verifier, data_dir, tmp_path_factory):
    victim = load_victim(data_dir / VICTIM, verifier.landmarks, seconds=4.0)
    out = tmp_path_factory.mktemp("attacks") / "print_flat.mp4"
    return write_clip(make_attack(victim, "print_flat", seed=3), victim.fps, out)


def test_a_print_tilted_to_fake_a_turn_is_refused_as_flat(verifier, print_clip, data_dir):
    result = verifier.verify(print_clip, frame_at(data_dir / VICTIM, 2.0))
    assert result.match.similarity > 0.5  # the face matches: only liveness can stop it
    assert result.decision == "reject", result.to_dict()["liveness"]
    flat = next(r for r in result.reasons if r.code.value == "FLAT_FACE")
    assert "ratio" in flat.detail and "flat picture" in flat.message
    assert result.liveness.geometry["verdict"] == "flat"
    assert result.liveness.temporal["actions"] == []


def test_no_one_step_challenge_is_completed_by_the_print(verifier, print_clip):
    from liveness.video import load_video

    meshes = verifier.landmarks.analyse(load_video(print_clip, sample_fps=15).frames)
    events = detect_actions(meshes)
    assert events == []
    for kind in ACTIONS:
        assert not check_sequence(events, [kind]).completed


@pytest.mark.parametrize("kind", ["still", "print"])
def test_rendered_still_and_print_make_no_events(verifier, model_dir, data_dir, tmp_path, kind):
    photo = data_dir / "faces/deepface/img33.jpg"
    clip = render_attack(
        photo,
        kind,
        tmp_path / f"{kind}.mp4",
        size=(360, 480),
        fps=15,
        seed=1,
        duration=4.0,
        model_dir=model_dir,
    )
    result = verifier.verify(clip, photo)
    assert result.liveness.temporal["actions"] == [], result.liveness.temporal
    assert result.decision != "accept"


def test_a_short_frame_filling_print_gets_no_exemption_from_the_motion_gate(
    verifier, data_dir, tmp_path
):
    """A frame-filling print of a 3 s lip-reading clip (2.9 s: under the old 3 s floor of
    the motion gate) fools the texture models; it neither blinks nor changes expression,
    so it goes to review, with a reason that asks a person for a longer recording."""
    victim_clip = data_dir / "videos-wild/rizkiarm__LipNet__lbbc2a.mpg"
    victim = load_victim(victim_clip, verifier.landmarks, seconds=4.0)
    clip = write_clip(make_attack(victim, "print_fill", seed=303), victim.fps, tmp_path / "f.mp4")
    result = verifier.verify(clip, frame_at(victim_clip, 1.0))
    assert result.video["duration_s"] < 3.0
    assert result.decision != "accept", result.to_dict()["liveness"]
    reason = next(r for r in result.reasons if r.code.value == "LIVENESS_UNCERTAIN")
    assert "no blink or expression change seen in" in reason.detail
    assert "at least 3 seconds" in reason.message
