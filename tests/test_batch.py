"""verify_many: the process pool and a local two-worker Ray cluster give exactly the serial
results on the shared videos; failures are recorded per job; results come in job order."""

from __future__ import annotations

import pytest
from media import frame_at

from liveness import InputError, Job, JobResult, VerifierSpec, verify_many
from liveness.batch import map_jobs

# A quick subset in every run; the rest of the shared videos in the slow run.
QUICK = ["blink_2x_tiny.mp4", "talking_head_retalk_3.mp4"]
REST = [
    "talking_head_wda_1.mp4",
    "talking_head_wda_2.mp4",
    "talking_head_retalk_1.mp4",
    "talking_head_retalk_2.mp4",
    "talking_head_retalk_4.mp4",
    "talking_head_retalk_5.mp4",
    "selfie_blinks.mp4",
    "live_webcam_a.webm",
    "replay_screen_a.webm",
    "replay_laptop_b.mp4",
]


@pytest.fixture(scope="module")
def spec(model_dir):
    return VerifierSpec(model_dir)


def jobs_for(videos, names):
    """Each video against a frame of its own last second, plus one corrupt upload."""
    jobs = [Job(videos / n, frame_at(videos / n, "last"), key=n) for n in names]
    jobs.insert(1, Job(b"\x00not a video" * 10, frame_at(videos / names[0], "last"), key="bad"))
    return jobs


