"""Landmarks on the frames that need them (liveness.landmark_plan).

The blink checks run the real landmarker with the default plan on the clips whose blinks
were checked by eye (ground truth in test_challenges.py): every blink seen by eye must still
be found, none added, while the landmarker sees fewer frames. The plan's gaps are decided
while frames are pushed; the frames waiting for a decision count in FrameKeeper's bound.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_challenges import BLINKS_BY_EYE, TOLERANCE_FRAMES

from liveness.appearance import AppearanceThresholds, seen_in_pixels
from liveness.challenges import detect_actions
from liveness.errors import InputError
from liveness.keep import FrameKeeper, frame_bound
from liveness.landmark_plan import FirstPass, GapPlanner, LandmarkPlan, patch_change
from liveness.landmarks import FaceLandmarks, FaceMesh
from liveness.quality import QualityThresholds
from liveness.verify import VerifierConfig
from liveness.video import Frame, load_video

# --- pure functions -----------------------------------------------------------------------


def test_first_pass_keeps_frames_by_time():
    fp = FirstPass(5.0)
    kept = [k for k in range(30) if fp.keep(k / 15.0)]
    assert kept == list(range(0, 30, 3))  # 15 fps -> every third frame
    fp = FirstPass(5.0)
    assert all(fp.keep(k / 4.0) for k in range(12))  # a 4 fps clip is kept whole


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_pass_fps": 0.0},
        {"first_pass_fps": float("nan")},
        {"blink_share": 0.0},
        {"hold_share": 1.5},
        {"patch_change": 0.0},
        {"rest_after_s": -1.0},
    ],
)
def test_plan_refuses_bad_settings(kwargs):
    with pytest.raises(InputError):
        LandmarkPlan(**kwargs)


def _eye_frame(t: float, closed: bool, shift: int = 0) -> Frame:
    """A 200x200 grey face with two dark 'irises' between lids; closed: skin over them."""
    img = np.full((200, 200, 3), 170, np.uint8)
    for cx in (70, 130):
        x = cx + shift
        img[92:108, x - 14 : x + 14] = 235  # white of the eye
        if not closed:
            img[94:106, x - 5 : x + 5] = 30  # iris
        img[90:92, x - 14 : x + 14] = 90  # lid line
    return Frame(round(t * 15), t, img)


def _mesh(t: float, shift: int = 0, lids: float = 7.0) -> FaceMesh:
    """A mesh whose eye points sit on the drawn eyes (other points at the face centre);
    ``lids``: half the lids' opening in pixels."""
    pts = np.zeros((478, 3), np.float32)
    pts[:, :2] = 100
    for (outer, inner), cx in (((33, 133), 70), ((263, 362), 130)):
        x = cx + shift
        pts[outer, :2] = (x - 14, 100)
        pts[inner, :2] = (x + 14, 100)
    for i in (160, 159, 158, 387, 386, 385):
        pts[i, 1] = 100 - lids
    for i in (144, 145, 153, 373, 374, 380):
        pts[i, 1] = 100 + lids
    for i, cx in ((160, 70), (159, 70), (158, 70), (144, 70), (145, 70), (153, 70), (468, 70)):
        pts[i, 0] = cx + shift
    for i, cx in ((387, 130), (386, 130), (385, 130), (373, 130), (374, 130), (380, 130)):
        pts[i, 0] = cx + shift
    pts[473, :2] = (130 + shift, 100)
    pts[468, 1] = 100
    blink = 0.05 if lids > 3 else 0.7
    return FaceMesh(round(t * 15), t, pts, {"eyeBlinkLeft": blink, "eyeBlinkRight": blink}, 0, 0, 0)


def test_patch_change_sees_a_blink_between_two_open_frames():
    a, b = _eye_frame(0.0, False), _eye_frame(0.2, False)
    ma, mb = _mesh(0.0), _mesh(0.2)
    blink = patch_change(a, _eye_frame(0.1, True), b, ma, mb)
    still = patch_change(a, _eye_frame(0.1, False), b, ma, mb)
    assert blink >= LandmarkPlan().patch_change > still


def test_patch_change_follows_a_moving_head():
    # the eyes move 8 px between a and b; the frame between has them half-way (4 px)
    a, b = _eye_frame(0.0, False, 0), _eye_frame(0.2, False, 8)
    ma, mb = _mesh(0.0, 0), _mesh(0.2, 8)
    assert patch_change(a, _eye_frame(0.1, False, 4), b, ma, mb) < LandmarkPlan().patch_change
    assert patch_change(a, _eye_frame(0.1, True, 4), b, ma, mb) >= LandmarkPlan().patch_change


