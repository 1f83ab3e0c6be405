"""Decoder children forked from a zygote (liveness.decoders.Decoders, liveness._decoder._zygote).

The zygote loads OpenCV once; each video's decoder is forked from it and must behave
exactly as a fresh decoder process: the same frames, the same limits, killed by the same
wall-time timer, and its CPU time counted from the fork (not the zygote's loading).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from liveness.decoders import Decoders
from liveness.errors import VideoLimitError
from liveness.video import LAB_VIDEO_FORMATS, VideoLimits, load_video


def _same_frames(a, b) -> bool:
    return [f.index for f in a.frames] == [f.index for f in b.frames] and all(
        np.array_equal(x.image, y.image) for x, y in zip(a.frames, b.frames, strict=True)
    )


def test_forked_decoders_give_the_same_frames_as_a_fresh_process(data_dir):
    clip = data_dir / "videos" / "blink_2x_tiny.mp4"
    fresh = load_video(clip)
    decoders = Decoders()
    try:
        first = load_video(clip, decoders=decoders)
        zygote = decoders._zygote[1]
        second = load_video(clip, decoders=decoders)
        assert decoders._zygote[1] is zygote, "one zygote serves every video"
        assert _same_frames(first, fresh) and _same_frames(second, fresh)
        # the child's CPU time starts at the fork: no interpreter start, no OpenCV loading
        assert second.decoder_cpu_s < fresh.decoder_cpu_s / 2, (
            second.decoder_cpu_s,
            fresh.decoder_cpu_s,
        )
        assert decoders.cpu_s >= first.decoder_cpu_s + second.decoder_cpu_s - 1e-9
    finally:
        decoders.close()
    assert decoders._zygote is None and zygote.poll() is not None, "close ends the zygote"
    assert _same_frames(load_video(clip, decoders=decoders), fresh), "after close: fresh"


def test_a_dead_zygote_or_one_for_other_formats_is_replaced(data_dir):
    clip = data_dir / "videos" / "blink_2x_tiny.mp4"
    decoders = Decoders()
    try:
        load_video(clip, decoders=decoders)
        zygote = decoders._zygote[1]
        os.kill(zygote.pid, signal.SIGKILL)  # killed from outside while waiting
        zygote.wait()
        assert len(load_video(clip, decoders=decoders).frames) > 0
        replaced = decoders._zygote[1]
        assert replaced is not zygote
        lab = VideoLimits(formats=LAB_VIDEO_FORMATS)  # another demuxer whitelist
        assert len(load_video(clip, limits=lab, decoders=decoders).frames) > 0
        assert replaced.poll() is not None, "the zygote of another environment is ended"
    finally:
        decoders.close()
    decoders.close()  # idempotent


def test_forked_decoders_keep_the_limits(tmp_path, data_dir):
    # A forked child has OpenCV loaded before its arguments arrive; the memory watch, the
    # address-space limit and the wall-time kill must still hold for the file it is given.
    from benchmarks.bombs import hidden_frames_mkv

    decoders = Decoders()
    try:
        load_video(data_dir / "videos" / "blink_2x_tiny.mp4", decoders=decoders)  # zygote up
        bomb = tmp_path / "hidden.mkv"
        bomb.write_bytes(hidden_frames_mkv(small=30, big_side=8000, every=2))
        with pytest.raises(VideoLimitError, match="larger frames"):
            load_video(bomb, sample_fps=1, decoders=decoders)
        tight = VideoLimits(decoder_memory_bytes=200 * 1024 * 1024)
        with pytest.raises(VideoLimitError):
            load_video(data_dir / "videos" / "selfie_blinks.mp4", limits=tight, decoders=decoders)
        hurried = VideoLimits(decoder_wall_s=0.05)
        with pytest.raises(VideoLimitError, match="longer than the limit"):
            load_video(data_dir / "videos" / "selfie_blinks.mp4", limits=hurried, decoders=decoders)
        # the zygote is unharmed by its children's ends
        assert len(load_video(data_dir / "videos" / "blink_2x_tiny.mp4", decoders=decoders).frames)
    finally:
        decoders.close()


def test_a_zygote_that_stops_answering_is_replaced_by_a_fresh_process(data_dir, monkeypatch):
    import liveness.decoders as decoders_module

    monkeypatch.setattr(decoders_module, "_ZYGOTE_TIMEOUT_S", 0.5)
    clip = data_dir / "videos" / "blink_2x_tiny.mp4"
    decoders = Decoders()
    try:
        load_video(clip, decoders=decoders)
        zygote = decoders._zygote[1]
        os.kill(zygote.pid, signal.SIGSTOP)  # alive, but never answers
        assert len(load_video(clip, decoders=decoders).frames) > 0  # a fresh process
        assert zygote.poll() is not None, "the stopped zygote was ended"
        assert decoders._zygote is None
        load_video(clip, decoders=decoders)
        assert decoders._zygote is not None and decoders._zygote[1] is not zygote
    finally:
        decoders.close()


def test_a_forked_copy_of_the_parent_leaves_the_parents_zygote_alone(data_dir, monkeypatch):
    # A worker pool that forks after a verifier was built inherits its Decoders: the copy
    # must start its own zygote, and neither use nor end the one it inherited.
    import liveness.decoders as decoders_module

    clip = data_dir / "videos" / "blink_2x_tiny.mp4"
    decoders = Decoders()
    load_video(clip, decoders=decoders)
    theirs = decoders._zygote[1]
    try:
        parents_socket = os.dup(decoders._zygote[2].fileno())  # a fork duplicates the fd
        real_pid = os.getpid()
        monkeypatch.setattr(decoders_module.os, "getpid", lambda: real_pid + 1)  # "forked"
        assert len(load_video(clip, decoders=decoders).frames) > 0
        ours = decoders._zygote[1]
        assert ours is not theirs and theirs.poll() is None, "the inherited zygote lives on"
        decoders.close()
        assert ours.poll() is not None and theirs.poll() is None
    finally:
        monkeypatch.undo()
        decoders.close()
        os.close(parents_socket)
        theirs.wait(timeout=10)  # the parent's copy closed: the zygote sees the end, exits


def test_forked_decoders_work_in_a_process_with_many_descriptors_open(data_dir):
    # a busy service holds many sockets: the child's pidfd can be numbered past 1024,
    # where select() cannot watch it
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1200
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the descriptor limit ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    held = []
    decoders = Decoders()
    try:
        while not held or held[-1] < 1050:
            held.append(os.open(os.devnull, os.O_RDONLY))
        video = load_video(data_dir / "videos" / "blink_2x_tiny.mp4", decoders=decoders)
        assert len(video.frames) > 0 and decoders._zygote is not None
    finally:
        decoders.close()
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
