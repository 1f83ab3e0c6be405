"""benchmarks.challenges: the event matcher, and the benchmark end to end on one photo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package; plain `pytest` puts only tests/ on sys.path.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import challenges  # noqa: E402
from liveness.challenges import ActionEvent  # noqa: E402

KEYS = {
    "detection_rate",
    "false_rate",
    "false_rate_unit",
    "per_kind",
    "clips",
    "photos",
    "seconds_rendered",
    "ms_per_clip",
    "mirrored_detection_rate",
    "neutral",
}


def event(kind: str, peak: float) -> ActionEvent:
    return ActionEvent(kind, peak - 0.1, peak, peak + 0.1, 1.0, 1.0, 0.0, 0, 0, 0)


def test_matcher_hits_misses_and_false_detections():
    truth = [
        ("blink", 1.0, 1.1, 1.3),
        ("turn_left", 2.0, 2.5, 3.0),
        ("smile", 4.0, 4.5, 5.0),
        ("look_up", 6.0, 6.5, 7.0),
    ]
    events = [
        event("blink", 0.75),  # 0.25 s before the span: inside the tolerance -> hit
        event("turn_left", 2.4),  # hit
        event("turn_left", 2.9),  # a second peak of the same turn: neither hit nor false
        event("turn_right", 2.5),  # wrong direction during the turn -> false
        event("smile", 5.45),  # 0.45 s after the span -> the smile is missed, and false
        event("look_up", 7.3),  # exactly at end + tolerance -> hit
        event("blink", 9.0),  # nothing scripted there -> false
    ]
    errors, false = challenges.match_events(truth, events, tolerance=0.3)
    assert errors[0] == pytest.approx(0.35)
    assert errors[1] == pytest.approx(0.1)  # the nearer of the two turn peaks
    assert errors[2] is None
    assert errors[3] == pytest.approx(0.8)
    assert sorted((e.kind, e.peak) for e in false) == [
        ("blink", 9.0),
        ("smile", 5.45),
        ("turn_right", 2.5),
    ]
    # Without tolerance the early blink and the late look-up miss and become false.
    errors, false = challenges.match_events(truth, events, tolerance=0.0)
    assert errors[0] is None and errors[3] is None and errors[1] == pytest.approx(0.1)
    assert len(false) == 5


def test_matcher_one_event_detects_one_action():
    truth = [("blink", 1.0, 1.1, 1.3), ("blink", 1.4, 1.5, 1.7)]
    errors, false = challenges.match_events(truth, [event("blink", 1.35)], tolerance=0.3)
    assert errors == [pytest.approx(0.25), None] and false == []
    assert challenges.match_events(truth, [], tolerance=0.3) == ([None, None], [])


def test_tally_counts_per_kind_and_duplicates():
    tally = challenges.Tally()
    truth = [("turn_left", 2.0, 2.5, 3.0), ("smile", 4.0, 4.5, 5.0)]
    events = [event("turn_left", 2.4), event("turn_left", 2.9), event("blink", 6.0)]
    tally.add(truth, events, 0.3, 30.0)
    assert tally.rate() == 0.5 and tally.rate("turn_left") == 1.0 and tally.rate("smile") == 0.0
    assert tally.false_total() == 1 and tally.false["blink"] == 1
    assert tally.per_minute() == pytest.approx(2.0)
    assert tally.duplicates == 1
    assert tally.during["blink"] == {"none": 1}  # between the scripted actions
    tally.add([], [event("smile", 1.0)], 0.3, 6.0)
    assert tally.during["smile"] == {"neutral": 1} and tally.clips == 2


def test_benchmark_on_one_photo(data_dir, model_dir, capsys, tmp_path):
    result = challenges.main(
        [
            "--photos",
            str(data_dir / "faces" / "deepface" / "img1.jpg"),
            "--max-photos",
            "1",
            "--kinds",
            "turn_left,turn_right,open_mouth",
            "--neutral-s",
            "3",
            "--size",
            "240x320",
            "--model-dir",
            str(model_dir),
            "--json",
            str(tmp_path / "r.json"),
            "--plots",
            str(tmp_path / "plots"),
            "--no-progress",
        ]
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads((tmp_path / "r.json").read_text()) == result
    assert KEYS <= set(printed)
    assert printed["clips"] == 2 and printed["photos"] == ["img1.jpg"]
    assert printed["detection_rate"] >= 0.8
    assert printed["mirrored_detection_rate"] >= 0.8  # left and right survive the flip
    assert printed["false_rate_unit"].startswith("false detections per minute")
    assert printed["neutral"]["clips"] == 1
    for kind in ("turn_left", "turn_right", "open_mouth"):
        stats = printed["per_kind"][kind]
        assert {"detection_rate", "false_rate", "timing_error_s"} <= set(stats)
        assert stats["actions"] == 1
    assert printed["seconds_rendered"] > 3 and printed["ms_per_clip"] > 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "challenges_detection.png",
        "challenges_timing.png",
    ]