def test_patch_change_on_frames_of_another_size_asks_for_landmarks():
    a, b = _eye_frame(0.0, False), _eye_frame(0.2, False)
    odd = Frame(1, 0.1, np.zeros((100, 100, 3), np.uint8))
    assert patch_change(a, odd, b, _mesh(0.0), _mesh(0.2)) == np.inf


# --- the gap planner (no landmarker) --------------------------------------------------------


def _plan_clip(closed_at: set[int], n: int = 45, hold: int = 31):
    """A GapPlanner fed ``n`` drawn frames at 15 fps (eyes closed at ``closed_at``), each
    first-pass frame's mesh given back as soon as it is pushed; the gaps decided along the
    way, then at the end."""
    planner = GapPlanner(LandmarkPlan(), hold)
    gaps = []
    for k in range(n):
        closed = k in closed_at
        if planner.push(_eye_frame(k / 15, closed)):
            planner.result(k, _mesh(k / 15, lids=1.0 if closed else 7.0))
        gaps += [(k, g) for g in planner.decide()]
    planner.end()
    gaps += [(n, g) for g in planner.decide()]
    return planner, gaps


def test_gaps_wait_for_the_hold_then_are_decided_as_both_ends_come_back():
    planner, gaps = _plan_clip(closed_at=set(), n=45, hold=31)
    assert planner.first == list(range(0, 45, 3))
    # nothing is decided before 31 frames are pushed; then each gap as soon as its right
    # end is there; the last one (frame 42 and after) at the end
    when = [k for k, _ in gaps]
    assert min(when) == 30 and when[-1] == 45
    assert [g.left for _, g in gaps] == planner.first
    assert all(not g.fill for _, g in gaps[:-1])  # open eyes throughout: nothing to fill
    # the two frames after the last first-pass frame have no right end: landmarked
    assert [k for k, _ in gaps[-1][1].fill] == [43, 44]
    assert sum(len(g.skip) for _, g in gaps) == 45 - 15 - 2
    assert not planner.frames  # every pixel given back


def test_the_trailing_frames_and_a_face_missing_at_one_end_are_filled():
    planner = GapPlanner(LandmarkPlan(), hold=1)
    for k in range(8):
        if planner.push(_eye_frame(k / 15, False)):
            planner.result(k, None if k == 3 else _mesh(k / 15))
    planner.end()
    gaps = planner.decide()
    assert [[k for k, _ in g.fill] for g in gaps] == [[1, 2], [4, 5], [7]]


def test_a_one_frame_blink_between_two_open_frames_is_filled_by_its_pixels():
    _, gaps = _plan_clip(closed_at={37}, n=45)
    filled = [k for _, g in gaps for k, _ in g.fill]
    assert filled == [37, 43, 44]  # 43, 44: the trailing frames


def test_eyes_closed_at_a_first_pass_frame_fill_the_gaps_around_it():
    _, gaps = _plan_clip(closed_at={35, 36, 37, 38}, n=45)
    filled = sorted(k for _, g in gaps for k, _ in g.fill)
    assert {34, 35, 37, 38} <= set(filled)


def test_the_decoder_waits_only_when_frames_already_pushed_can_come_back():
    planner = GapPlanner(LandmarkPlan(), hold=4)
    for k in range(3):
        planner.push(_eye_frame(k / 15, False))
    assert planner.waits_for_input(0)  # still in the hold
    planner.push(_eye_frame(3 / 15, False))  # first-pass frame 3, not landmarked yet
    assert not planner.waits_for_input(0)  # its landmarks will decide frames 0-2
    assert planner.waits_for_input(3)  # frames from 3 on need frame 6
    planner.end()
    assert not planner.waits_for_input(3)


