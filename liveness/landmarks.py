"""Dense landmarks, blendshapes and head pose per frame: MediaPipe Face Landmarker (Tasks API).

The landmarker runs in VIDEO mode, which tracks the face from frame to frame instead of
detecting it afresh each time. Instances are pooled and reused across ``verify`` calls (one
costs ~0.1 s to create); before reuse an instance sees a blank frame, which drops its tracked
face, so that nothing of one video leaks into the next.

Head pose convention (degrees), in the video as recorded (not mirrored):

* ``yaw`` > 0 when the person turns to **their own left** (the nose moves towards the right
  of the image);
* ``pitch`` > 0 when the person looks **up** (chin up);
* ``roll`` > 0 when the head tilts clockwise in the image.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .errors import SetupError
from .video import Frame

if TYPE_CHECKING:
    from .landmark_plan import LandmarkPlan

# Indices into the 478-point mesh used elsewhere in the library.
NOSE_TIP = 1
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # the person's right / left
RIGHT_EYE_INNER, LEFT_EYE_INNER = 133, 362
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
RIGHT_IRIS, LEFT_IRIS = 468, 473


@dataclass(frozen=True)
class FaceMesh:
    """Landmarker output for one frame (one face: the one tracked).

    ``points`` are ``(478, 3)`` in pixels (x, y) with z in the same scale as x;
    ``blendshapes`` maps the 52 ARKit-style names (``eyeBlinkLeft``, ``jawOpen``, ...) to
    scores in [0, 1]; ``faces`` is how many faces the landmarker saw in the frame.
    """

    frame_index: int
    t: float
    points: np.ndarray = field(repr=False)
    blendshapes: dict[str, float] = field(repr=False)
    yaw: float
    pitch: float
    roll: float
    faces: int = 1

    @property
    def box(self) -> np.ndarray:
        """Tight ``(x1, y1, x2, y2)`` box around the mesh."""
        xy = self.points[:, :2]
        return np.concatenate([xy.min(axis=0), xy.max(axis=0)])

    def five_points(self) -> np.ndarray:
        """Eye centres, nose tip and mouth corners in ArcFace order (image left first)."""
        p = self.points[:, :2]
        right_eye = p[RIGHT_IRIS]
        left_eye = p[LEFT_IRIS]
        return np.stack([right_eye, left_eye, p[NOSE_TIP], p[MOUTH_RIGHT], p[MOUTH_LEFT]])


def pose_from_matrix(matrix: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees from the landmarker's 4x4 facial transformation matrix.

    Signs follow the module convention (yaw > 0: the person's own left; pitch > 0: up). They
    were fixed by checking, on LFW photos, that yaw grows with the nose's offset to the image
    right of the eye midpoint and pitch with the nose rising towards eye level.
    """
    r = np.asarray(matrix, dtype=np.float64)[:3, :3]
    yaw = np.degrees(np.arctan2(r[0, 2], r[2, 2]))
    pitch = np.degrees(np.arcsin(np.clip(r[1, 2], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(r[1, 0], r[1, 1]))
    return float(yaw), float(pitch), float(roll)


class FaceLandmarks:
    """Pooled MediaPipe Face Landmarker instances in VIDEO mode.

    Parameters
    ----------
    model_path : the ``face_landmarker.task`` bundle (read once into memory).
    workers : frames are shared between this many landmarkers running in parallel; one
        landmarker uses about one core.
    max_faces : faces the landmarker looks for. With 2, while only one face is in view the
        landmarker runs its detector on every frame, which costs about 30 % more time but
        re-anchors the mesh each frame: with 1 (tracking only) the mesh drifts and blinks
        checked by eye in the shared clips were missed. Other faces are found by YuNet.
    delegate : ``"cpu"`` (XNNPACK, the default) or ``"gpu"`` (MediaPipe's GPU delegate,
        where the installed MediaPipe supports it; creating the landmarker fails otherwise).
    """

    DELEGATES = ("cpu", "gpu")

    def __init__(
        self,
        model_path: str | Path,
        *,
        workers: int = 2,
        max_faces: int = 2,
        delegate: str = "cpu",
    ) -> None:
        if delegate not in self.DELEGATES:
            raise SetupError(f"landmark delegate must be one of {self.DELEGATES}, not {delegate!r}")
        self.delegate = delegate
        self.model_bytes = Path(model_path).read_bytes()
        self.workers = max(1, workers)
        self.max_faces = max_faces
        self._pool: queue.SimpleQueue = queue.SimpleQueue()

    def _create(self):
        from mediapipe.tasks.python import BaseOptions, vision

        kind = BaseOptions.Delegate.GPU if self.delegate == "gpu" else BaseOptions.Delegate.CPU
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=self.model_bytes, delegate=kind),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=self.max_faces,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        try:
            return _Tracker(vision.FaceLandmarker.create_from_options(opts))
        except Exception as exc:  # e.g. no GPU support in this MediaPipe build
            raise SetupError(
                f"MediaPipe could not create the landmarker ({self.delegate} delegate): {exc}"
            ) from exc

    @property
    def provider(self) -> str:
        """Where the landmarker runs, for :meth:`liveness.verify.Verifier.models_used`."""
        return "mediapipe (GPU delegate)" if self.delegate == "gpu" else "mediapipe (XNNPACK CPU)"

    def _acquire(self) -> _Tracker:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            return self._create()

    def acquire(self) -> _Tracker:
        """A landmarker of the pool for one caller's frames in time order (a live session):
        ``process(frame)`` each frame, then :meth:`release` it."""
        return self._acquire()

    def release(self, tracker: _Tracker) -> None:
        """Give back a landmarker from :meth:`acquire` (its tracking state is reset)."""
        tracker.reset()
        self._pool.put(tracker)

    def warm_up(self) -> None:
        """Create the pooled instances now, so that load time is not counted as analysis."""
        trackers = [self._acquire() for _ in range(self.workers)]
        for t in trackers:
            self._pool.put(t)

    def analyse(self, frames: Sequence[Frame]) -> list[FaceMesh | None]:
        """One :class:`FaceMesh` (or ``None`` where no face was found) per frame, in order."""
        return self.stream().run(frames)

    def stream(
        self,
        on_mesh=None,
        *,
        plan: LandmarkPlan | None = None,
        on_skip=None,
        sample_fps: float | None = 15.0,
    ) -> LandmarkStream:
        """A :class:`LandmarkStream`: push frames as they are decoded, then ``finish()``.
        ``on_mesh(k, frame, mesh)`` is called on a worker thread as each pushed frame ``k``
        is done (in any order), so that its pixels can be let go of.

        ``plan``: landmark a sparse first pass and, between its frames, only where the
        eyes move (:mod:`liveness.landmark_plan`); each frame left out is given to
        ``on_skip(k, frame)`` instead of ``on_mesh``. ``sample_fps``: the rate frames come
        at (for the plan's hold, :meth:`LandmarkPlan.hold_frames`). ``None``: every frame."""
        return LandmarkStream(
            self, min(self.workers, 8), on_mesh, plan=plan, on_skip=on_skip, sample_fps=sample_fps
        )

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break


class LandmarkStream:
    """Landmarks computed while frames are still being decoded.

    Without a plan, frame ``k`` goes to worker ``k % n``; each worker is one pooled
    landmarker tracking its share of the frames in VIDEO mode, on its own thread.
    Interleaving (rather than giving each worker a contiguous half) is what lets work start
    before the frame count is known.

    With a :class:`~liveness.landmark_plan.LandmarkPlan` there are ``2 n`` landmarkers: the
    first-pass frames go, as they are pushed, to the first ``n`` in turn; each gap between
    two of them is decided as soon as both are landmarked
    (:class:`~liveness.landmark_plan.GapPlanner`), and its frames to landmark go, gap after
    gap, to the other ``n`` in turn. Each landmarker thus sees the same frames in the same
    order whatever the timing: the results are repeatable. (With one landmarker for each
    pass, ``talking_head_wda_1`` took 2.1-2.2 s instead of 1.8-1.9 s: the first pass, one
    frame in three, is what the decoder waits for; the landmarkers of a pass share the
    cores, so the CPU time is the same.) A first-pass frame is
    given to ``on_mesh`` only once the gap after it is decided (its pixels are needed until
    then); the frames never landmarked go to ``on_skip``. :attr:`landmarked` then lists the
    landmarked positions.
    """

    _DONE = object()

    def __init__(
        self,
        owner: FaceLandmarks,
        workers: int,
        on_mesh=None,
        *,
        plan: LandmarkPlan | None = None,
        on_skip=None,
        sample_fps: float | None = 15.0,
    ) -> None:
        self._owner = owner
        self._on_mesh = on_mesh
        self._on_skip = on_skip
        n = max(1, workers)
        self._planner = None
        if plan is not None:
            from .landmark_plan import GapPlanner  # not at import: landmark_plan imports us

            self._planner = GapPlanner(plan, plan.hold_frames(sample_fps))
            self._n_first = n
            n = 2 * n
        self._queues = [queue.SimpleQueue() for _ in range(n)]
        self._results: dict[int, FaceMesh | None] = {}
        self._errors: list[BaseException] = []
        self._count = 0
        self._lock = threading.Condition()
        self._first_sent = 0
        self._gaps_sent = 0
        self._completed = 0
        self.landmarked: list[int] = []
        self._threads = [
            threading.Thread(target=self._work, args=(q,), daemon=True, name="landmarks")
            for q in self._queues
        ]
        for t in self._threads:
            t.start()

    def push(self, frame: Frame) -> None:
        """Queue one frame (frames must come in time order)."""
        if self._planner is None:
            self._queues[self._count % len(self._queues)].put((self._count, frame))
            self._count += 1
            return
        with self._lock:
            k = self._count
            self._count += 1
            if self._planner.push(frame):
                self._queues[self._first_sent % self._n_first].put((k, frame))
                self._first_sent += 1
            # the push that ends the plan's hold can make gaps decidable whose landmarks
            # are all back already (no result would come to decide them)
            calls = self._advance()
        self._call(calls)

    def waits_for_input(self, oldest: int) -> bool:
        """With a plan: whether the frames from position ``oldest`` on can be decided only
        with frames not pushed yet (the caller must not wait for them to come back before
        pushing more). Read without a lock: the caller polls."""
        return self._planner is not None and self._planner.waits_for_input(oldest)

    def run(self, frames: Sequence[Frame]) -> list[FaceMesh | None]:
        """Push every one of ``frames``, then :meth:`finish` (or :meth:`abort` when a push
        fails)."""
        try:
            for f in frames:
                self.push(f)
        except BaseException:
            self.abort()
            raise
        return self.finish()

    def finish(self) -> list[FaceMesh | None]:
        """Wait for the landmarks; one mesh (or ``None``: no face) per landmarked frame, in
        push order (every pushed frame without a plan)."""
        try:
            if self._planner is not None:
                with self._lock:
                    self._planner.end()
                    calls = self._advance()
                self._call(calls)
                with self._lock:
                    self._lock.wait_for(lambda: self._completed == self._count or self._errors)
        finally:
            self._stop()
        if self._errors:
            raise self._errors[0]
        self.landmarked = sorted(self._results)
        return [self._results[k] for k in self.landmarked]

    def evenly_spaced(self) -> list[FaceMesh | None]:
        """After :meth:`finish`: the meshes of the first pass (every landmarked frame
        without a plan), evenly spaced in time, unlike the second pass, which gathers
        around the eyes' movements. Rest values and statistics over the clip are taken
        from these."""
        if self._planner is None:
            return [self._results[k] for k in self.landmarked]
        return [self._results[k] for k in self._planner.first]

    def select(self, frames: Sequence[Frame]) -> list[Frame]:
        """The landmarked ones of ``frames`` (the pushed frames), after :meth:`finish`."""
        return [frames[k] for k in self.landmarked]

    @property
    def failed(self) -> bool:
        """A worker has failed (``finish`` will raise its error)."""
        return bool(self._errors)

    def abort(self) -> None:
        """Stop without results (decoding failed)."""
        self._stop()

    def _stop(self) -> None:
        for q in self._queues:
            q.put(self._DONE)
        for t in self._threads:
            t.join()

    def _done(self, k: int, frame: Frame, mesh: FaceMesh | None) -> None:
        """Frame ``k``'s landmarks are back (a worker's thread)."""
        if self._planner is None:
            self._results[k] = mesh
            if self._on_mesh is not None:
                self._on_mesh(k, frame, mesh)
            return
        with self._lock:
            self._results[k] = mesh
            calls = []
            if self._planner.is_first(k):
                self._planner.result(k, mesh)  # given to on_mesh once its gap is decided
            else:
                calls.append((self._on_mesh, k, frame, mesh))
                self._completed += 1
            calls += self._advance()
            self._lock.notify_all()
        self._call(calls)

    def _advance(self) -> list[tuple]:
        """Decide the gaps that can be (under the lock); the callbacks to make after."""
        calls: list[tuple] = []
        for gap in self._planner.decide():
            if gap.fill:
                n_fill = len(self._queues) - self._n_first
                q = self._queues[self._n_first + self._gaps_sent % n_fill]
                self._gaps_sent += 1
                for item in gap.fill:
                    q.put(item)
            calls += [(self._on_skip, k, f) for k, f in gap.skip]
            calls.append((self._on_mesh, gap.left, gap.left_frame, self._results[gap.left]))
            self._completed += len(gap.skip) + 1
        if calls:
            self._lock.notify_all()
        return calls

    @staticmethod
    def _call(calls: list[tuple]) -> None:
        for fn, *args in calls:
            if fn is not None:
                fn(*args)

    def _work(self, q: queue.SimpleQueue) -> None:
        try:
            tracker = self._owner._acquire()
        except BaseException as exc:  # surfaced by finish()
            self._fail(exc)
            while q.get() is not self._DONE:
                pass
            return
        try:
            while (item := q.get()) is not self._DONE:
                k, frame = item
                if not self._errors:
                    self._done(k, frame, tracker.process(frame))
        except BaseException as exc:  # surfaced by finish()
            self._fail(exc)
            while q.get() is not self._DONE:
                pass
        finally:
            tracker.reset()
            self._owner._pool.put(tracker)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)
            self._lock.notify_all()


