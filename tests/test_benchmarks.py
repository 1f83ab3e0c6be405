"""The benchmark scripts run end to end on tiny subsets and print one JSON line last."""

from __future__ import annotations

import json

import pytest

from benchmarks import lfw, pad, speed, videos

REQUIRED = {
    "lfw": {
        "accuracy",
        "accuracy_std",
        "tar_at_far_1e-2",
        "tar_at_far_1e-3",
        "eer",
        "no_face",
        "images",
        "pairs",
        "ms_per_image",
    },
    "pad": {
        "apcer",
        "apcer_per_kind",
        "bpcer",
        "acer",
        "eer",
        "bpcer_at_apcer_0.01",
        "bpcer_at_apcer_0.05",
        "no_face",
        "n",
    },
    "speed": {
        "wall_s",
        "load_s",
        "video_s",
        "realtime_factor",
        "stages_ms",
        "frames_decoded",
        "frames_analysed",
        "peak_rss_mb",
        "naive_wall_s",
    },
}


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("header", ["10\t300\n", ""])
def test_lfw_pairs_with_and_without_header(data_dir, model_dir, tmp_path, capsys, header):
    lines = (data_dir / "lfw-view1/pairsDevTest.txt").read_text().splitlines()
    subset = lines[:6] + lines[500:506]  # 6 same-person, 6 different-person pairs
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(header + "\n".join(subset) + "\n")
    assert len(lfw.read_pairs(pairs)) == 12
    out = lfw.main(
        [
            "--images",
            str(data_dir / "lfw-view1/images"),
            "--pairs",
            str(pairs),
            "--model-dir",
            str(model_dir),
            "--no-progress",
            "--folds",
            "3",
        ]
    )
    printed = last_json(capsys)
    assert REQUIRED["lfw"] <= set(printed) and printed["pairs"] == 12
    assert out["accuracy"] > 0.8 and out["no_face"] == 0


def test_pad_on_a_few_nuaa_images(data_dir, model_dir, tmp_path, capsys):
    src = (data_dir / "nuaa-train/labels.csv").read_text().splitlines()
    live = [r for r in src[1:] if ",live," in r][:4]
    prints = [r for r in src[1:] if ",print," in r][:4]
    root = data_dir / "nuaa-train"
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,label\n"
        + "\n".join(f"{root / r.split(',')[0]},{r.split(',')[1]}" for r in live + prints)
        + "\n"
    )
    plots = tmp_path / "plots"
    pad.main(
        [
            "--labels",
            str(labels),
            "--model-dir",
            str(model_dir),
            "--no-progress",
            "--plots",
            str(plots),
        ]
    )
    printed = last_json(capsys)
    assert REQUIRED["pad"] <= set(printed) and printed["n"] == 8
    assert set(printed["apcer_per_kind"]) == {"print"}
    assert (plots / "pad_det.png").stat().st_size > 1000


def test_videos_and_speed_on_the_tiny_clip(data_dir, model_dir, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"path,label,reference\n{data_dir / 'videos/blink_2x_tiny.mp4'},live,frame:1.0\n"
    )
    out = videos.main(["--labels", str(labels), "--model-dir", str(model_dir), "--no-progress"])
    assert last_json(capsys)["n"] == 1 and sum(out["confusion"]["live"].values()) == 1
    speed.main(
        [
            "--video",
            str(data_dir / "videos/blink_2x_tiny.mp4"),
            "--reference",
            "frame:1.0",
            "--repeat",
            "1",
            "--face-workers",
            "0",
            "--model-dir",
            str(model_dir),
            "--no-progress",
        ]
    )
    printed = last_json(capsys)
    assert REQUIRED["speed"] <= set(printed)
    assert printed["face_workers"] == 0
    assert printed["frames_decoded"] == 75 and printed["naive_wall_s"] > 0
    # the landmarker's graph threads and the forked decoder both did work in the call
    assert 0 < printed["landmarker_graph_cpu_s"] < printed["cpu_s"]
    assert printed["decoder_cpu_s"] > 0