def test_the_bound_with_the_plan_is_the_bound_without_it():
    cfg = VerifierConfig()
    plan = LandmarkPlan()
    common = dict(
        sample_fps=cfg.sample_fps,
        best_k=cfg.best_k,
        keyframe_every_s=cfg.keyframe_every_s,
        max_duration_s=cfg.limits.max_duration_s,
        max_pending=cfg.max_pending_frames,
    )
    assert plan.hold_frames(15.0) == 31 and plan.spacing(15.0) == 7
    with_plan = frame_bound(
        **common, plan_hold=plan.hold_frames(15.0), plan_spacing=plan.spacing(15.0)
    )
    assert with_plan == frame_bound(**common) == 74
    # a hold longer than the rest of the bound is the bound
    assert frame_bound(**common, plan_hold=200) == 200


class _DrawnTracker:
    """Plumbing only: 'landmarks' of the drawn eye frames, at once."""

    def process(self, frame: Frame) -> FaceMesh:
        return _mesh(frame.t)

    def reset(self) -> None:
        pass


class _DrawnLandmarks:
    """Plumbing only: the pool of :class:`FaceLandmarks` with :class:`_DrawnTracker`s."""

    def __init__(self) -> None:
        import queue

        self._pool = queue.SimpleQueue()

    def _acquire(self) -> _DrawnTracker:
        return _DrawnTracker()


def test_the_push_that_ends_the_hold_decides_gaps_already_landmarked():
    # The landmarks of the hold's first-pass frames are all back before the push that
    # ends the hold; then no result comes to decide their gaps, and the push must (the
    # decoder stalled here before: Krzysiek354 in the shared clips).
    import time

    from liveness.landmarks import LandmarkStream

    plan = LandmarkPlan()
    keeper = FrameKeeper(QualityThresholds(), max_pending=8, stall_s=3)
    stream = LandmarkStream(
        _DrawnLandmarks(), 2, keeper.on_mesh, plan=plan, on_skip=keeper.on_skip, sample_fps=15
    )
    keeper.start(stream)
    # 15 fps with the second frame missing: the first pass is at positions 0, 2, 5, ...,
    # 29 and the push that ends the hold (position 30) is not a first-pass frame
    frames = [_eye_frame(t, False) for t in [0.0] + [k / 15 for k in range(2, 62)]]
    hold = plan.hold_frames(15)
    for f in frames[: hold - 1]:
        keeper.push(f)
    deadline = time.monotonic() + 5
    while len(stream._results) < 11 and time.monotonic() < deadline:
        time.sleep(0.01)  # the hold's first pass (positions 0, 2, 5, ..., 29) is back
    assert len(stream._results) == 11
    for f in frames[hold - 1 :]:
        keeper.push(f)  # VideoLimitError after 3 s if nothing is decided
    meshes = stream.finish()
    kept = keeper.finish(frames)
    # open eyes throughout: the first pass (0, 2, then every third) and the trailing frame
    assert [f.index for f in kept.frames] == [m.frame_index for m in meshes]
    assert len(meshes) == 1 + 20 + 1


# --- the real landmarker on clips checked by eye ---------------------------------------------


@pytest.fixture(scope="module")
def landmarks(model_dir):
    lm = FaceLandmarks(model_dir / "face_landmarker.task", workers=2)
    yield lm
    lm.close()


def _planned(landmarks, frames, plan=None):
    stream = landmarks.stream(plan=plan or LandmarkPlan(), sample_fps=15)
    for f in frames:
        stream.push(f)
    return stream, stream.finish()


@pytest.mark.parametrize("name", sorted(BLINKS_BY_EYE))
def test_planned_landmarks_keep_every_blink_seen_by_eye(landmarks, data_dir, name):
    video = load_video(data_dir / "videos" / name, sample_fps=15)
    stream, meshes = _planned(landmarks, video.frames)
    frames = stream.select(video.frames)
    assert [m.frame_index for m in meshes if m is not None] == [f.index for f in frames]
    assert len(meshes) < len(video.frames)
    events = detect_actions(meshes, rest=stream.evenly_spaced())
    blinks, _ = seen_in_pixels(
        [e for e in events if e.kind == "blink"], frames, meshes, AppearanceThresholds()
    )
    unmatched = list(blinks)
    for first, last in BLINKS_BY_EYE[name]:
        hits = [
            e
            for e in unmatched
            if first - TOLERANCE_FRAMES <= e.peak_frame <= last + TOLERANCE_FRAMES
        ]
        assert len(hits) == 1, f"blink at frames {first}-{last}: found {hits}"
        unmatched.remove(hits[0])
    assert not unmatched, f"blinks not seen by eye: {unmatched}"