@dataclass
class _Faces:
    """What the landmarker found in one frame, per face: the normalised mesh points
    (``(478, 3)`` float32, x and y in [0, 1] of the width and height, z in units of the
    width), the blendshape scores by name and the 4x4 facial transformation matrix."""

    points: list[np.ndarray]
    shapes: list[dict[str, float]]
    matrices: list[np.ndarray]


def detect_faces(landmarker, image, timestamp_ms: int) -> _Faces:
    """``landmarker.detect_for_video(image, timestamp_ms)`` as :class:`_Faces`.

    MediaPipe's Python result holds one Python object per mesh point (478 a face), built
    attribute by attribute from the C result. Where the installed MediaPipe has the C API
    binding of the 1.x releases (``_lib``, ``_handle``, ``MpFaceLandmarkerResultC``), the
    same C call is made and its points are read as one NumPy array of the C structs: the
    same float32 values, for 1.1-1.3 ms less CPU a frame (one instance, process CPU a
    frame on the 2-core machine: 17.1 against 18.5 ms over ``talking_head_wda_1``'s 120
    frames at 15 fps, 15.9 against 17.0 over ``selfie_blinks``' 209). Otherwise the
    public API is used."""
    import ctypes

    from mediapipe.tasks.python.vision import face_landmarker as fl

    result_type = getattr(fl, "MpFaceLandmarkerResultC", None)
    lib = getattr(landmarker, "_lib", None)
    if result_type is None or lib is None or not hasattr(landmarker, "_handle"):
        return _faces_of(landmarker.detect_for_video(image, timestamp_ms))
    c = result_type()
    lib.MpFaceLandmarkerDetectForVideo(
        landmarker._handle, image._image_ptr, None, timestamp_ms, ctypes.byref(c)
    )
    try:
        points, shapes, matrices = [], [], []
        for i in range(c.face_landmarks_count):
            marks = c.face_landmarks[i]
            layout = _point_layout(marks.landmarks._type_)
            size = marks.landmarks_count * layout.itemsize
            address = ctypes.cast(marks.landmarks, ctypes.c_void_p).value
            if not size or not address:
                points.append(np.zeros((0, 3), np.float32))
                continue
            raw = np.frombuffer((ctypes.c_char * size).from_address(address), layout)
            points.append(np.stack([raw["x"], raw["y"], raw["z"]], axis=1))  # a copy
        for i in range(c.face_blendshapes_count):
            cats = c.face_blendshapes[i]
            found = (cats.categories[j] for j in range(cats.categories_count))
            shapes.append({cat.category_name.decode(): float(cat.score) for cat in found})
        for i in range(c.facial_transformation_matrixes_count):
            matrices.append(np.array(c.facial_transformation_matrixes[i].to_numpy()))
    finally:
        lib.MpFaceLandmarkerCloseResult(ctypes.byref(c))
    return _Faces(points, shapes, matrices)