def comparable(item: JobResult):
    """Everything but the run's own measurements: the wall times and the peak of frames
    held at once, which depends on how the landmark threads kept up with the decoder (and
    the temp-file name in a decode error)."""
    if not item.ok:
        return (item.key, item.error.kind, item.error.type)
    d = item.result.to_dict()
    d.pop("timings_ms")
    for key in ("frames_held_peak", "held_mb_peak"):
        d["video"].pop(key, None)
    return (item.key, item.result.score, item.result.match.similarity, d)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster with two worker CPUs for the whole module (start-up is heavy)."""
    ray = pytest.importorskip("ray", reason="Ray is in the ray and dev extras")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def serial_quick(spec, data_dir):
    jobs = jobs_for(data_dir / "videos", QUICK)
    return jobs, [comparable(r) for r in verify_many(jobs, spec, engine="serial")]


def test_serial_results_are_in_order_with_the_failure_recorded(serial_quick):
    jobs, results = serial_quick
    assert [r[0] for r in results] == [j.key for j in jobs]
    assert results[1] == ("bad", "input", "VideoDecodeError")
    assert all(isinstance(r[3], dict) for k, r in enumerate(results) if k != 1)


def test_process_pool_gives_the_serial_results(spec, data_dir, serial_quick):
    jobs, expected = serial_quick
    got = [comparable(r) for r in verify_many(jobs, spec, engine="process", workers=2)]
    assert got == expected


def test_ray_two_workers_give_the_serial_results(spec, data_dir, serial_quick, ray_cluster):
    jobs, expected = serial_quick
    got = [comparable(r) for r in verify_many(jobs, spec, engine="ray")]
    assert got == expected


@pytest.mark.slow
def test_every_shared_video_is_the_same_on_every_engine(spec, data_dir, ray_cluster):
    jobs = jobs_for(data_dir / "videos", REST)
    serial = [comparable(r) for r in verify_many(jobs, spec, engine="serial")]
    assert [comparable(r) for r in verify_many(jobs, spec, engine="process", workers=2)] == serial
    assert [comparable(r) for r in verify_many(jobs, spec, engine="ray", workers=2)] == serial


def _explode_on_odd(verifier, k):
    if k % 2:
        raise ValueError(f"job {k} fails")
    return k * 10


def test_a_failing_task_is_recorded_and_the_run_goes_on(spec):
    out = list(map_jobs(_explode_on_odd, range(5), spec, engine="process", workers=2))
    assert [r.index for r in out] == [0, 1, 2, 3, 4]
    assert [r.value for r in out if r.ok] == [0, 20, 40]
    assert {(r.error.kind, r.error.type) for r in out if not r.ok} == {("error", "ValueError")}
    assert out[1].to_dict()["error"]["message"] == "job 1 fails"


def test_progress_bar_on_request(spec, capsys):
    out = list(map_jobs(_explode_on_odd, [0, 2], spec, progress=True, desc="counting"))
    assert [r.value for r in out] == [0, 20]
    assert "counting" in capsys.readouterr().err


def test_missing_models_are_a_setup_error_per_job(tmp_path):
    bad = VerifierSpec(tmp_path / "no-models", allow_download=False)
    out = list(verify_many([(b"x", b"y"), (b"x", b"y")], bad, engine="serial"))
    assert [r.error.kind for r in out] == ["setup", "setup"]


def test_bad_arguments_are_typed_errors(spec):
    with pytest.raises(InputError, match="engine"):
        verify_many([], spec, engine="threads")
    with pytest.raises(InputError, match="a job is"):
        verify_many(["just a video"], spec)
    assert list(verify_many([], spec, engine="process")) == []


# -- the benchmarks' --engine flag ------------------------------------------------------------


def _without_times(out: dict) -> dict:
    """The printed JSON (NaN as null) without the wall times."""
    from benchmarks.common import to_jsonable

    drop = {"ms_per_image", "ms_per_sample"}
    out = {k: v for k, v in to_jsonable(out).items() if k not in drop}
    for v in out.get("videos", []):
        v.pop("wall_s")
    return out


@pytest.mark.slow
def test_benchmarks_give_the_same_figures_on_each_engine(
    data_dir, model_dir, tmp_path, ray_cluster
):
    from benchmarks import lfw, pad, videos

    common = ["--model-dir", str(model_dir), "--no-progress"]
    lines = (data_dir / "lfw-view1/pairsDevTest.txt").read_text().splitlines()
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines[:6] + lines[500:506]) + "\n")
    lfw_args = ["--images", str(data_dir / "lfw-view1/images"), "--pairs", str(pairs)]
    lfw_args += ["--folds", "3", *common]
    src = (data_dir / "nuaa-train/labels.csv").read_text().splitlines()[1:]
    picked = [r for r in src if ",live," in r][:3] + [r for r in src if ",print," in r][:3]
    root = data_dir / "nuaa-train"
    labels = tmp_path / "pad.csv"
    labels.write_text(
        "path,label\n" + "".join(f"{root / r.split(',')[0]},{r.split(',')[1]}\n" for r in picked)
    )
    vids = tmp_path / "videos.csv"
    tiny = data_dir / "videos/blink_2x_tiny.mp4"
    vids.write_text(f"path,label,reference\n{tiny},live,frame:1.0\n{tiny},live,frame:2.0\n")
    for main, args in (
        (lfw.main, lfw_args),
        (pad.main, ["--labels", str(labels), *common]),
        (videos.main, ["--labels", str(vids), *common]),
    ):
        serial = _without_times(main(args))
        assert _without_times(main([*args, "--engine", "process", "--workers", "2"])) == serial
        assert _without_times(main([*args, "--engine", "ray"])) == serial


@pytest.mark.slow
def test_a_second_driver_joins_the_running_cluster_by_address(data_dir, model_dir, ray_cluster):
    """What a cluster run does: another process connects with ``address=`` (here the local
    cluster's GCS address) and its jobs run on that cluster's workers."""
    import subprocess
    import sys

    address = ray_cluster.get_runtime_context().gcs_address
    video = data_dir / "videos/blink_2x_tiny.mp4"
    script = (
        "import sys, json\n"
        "from liveness import VerifierSpec, verify_many\n"
        "from liveness.video import frame_at\n"
        f"v = {str(video)!r}\n"
        f"out = list(verify_many([(v, frame_at(v, 1.0))], VerifierSpec({str(model_dir)!r}),"
        f" engine='ray', address={address!r}))\n"
        "print(json.dumps([o.result.decision for o in out]))\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    expected = next(iter(verify_many([(video, frame_at(video, 1.0))], VerifierSpec(model_dir))))
    assert p.stdout.strip().splitlines()[-1] == f'["{expected.result.decision}"]'