def test_planned_landmarks_are_repeatable(landmarks, data_dir):
    # verify_many promises the same results as a serial run: the second pass must not
    # depend on when the first pass's results happened to arrive
    video = load_video(data_dir / "videos" / "talking_head_wda_1.mp4", sample_fps=15)
    runs = []
    for _ in range(2):
        stream, meshes = _planned(landmarks, video.frames)
        runs.append((meshes, list(stream.landmarked)))
    (a, ka), (b, kb) = runs
    assert ka == kb
    assert all(
        (x is None and y is None) or np.array_equal(x.points, y.points)
        for x, y in zip(a, b, strict=True)
    )


def test_the_keeper_bounds_the_frames_waiting_for_a_decision(landmarks, data_dir):
    # Two pending frames at most, fewer than a first-pass step: the decoder must still go
    # on (the frames of the open gap wait for the next first-pass frame) and never hold
    # more than the bound; the analysis sees the landmarked frames only.
    video = load_video(data_dir / "videos" / "talking_head_wda_1.mp4", sample_fps=15)
    plan = LandmarkPlan()
    for pending in (2, 8):
        keeper = FrameKeeper(QualityThresholds(), max_pending=pending, stall_s=20)
        stream = landmarks.stream(
            on_mesh=keeper.on_mesh, plan=plan, on_skip=keeper.on_skip, sample_fps=15
        )
        keeper.start(stream)
        for f in video.frames:
            keeper.push(f)
        meshes = stream.finish()
        kept = keeper.finish(video.frames)
        assert len(kept.frames) == len(meshes) < len(video.frames)
        assert [f.index for f in kept.frames] == [m.frame_index for m in meshes if m]
        assert set(kept.measures) == {i for i, m in enumerate(meshes) if m is not None}
        bound = frame_bound(
            sample_fps=15,
            best_k=3,
            keyframe_every_s=2.0,
            max_duration_s=video.duration_s,
            max_pending=pending,
            plan_hold=plan.hold_frames(15),
            plan_spacing=plan.spacing(15),
        )
        assert kept.peak_frames <= bound, (pending, kept.peak_frames, bound)


def test_verify_with_the_plan_landmarks_fewer_frames_and_decides_the_same(verifier, data_dir):
    from dataclasses import replace

    from liveness.video import frame_at

    clip = data_dir / "videos" / "selfie_blinks.mp4"
    ref = verifier.enroll(frame_at(clip, 12.0))
    cfg = verifier.config
    try:
        results = {}
        for plan in (None, LandmarkPlan()):
            verifier.config = replace(cfg, landmark_plan=plan)
            results[plan is not None] = verifier.verify(clip, ref)
    finally:
        verifier.config = cfg
    every, planned = results[False], results[True]
    assert planned.decision == every.decision == "accept"
    assert planned.reason_codes == every.reason_codes
    assert planned.video["frames_landmarked"] < planned.video["frames_analysed"]
    assert every.video["frames_landmarked"] == every.video["frames_analysed"]
    blinks = len(BLINKS_BY_EYE["selfie_blinks.mp4"])
    assert planned.liveness.temporal["blinks"] == every.liveness.temporal["blinks"] == blinks


# --- the benchmark that compares events -------------------------------------------------------


def test_landmark_events_benchmark_on_the_tiny_clip(data_dir, model_dir, tmp_path, capsys):
    import json

    from benchmarks import landmark_events

    labels = tmp_path / "labels.csv"
    clip = data_dir / "videos" / "blink_2x_tiny.mp4"
    labels.write_text(f"path,label\n{clip},live\n")
    out = landmark_events.main(
        ["--labels", str(labels), "--model-dir", str(model_dir), "--no-progress", "--patch-stats"]
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["clips"] == out["clips"] == 1
    assert out["blinks_full"] == out["blinks_planned"] == 2  # both blinks checked by eye
    assert out["blinks_missing"] == out["blinks_extra"] == 0
    assert out["frames_planned"] < out["frames_full"] == 45
    # the one-frame blink (frame 37) lies between two open first-pass frames: the patch
    # check is what finds it
    stats = out["patch_stats"]
    assert [c["frame"] for c in stats["closed_unseen"]] == [37]
    fit = [h for h in stats["held_out"] if h["threshold"] is not None]
    assert len(fit) == 1
    assert fit[0]["threshold"] == pytest.approx(0.8 * fit[0]["fit_lowest"], abs=1e-3)
