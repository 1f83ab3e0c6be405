"""Which frames' pixels a verification keeps: analysis as frames are decoded, memory bounded.

Decoding used to keep every sampled frame until the analysis ran: a 60 s 1280x1280 upload
held 900 frames of 4.9 MB (4.4 GB; issue 13 item 6). :class:`FrameKeeper` sits between the
decoder and the landmarker instead. Each sampled frame is pushed to the landmark stream
and held only until its mesh is back; then its quality is measured (in the landmark
worker) and the frame is kept only when a later stage can use it:

* a **keyframe** (the first frame with a face every ``keyframe_every_s``: identity, other
  faces, PAD; :func:`liveness.analysis.every`);
* a **best-frame candidate**: one of the ``R`` best-scoring good frames so far, where
  ``R = (best_k - 1) * W + 1`` and ``W`` bounds the frames in any 2 ``min_gap_s`` window
  (``ceil(2 * min_gap_s * sample_fps) + 2``, or more if more are seen). The greedy choice of
  :func:`liveness.quality.best_frames` picks a frame only if every better frame is picked
  (fewer than ``best_k``) or within ``min_gap_s`` of a picked one (fewer than ``W`` each),
  and a frame's rank only falls as frames arrive, so a frame outside the best ``R`` is
  never chosen: the same best frames as with every frame kept;
* while no face has been followed, a few frames spread over the clip (at most
  ``2 * no_face_samples``, thinned by doubling their spacing), for the reason given when
  no face is followed at all (:func:`liveness.track.unfollowed_face_reason`). This is the
  one choice that differs from keeping every frame: it looked at 5 frames spread over all
  of them, now at 5 spread over these samples (the same times to within their spacing).

Besides those, per frame: the mesh (in the stream), the :class:`~liveness.quality.FaceQuality`,
with a challenge the 32x32 thumbnail of :func:`liveness.fingerprint.thumbnail` (4 kB),
from which the challenge's content fingerprint is made, and, where there is a face, its
192x192 grey :class:`~liveness.appearance.FaceThumb` (36 kB) for the appearance check of
events: 32 MB for 900 frames (60 s at 15 fps), on top of the frame bound below. The
decoder waits while ``max_pending`` frames are still with the landmarker.

With a landmark plan (:mod:`liveness.landmark_plan`) a frame is pending until the plan has
decided it: a frame left out is given back through :meth:`FrameKeeper.on_skip` as soon as
the gap it lies in is decided (both first-pass frames around it landmarked), a first-pass
frame once the gap after it is decided. The decoder does not wait while the pending frames
can be decided only with frames not yet pushed (the clip's first 2 s, whose gaps wait for
their rest values; the frames after the newest first-pass frame): see :func:`frame_bound`,
whose value with the default plan is the same 74 frames. The frames left out are not
among those handed to the analysis.

Memory bound: pixels of at most :func:`frame_bound` frames are held at once (pending + best
candidates + keyframes), each at most ``VideoLimits.analysis_long_side`` on its long side.
With the defaults (15 fps, best 3, keyframes every 2 s, 60 s, 8 pending) that is 74 frames:
364 MB of 1280x1280 frames, 205 MB of 1280x720 ones, whatever the clip's length within its
limit (it was one frame per sampled frame: 900 at 60 s). Measured: benchmarks/README.md,
"Memory per verification".
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .appearance import FaceThumb, face_thumb
from .errors import VideoLimitError
from .fingerprint import thumbnail
from .landmarks import FaceMesh
from .quality import FaceQuality, QualityThresholds, measure
from .video import Frame

_SKIPPED = object()  # FrameKeeper: a frame the landmark plan left out

# liveness.quality.best_frames' default spacing of the best frames.
BEST_MIN_GAP_S = 0.5


def candidate_bound(best_k: int, window_frames: int) -> int:
    """``R``: how many best-scoring frames to keep so that :func:`best_frames`' ``best_k``
    choices are among them, when at most ``window_frames`` frames fall in any open
    interval of twice its ``min_gap_s`` (see the module docstring)."""
    return max(best_k - 1, 0) * window_frames + 1


def window_bound(sample_fps: float | None, min_gap_s: float = BEST_MIN_GAP_S) -> int:
    """Frames in an open interval of ``2 * min_gap_s`` at ``sample_fps``, plus 2 for the
    sampler catching up after a gap in the source (at most one more per gap, and the gap
    leaves one out)."""
    if not sample_fps:
        return 2
    return math.ceil(2 * min_gap_s * sample_fps) + 2


def frame_bound(
    *,
    sample_fps: float,
    best_k: int,
    keyframe_every_s: float,
    max_duration_s: float,
    max_pending: int,
    no_face_samples: int = 5,
    plan_hold: int = 0,
    plan_spacing: int = 0,
) -> int:
    """The most frames a :class:`FrameKeeper` holds pixels of at once: pending ones, best
    candidates and keyframes (or, before any face, the no-face samples).

    With a landmark plan (:mod:`liveness.landmark_plan`), ``plan_hold`` frames from the
    clip's start are pushed before the first gap can be decided
    (:meth:`~liveness.landmark_plan.LandmarkPlan.hold_frames`: 31 at 15 fps): until then
    the frames held are among those, after it the decoder waits for the pending ones to
    come back under ``max_pending`` again; and the frames from the newest first-pass frame
    on are pushed whatever the count, so the pending ones can be ``plan_spacing``
    (:meth:`~liveness.landmark_plan.LandmarkPlan.spacing`: 7 at 15 fps) when that is more
    than ``max_pending``."""
    best = candidate_bound(best_k, window_bound(sample_fps))
    keyframes = math.floor(max_duration_s / keyframe_every_s) + 1
    pending = max(max_pending, plan_spacing)
    return max(pending + max(best + keyframes, 2 * no_face_samples), plan_hold)


class BestCandidates:
    """The ``bound`` best-scoring frames so far, ties going to the earlier frame (the order
    of :func:`liveness.quality.best_frames`' stable sort); frames scoring 0 or less never
    enter (they are never chosen)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._heap: list[tuple[float, int]] = []  # min-heap of (score, -k)
        self._members: set[int] = set()

    def add(self, k: int, score: float) -> list[int]:
        """Offer frame ``k``; the frames that left (``k`` itself when it does not enter)."""
        if score <= 0:
            return [k]
        heapq.heappush(self._heap, (score, -k))
        self._members.add(k)
        out = []
        while len(self._heap) > self.bound:
            _, neg = heapq.heappop(self._heap)
            self._members.discard(-neg)
            out.append(-neg)
        return out

    def __contains__(self, k: object) -> bool:
        return k in self._members

    def __len__(self) -> int:
        return len(self._members)


class FramesKept(Sequence):
    """The sampled frames as the analysis sees them: every frame's index and time, the
    pixels of the kept ones (the others carry an ``(H, W, 0)`` image)."""

    def __init__(self, frames: Sequence[Frame], images: dict[int, np.ndarray]) -> None:
        self._frames = frames
        self._images = images

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, i):  # Sequence: int -> Frame, slice -> list[Frame]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self._frames))[i]  # negative indices; IndexError out of range
        f = self._frames[i]
        image = self._images.get(i)
        return f if image is None else Frame(f.index, f.t, image)

    def kept(self) -> list[int]:
        """Indices of the frames whose pixels were kept."""
        return sorted(self._images)