@functools.lru_cache(maxsize=4)
def _point_layout(point) -> np.dtype:
    """The x, y, z float32 fields of MediaPipe's C struct of one mesh point (``point``, a
    ctypes structure type), as a NumPy dtype of that struct's size."""
    import ctypes

    return np.dtype(
        {
            "names": ["x", "y", "z"],
            "formats": [np.float32] * 3,
            "offsets": [point.x.offset, point.y.offset, point.z.offset],
            "itemsize": ctypes.sizeof(point),
        }
    )


def _faces_of(result) -> _Faces:
    """:class:`_Faces` of MediaPipe's public ``FaceLandmarkerResult``."""
    return _Faces(
        [np.array([(p.x, p.y, p.z) for p in face], np.float32) for face in result.face_landmarks],
        [{c.category_name: float(c.score) for c in cats} for cats in result.face_blendshapes],
        [np.array(m) for m in result.facial_transformation_matrixes],
    )


class _Tracker:
    """One landmarker instance and its private, ever-increasing clock (VIDEO mode needs it)."""

    def __init__(self, landmarker) -> None:
        self.landmarker = landmarker
        self.clock_ms = 0
        self.offset_ms = 0
        self.last_t_ms = 0

    def _detect(self, rgb: np.ndarray, t_ms: int) -> _Faces:
        import mediapipe as mp

        ts = max(self.offset_ms + t_ms, self.clock_ms + 1)
        self.clock_ms = ts
        return detect_faces(
            self.landmarker, mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), ts
        )

    def process(self, frame: Frame) -> FaceMesh | None:
        h, w = frame.image.shape[:2]
        # cvtColor: 0.07 ms a frame against 2 ms for a reversed-channel copy (issue 14 item 5)
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        faces = self._detect(rgb, int(round(frame.t * 1000)))
        if not any(len(p) for p in faces.points):
            return None
        # With two faces, keep the larger: the subject holds the phone close to the face.
        sizes = [
            float(p[:, 0].max()) - float(p[:, 0].min()) if len(p) else -1.0 for p in faces.points
        ]
        k = int(np.argmax(sizes))
        pts = (faces.points[k].astype(np.float64) * (w, h, w)).astype(np.float32)
        yaw, pitch, roll = pose_from_matrix(faces.matrices[k])
        return FaceMesh(
            frame.index, frame.t, pts, faces.shapes[k], yaw, pitch, roll, faces=len(faces.points)
        )

    def reset(self) -> None:
        """Forget the tracked face: a blank frame, then a jump in time before the next video."""
        self._detect(np.zeros((64, 64, 3), np.uint8), 0)
        self.offset_ms = self.clock_ms + 10_000

    def close(self) -> None:
        self.landmarker.close()
