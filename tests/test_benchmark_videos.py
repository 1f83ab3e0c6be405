"""benchmarks.videos: error rows instead of a traceback, rates by condition (real clip)."""

from __future__ import annotations

from benchmarks import videos


def test_unreadable_and_over_limit_clips_are_error_rows_and_the_run_goes_on(
    data_dir, model_dir, tmp_path, capsys
):
    tiny = data_dir / "videos/blink_2x_tiny.mp4"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 500)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,label,reference,lighting,notes,width,height\n"
        f"{garbage},live,frame:1.0,dim,,640,480\n"
        f"{tiny},live,frame:1.0,indoor normal,woman with glasses,96,128\n"
        f"{tmp_path / 'missing.mp4'},live,frame:1.0,dim,,,\n"
    )
    out = videos.main(
        ["--labels", str(labels), "--model-dir", str(model_dir), "--no-progress"]
        + ["--max-duration-s", "2.5"]
    )
    rows = {r["path"]: r for r in out["videos"]}
    assert [r["decision"] for r in out["videos"]] == ["error", "error", "error"]
    assert "VideoDecodeError" in rows[str(garbage)]["error"]
    assert "VideoLimitError" in rows[str(tiny)]["error"]  # 3 s clip, 2.5 s limit
    assert out["live"]["error"] == 3 and out["n"] == 3
    by = out["live_by_condition"]
    assert by["lighting"]["dim"]["n"] == 2 and by["glasses"]["yes"]["n"] == 1
    assert by["resolution"]["<360"]["n"] == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")