@dataclass(frozen=True)
class Kept:
    """What :meth:`FrameKeeper.finish` hands to the analysis."""

    frames: FramesKept
    measures: dict[int, FaceQuality]
    no_face_samples: list[Frame]
    thumbnails: list[tuple[float, np.ndarray]]
    peak_frames: int
    peak_bytes: int
    # per frame with a face (by ``Frame.index``): the face in the canonical frame of the
    # appearance check of events (liveness.appearance.FaceThumb, 36 kB)
    face_thumbs: dict[int, FaceThumb] = field(default_factory=dict)

    @property
    def peak_mb(self) -> float:
        """``peak_bytes`` in MiB, rounded to 0.1."""
        return round(self.peak_bytes / (1024 * 1024), 1)


class FrameKeeper:
    """Holds a recording's frames only as long as the analysis can use them (see the
    module docstring). ``push`` is the decoder's ``on_frame``; ``on_mesh`` the landmark
    stream's; ``finish`` after the stream's own ``finish``.

    Parameters
    ----------
    thresholds, best_k, keyframe_every_s : as :class:`~liveness.verify.VerifierConfig`.
    sample_fps : the sampling rate (for the best-candidate bound).
    max_pending : frames pushed to the landmarker and not yet back, at most.
    no_face_samples : frames looked at when no face is followed.
    stall_s : the decoder waits at most this long for the landmarker to give back a frame;
        then :class:`~liveness.errors.VideoLimitError` (never a hang).
    thumbnails : make each frame's 32x32 fingerprint thumbnail (``thumbnails``, from which
        a challenge's content fingerprint is made). A verification without a challenge has
        no use for them: ``False`` saves their cost, 1.3 ms of CPU a 480x854 frame (267 ms
        of a ``selfie_blinks`` call, thread CPU, 2-core machine), 0.3 ms a 512x512 one.
    """

    def __init__(
        self,
        thresholds: QualityThresholds,
        *,
        best_k: int = 3,
        keyframe_every_s: float = 2.0,
        sample_fps: float | None = 15.0,
        max_pending: int = 8,
        no_face_samples: int = 5,
        stall_s: float = 60.0,
        thumbnails: bool = True,
    ) -> None:
        self.thresholds = thresholds
        self.make_thumbnails = thumbnails
        self.best_k = best_k
        self.keyframe_every_s = keyframe_every_s
        self.max_pending = max(1, max_pending)
        self.no_face_samples = no_face_samples
        self.stall_s = stall_s
        self._window = window_bound(sample_fps)
        self._cond = threading.Condition()
        self._stream = None
        self._count = 0
        self._next = 0  # the next frame to settle, in order
        self._pending: dict[int, Frame] = {}
        self._done: dict[int, tuple[FaceMesh | None, FaceQuality | None]] = {}
        self._images: dict[int, np.ndarray] = {}
        self._skipped: set[int] = set()  # never landmarked (a landmark plan left them out)
        self._keyframes: set[int] = set()
        self._best = BestCandidates(candidate_bound(best_k, self._window))
        self._samples: list[int] = []
        self._sample_stride = 1
        self._face_seen = False
        self._next_key_t = -1.0
        self._recent: deque[float] = deque()
        self.measures: dict[int, FaceQuality] = {}
        self.thumbnails: list[tuple[float, np.ndarray]] = []
        self.face_thumbs: dict[int, FaceThumb] = {}
        self._held_bytes = 0
        self.peak_bytes = 0
        self.peak_frames = 0

    def start(self, stream) -> FrameKeeper:
        """Push frames to ``stream`` (a landmark stream made with ``on_mesh=self.on_mesh``)."""
        self._stream = stream
        return self

    # -- decoder side --------------------------------------------------------------------

    def push(self, frame: Frame) -> None:
        """One sampled frame, as decoded: waits while ``max_pending`` frames are with the
        landmarker, then hands it over."""
        thumb = thumbnail(frame.image) if self.make_thumbnails else None  # outside the lock
        with self._cond:
            since, settled = time.monotonic(), self._next
            while (
                len(self._pending) >= self.max_pending
                and not self._stream.failed
                and not self._waits_for_input()
            ):
                self._cond.wait(0.05)
                if self._next != settled:
                    since, settled = time.monotonic(), self._next
                elif time.monotonic() - since > self.stall_s:
                    raise VideoLimitError(
                        f"the analysis gave back no frame for {self.stall_s:.0f} s; "
                        "try again later or with a shorter video"
                    )
            k = self._count
            self._count += 1
            if thumb is not None:
                self.thumbnails.append((frame.t, thumb))
            self._note_time(frame.t)
            if not self._stream.failed:  # after a failure nothing settles: hold nothing
                self._pending[k] = frame
                self._hold(k, frame.image)
        self._stream.push(frame)

    def _waits_for_input(self) -> bool:
        """A landmark plan needs more frames before the pending ones can come back (see
        :func:`frame_bound`)."""
        waits = getattr(self._stream, "waits_for_input", None)
        return waits is not None and waits(min(self._pending, default=self._count))

    def _note_time(self, t: float) -> None:
        recent = self._recent
        recent.append(t)
        while recent and recent[0] <= t - 2 * BEST_MIN_GAP_S:
            recent.popleft()
        if len(recent) > self._window:  # closer than the sampling rate: keep more
            self._window = len(recent)
            self._best.bound = candidate_bound(self.best_k, self._window)

    # -- landmark side -------------------------------------------------------------------

    def on_mesh(self, k: int, frame: Frame, mesh: FaceMesh | None) -> None:
        """Frame ``k``'s mesh (any order, a landmark worker's thread): measure its quality,
        then settle every frame now complete in order."""
        q = None if mesh is None else measure(frame.image, mesh.box, mesh.yaw, mesh.pitch)
        thumb = None if mesh is None else face_thumb(frame.image, mesh)
        with self._cond:
            if thumb is not None:
                self.face_thumbs[frame.index] = thumb
            self._done[k] = (mesh, q)
            while self._next in self._done:
                self._settle(self._next, *self._done.pop(self._next))
                self._next += 1
            self._cond.notify_all()

    def on_skip(self, k: int, frame: Frame) -> None:
        """Frame ``k`` will never be landmarked (a landmark plan left it out): let it go
        (any thread); the analysis does not see it."""
        with self._cond:
            self._done[k] = (_SKIPPED, None)
            while self._next in self._done:
                self._settle(self._next, *self._done.pop(self._next))
                self._next += 1
            self._cond.notify_all()

    def _settle(self, k: int, mesh, q: FaceQuality | None) -> None:
        frame = self._pending.pop(k)
        if mesh is _SKIPPED:
            self._skipped.add(k)
        elif mesh is None:
            if not self._face_seen:
                self._sample(k, frame.image)
        else:
            if not self._face_seen:
                self._face_seen = True
                samples, self._samples = self._samples, []
                for j in samples:
                    self._release(j)
            self.measures[k] = q
            if frame.t >= self._next_key_t:  # liveness.analysis.every, online
                self._keyframes.add(k)
                self._next_key_t = frame.t + self.keyframe_every_s
                self._hold(k, frame.image)
            if not q.problems(self.thresholds):
                self._candidate(k, q.score(self.thresholds), frame.image)
        self._release(k)

    def _candidate(self, k: int, score: float, image: np.ndarray) -> None:
        self._hold(k, image)
        for j in self._best.add(k, score):
            self._release(j)

    def _sample(self, k: int, image: np.ndarray) -> None:
        if k % self._sample_stride:
            return
        self._samples.append(k)
        self._hold(k, image)
        if len(self._samples) > 2 * self.no_face_samples:
            self._sample_stride *= 2
            drop = [j for j in self._samples if j % self._sample_stride]
            self._samples = [j for j in self._samples if not j % self._sample_stride]
            for j in drop:
                self._release(j)

    # -- pixels held ---------------------------------------------------------------------

    def _hold(self, k: int, image: np.ndarray) -> None:
        if k not in self._images:
            self._images[k] = image
            self._held_bytes += image.nbytes
            self.peak_bytes = max(self.peak_bytes, self._held_bytes)
            self.peak_frames = max(self.peak_frames, len(self._images))

    def _release(self, k: int) -> None:
        if (
            k in self._pending
            or k in self._keyframes
            or k in self._best
            or k in self._samples
            or k not in self._images
        ):
            return
        self._held_bytes -= self._images.pop(k).nbytes

    # -- result --------------------------------------------------------------------------

    def finish(self, frames: Sequence[Frame]) -> Kept:
        """After the landmark stream has finished: the frames for the analysis
        (``frames``: ``Video.frames`` as decoded without pixels). Frames a landmark plan
        left out are not among them: the positions of ``Kept.frames`` and the keys of
        ``Kept.measures`` are those among the landmarked frames, as the stream's meshes."""
        with self._cond:
            if self._pending or len(frames) != self._count:
                raise RuntimeError(
                    f"{len(self._pending)} frames still pending, "
                    f"{len(frames)} decoded for {self._count} pushed"
                )
            images = dict(self._images)
            samples = [Frame(frames[k].index, frames[k].t, images[k]) for k in self._samples]
            measures = dict(self.measures)
            if self._skipped:
                at = [k for k in range(self._count) if k not in self._skipped]
                new = {k: i for i, k in enumerate(at)}
                frames = [frames[k] for k in at]
                images = {new[k]: v for k, v in images.items() if k in new}
                measures = {new[k]: v for k, v in measures.items()}
        return Kept(
            FramesKept(frames, images),
            measures,
            samples,
            self.thumbnails,
            self.peak_frames,
            self.peak_bytes,
            dict(self.face_thumbs),
        )
