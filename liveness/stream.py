"""A live session: the server paces the challenge while the camera streams.

:class:`LiveSession` is fed one frame at a time by whatever carries the frames (a WebSocket,
a test, a benchmark); it knows nothing of the transport. As frames arrive it runs the
landmarker on each, and it answers with :class:`Message` s for the page:

1. ``light``: fill the screen with this colour (a random sequence drawn now, see
   :mod:`liveness.screenlight`), then ``light`` with ``rgb=None`` when it is over;
2. ``prompt``: show this step's instruction. A step is revealed only after the previous one
   has been *seen*, and after a random pause, so nothing recorded earlier can know when it
   comes;
3. ``seen``: the step's action was seen; 4. ``end``: the session is over (finish it).

Every time is the server's own clock when the frame arrived (``now``), measured from
:meth:`LiveSession.start`, never a time the client sends. A step counts when its action
*starts* between ``min_reaction_s`` and ``max_reaction_s`` after its prompt was sent (an
action under way before the prompt, or long after it, does not), and the session ends
as failed when a step is not seen within ``step_timeout_s``.

:meth:`LiveSession.finish` runs the same analysis as :meth:`liveness.Verifier.verify` on the
frames received (match, quality, presentation attack, motion), re-detects the actions on the
whole stream and checks each step in its window with
:func:`liveness.challenges.check_sequence` (strict: few unrequested actions), tests the
screen light, and returns a :class:`~liveness.result.VerificationResult` with the same
reasons. ``liveness.challenge`` holds the prompt schedule and the response times, for the
audit log. Frames are kept in memory only until ``finish`` (or ``close``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .actions import ACTION_PHRASES, INSTRUCTIONS, Action
from .analysis import Clock, Evidence, analyse_faces, conclude, reference_info
from .appearance import seen_in_pixels
from .challenges import ActionEvent, check_sequence, detect_actions, head_windows
from .errors import InputError
from .evidence import attack_evidence, motion_evidence
from .landmarks import FaceMesh
from .reasons import Reason, ReasonCode
from .reference import Reference
from .result import VerificationResult
from .screenlight import PALETTE, LightConfig, draw_sequence, measure_response, sample_colours
from .sessions import draw_actions
from .video import Frame, Video

if TYPE_CHECKING:
    from .verify import Verifier


class StreamInputError(InputError):
    """A streamed frame could not be used (not an image, too large, or out of order)."""


@dataclass(frozen=True)
class StreamConfig:
    """Pacing and limits of a live session.

    * ``steps``: actions drawn per session (when the caller does not give them).
    * ``pause_s``: the random wait after a step is seen (or after the light) before the next
      prompt: long enough to settle, short enough to keep the session brief.
    * ``min_reaction_s`` / ``max_reaction_s``: an action counts when it starts this long
      after its prompt was sent. 0.2 s is about the fastest simple visual reaction (a start
      earlier than that was not a response to the prompt); 3.0 s leaves time to read the
      instruction, plus the page's display and network delay. The detector dates a turn from
      where it passes 12 degrees, a little after the head starts to move.
    * ``step_timeout_s``: a step not seen by then fails the session (turns held up to 3 s
      finish inside it).
    * ``max_other``: unrequested actions (blinks excepted) tolerated over the session.
    * ``max_fps``: frames arriving closer together are dropped unanalysed (CPU bound).
    * ``max_duration_s``, ``max_frames``, ``max_frame_bytes``, ``max_pixels``: input limits.
    """

    steps: int = 3
    exclude: tuple[str, ...] = ()
    pause_s: tuple[float, float] = (0.8, 2.0)
    min_reaction_s: float = 0.2
    max_reaction_s: float = 3.0
    step_timeout_s: float = 6.0
    max_other: int = 2
    max_fps: float = 15.0
    max_duration_s: float = 60.0
    # frames kept until finish(): JPEG bytes as received (30-60 kB each at 640x480), arrays
    # as arrays (0.9 MB each), so this bounds memory too
    max_frames: int = 600
    max_frame_bytes: int = 2 * 1024 * 1024
    max_pixels: int = 1920 * 1080
    light: LightConfig | None = field(default_factory=LightConfig)
    # Actions are looked for online every ``online_every_s`` in the last
    # ``online_history_s`` only, to bound the work per frame (action detection over 150
    # frames costs 42 ms on a loaded 2-core machine); finish() looks at the whole stream.
    # The history must hold more calm than action: a 3 s turn in 5 s moved the baseline.
    online_history_s: float = 10.0
    online_every_s: float = 0.2


@dataclass(frozen=True)
class Message:
    """What the server tells the page. ``at``: seconds since the session started."""

    type: str  # "light" | "prompt" | "seen" | "end"
    at: float
    step: int | None = None
    action: str | None = None
    instruction: str | None = None
    rgb: tuple[int, int, int] | None = None
    outcome: str | None = None  # for "end": "complete" or "failed"
    detail: str | None = None

    def to_dict(self) -> dict:
        d = {"type": self.type, "at": round(self.at, 3)}
        for k in ("step", "action", "instruction", "rgb", "outcome", "detail"):
            v = getattr(self, k)
            if v is not None or (k == "rgb" and self.type == "light"):
                d[k] = list(v) if k == "rgb" and v is not None else v
        return d


@dataclass
class StepLog:
    """One step's timeline on the server clock (seconds since start)."""

    action: str
    prompt_at: float | None = None
    seen_at: float | None = None
    response_start: float | None = None
    response_peak: float | None = None

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class LiveSession:
    """One person's live check, fed frame by frame (see the module docstring).

    Parameters
    ----------
    verifier : the shared :class:`~liveness.Verifier` (its models and analysis are reused).
    reference : a :class:`~liveness.verify.Reference` (or a photo) to match.
    actions : the steps; default: ``config.steps`` drawn at random.
    mirrored : the frames are a mirrored preview (left and right swapped).
    rng : randomness for pauses and colours (default: the system's secure source).
    """

    def __init__(
        self,
        verifier: Verifier,
        reference: Reference | object,
        *,
        actions: Sequence[str] | None = None,
        config: StreamConfig | None = None,
        mirrored: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.verifier = verifier
        self.config = cfg = config or StreamConfig()
        self.reference = reference
        self.mirrored = mirrored
        self._rng = rng or random.SystemRandom()
        kinds = (
            [a.value for a in draw_actions(cfg.steps, cfg.exclude)]
            if actions is None
            else [Action(a).value for a in actions]
        )
        if not kinds:
            raise ValueError("a live session needs at least one step")
        self.steps = [StepLog(k) for k in kinds]
        self._light = draw_sequence(cfg.light, self._rng) if cfg.light is not None else []
        self.shown: list[tuple[float, tuple[int, int, int] | None]] = []
        self._light_end: float | None = None
        self._t0: float | None = None
        self._frames: list[tuple[float, bytes | np.ndarray]] = []
        self._meshes: list[FaceMesh | None] = []
        self._light_samples: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._tracker = None
        self._current = -1  # step being waited for; -1: the light phase
        self._next_at: float | None = None  # when the next prompt (or colour) is due
        self._light_i = 0
        self._last_look = -np.inf
        self.outcome: str | None = None  # "complete" | "failed" | "timeout"
        self.failure: str | None = None
        self.frame_ms: list[float] = []
        self.messages: list[Message] = []

    # -- clock --------------------------------------------------------------------------

    def _t(self, now: float | None) -> float:
        now = time.monotonic() if now is None else now
        assert self._t0 is not None
        return now - self._t0

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def start(self, now: float | None = None) -> list[Message]:
        """Start the clock; the first messages (the first colour, or the first prompt's wait)."""
        if self._t0 is not None:
            raise RuntimeError("the session has already started")
        self._t0 = time.monotonic() if now is None else now
        self._tracker = self.verifier.landmarks.acquire()
        self._next_at = 0.0
        return self._advance(0.0)

    # -- frames -------------------------------------------------------------------------

    def push(self, image: bytes | np.ndarray, now: float | None = None) -> list[Message]:
        """One camera frame (JPEG/PNG bytes or a BGR array) as it arrives; the messages to
        send back. Frames after the end, or too soon after the previous one, are ignored."""
        if self._t0 is None:
            raise RuntimeError("start() the session first")
        if self.done:
            return []
        t = self._t(now)
        cfg = self.config
        if t > cfg.max_duration_s or len(self._frames) >= cfg.max_frames:
            return self._end("timeout", t, "the session ran past its time limit")
        if self._frames and t - self._frames[-1][0] < 0.9 / cfg.max_fps:
            return self._advance(t)
        if self._frames and t <= self._frames[-1][0]:
            raise StreamInputError("frames must arrive in time order")
        clock = time.perf_counter()
        bgr = self._decode(image)
        frame = Frame(len(self._frames), t, bgr)
        mesh = self._tracker.process(frame)
        self._frames.append((t, image if isinstance(image, bytes) else bgr))
        self._meshes.append(mesh)
        if mesh is not None and self._in_light(t):
            face, bg = sample_colours(bgr, mesh.points)
            self._light_samples.append((t, face, bg))
        out = self._advance(t)
        self.frame_ms.append((time.perf_counter() - clock) * 1000)
        return out

    def _decode(self, image: bytes | np.ndarray) -> np.ndarray:
        cfg = self.config
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            if not data or len(data) > cfg.max_frame_bytes:
                raise StreamInputError(
                    f"a frame must be 1 to {cfg.max_frame_bytes} bytes, not {len(data)}"
                )
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise StreamInputError("a frame is not a JPEG or PNG image")
        elif isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise StreamInputError("a frame array must be uint8 BGR (H, W, 3)")
            bgr = image
        else:
            raise StreamInputError(f"a frame is bytes or an array, not {type(image).__name__}")
        if bgr.shape[0] * bgr.shape[1] > cfg.max_pixels or min(bgr.shape[:2]) < 32:
            raise StreamInputError(f"a frame of {bgr.shape[1]}x{bgr.shape[0]} is out of limits")
        return bgr

    def _in_light(self, t: float) -> bool:
        lag = self.config.light.max_lag_s if self.config.light else 0.0
        return bool(self.shown) and (self._light_end is None or t <= self._light_end + lag)

    # -- pacing -------------------------------------------------------------------------

    def _emit(self, msg: Message) -> Message:
        self.messages.append(msg)
        return msg

    def _advance(self, t: float) -> list[Message]:
        out: list[Message] = []
        cfg = self.config
        if self._current == -1:  # the light phase
            if self._next_at is not None and t >= self._next_at:
                if self._light_i < len(self._light):
                    name, dur = self._light[self._light_i]
                    self._light_i += 1
                    rgb = PALETTE[name]
                    self.shown.append((t, rgb))
                    out.append(self._emit(Message("light", t, rgb=rgb)))
                    self._next_at = t + dur
                else:
                    if self._light:
                        self._light_end = t
                        self.shown.append((t, None))
                        out.append(self._emit(Message("light", t, rgb=None)))
                    self._current = 0
                    self._next_at = t + self._rng.uniform(*cfg.pause_s)
            return out
        step = self.steps[self._current]
        if step.prompt_at is None:
            if t >= self._next_at:
                step.prompt_at = t
                out.append(
                    self._emit(
                        Message(
                            "prompt",
                            t,
                            step=self._current,
                            action=step.action,
                            instruction=INSTRUCTIONS[Action(step.action)],
                        )
                    )
                )
            return out
        event = None
        if t - self._last_look >= cfg.online_every_s:
            self._last_look = t
            event = self._seen(step, t)
        if event is not None:
            step.seen_at = t
            step.response_start = event.start
            step.response_peak = event.peak
            out.append(self._emit(Message("seen", t, step=self._current, action=step.action)))
            self._current += 1
            if self._current == len(self.steps):
                out += self._end("complete", t)
            else:
                self._next_at = t + self._rng.uniform(*cfg.pause_s)
        elif t > step.prompt_at + cfg.step_timeout_s:
            out += self._end(
                "failed", t, f"step {self._current + 1} ({step.action}) was not seen in time"
            )
        return out

    def _seen(self, step: StepLog, t: float) -> ActionEvent | None:
        """The first finished event of the step's kind that started inside its window."""
        cfg = self.config
        since = t - cfg.online_history_s
        recent = [m for m in self._meshes if m is not None and m.t >= since]
        if len(recent) < 3:
            return None
        for e in detect_actions(recent, mirrored=self.mirrored):
            if (
                e.kind == step.action
                and e.confidence >= 0.5
                and step.prompt_at + cfg.min_reaction_s <= e.start
                and e.start <= step.prompt_at + cfg.max_reaction_s
                and e.end < recent[-1].t
            ):
                return e
        return None

    def _end(self, outcome: str, t: float, detail: str | None = None) -> list[Message]:
        self.outcome = outcome
        self.failure = detail
        return [self._emit(Message("end", t, outcome=outcome, detail=detail))]

    # -- result -------------------------------------------------------------------------

    def schedule(self) -> dict:
        """The prompt schedule and response times (seconds since start), for the audit log."""
        return {
            "outcome": self.outcome,
            "failure": self.failure,
            "light": [
                {"at": round(t, 3), "rgb": None if c is None else list(c)} for t, c in self.shown
            ],
            "steps": [s.to_dict() for s in self.steps],
            "frames": len(self._frames),
        }

    def finish(self, now: float | None = None) -> VerificationResult:
        """The decision on everything streamed (see the module docstring)."""
        if self._t0 is None:
            raise RuntimeError("start() the session first")
        if not self.done:
            self._end("failed", self._t(now), "the stream ended before every step was seen")
        v = self.verifier
        timings: dict[str, float] = {}
        clock = Clock(timings)
        try:
            with clock("reference"):
                ref = (
                    self.reference
                    if isinstance(self.reference, Reference)
                    else v.enroll(self.reference)
                )
            frames = [
                Frame(i, t, self._decode(img) if isinstance(img, bytes) else img)
                for i, (t, img) in enumerate(self._frames)
            ]
            out = Evidence(video={}, reference=reference_info(ref))
            if not ref.usable:
                out.reasons.append(
                    Reason.of(
                        ReasonCode.REFERENCE_UNUSABLE, "reject", detail=", ".join(ref.problems)
                    )
                )
                return conclude(out, v.config.policy, clock, v.models_used())
            if len(frames) < 3:
                out.reasons.append(Reason.of(ReasonCode.NO_FACE))
                out.challenge_ok = False
                out.liveness.challenge = self._challenge_evidence(None, None)
                return conclude(out, v.config.policy, clock, v.models_used())
            h, w = frames[0].image.shape[:2]
            span = frames[-1].t - frames[0].t
            video = Video(frames, (len(frames) - 1) / max(span, 1e-6), span, w, h, len(frames))
            out.video = {
                "streamed": True,
                "duration_s": span,
                "fps": video.fps,
                "width": w,
                "height": h,
                "frames_analysed": len(frames),
            }
            meshes = self._meshes
            with clock("actions"):
                events, checks = seen_in_pixels(
                    detect_actions(meshes, mirrored=self.mirrored),
                    frames,
                    meshes,
                    v.config.event_appearance,
                )
            out.liveness.temporal = motion_evidence(meshes, events, checks)
            self._check_steps(events, out)
            with clock("light"):
                self._check_light(out)
            faces = analyse_faces(video, meshes, ref, v.parts, v.calibration, v.config, clock)
            out.add_faces(faces)
            with clock("attack_evidence"):  # 3D consistency over the clip and each head step
                attack_evidence(meshes, out, v.fusion)
            timings["per_frame_ms_median"] = float(np.median(self.frame_ms)) if self.frame_ms else 0
            return conclude(out, v.config.policy, clock, v.models_used())
        finally:
            self.close()

    def _check_steps(self, events: list[ActionEvent], out: Evidence) -> None:
        cfg = self.config
        prompted = [s for s in self.steps if s.prompt_at is not None]
        windows = [
            (s.prompt_at + cfg.min_reaction_s, s.prompt_at + cfg.max_reaction_s) for s in prompted
        ]
        seq = check_sequence(
            events, [s.action for s in prompted], windows=windows, max_other=cfg.max_other
        )
        ok = seq.completed and len(prompted) == len(self.steps) and self.outcome == "complete"
        out.challenge_ok = ok
        out.head_windows = head_windows(seq)
        out.liveness.challenge = self._challenge_evidence(seq, ok)
        if ok:
            return
        n = len(self.steps)
        if seq.failed_step is not None or self.outcome != "complete":
            # the first step the final analysis could not match, else the one the session
            # stopped at (not seen in time online, or the stream ended there)
            k = min(max(self._current, 0), n - 1)
            if seq.failed_step is not None:
                k = seq.failed_step
            kind = self.steps[k].action
            phrase = ACTION_PHRASES[kind]
            said = seq.message if seq.failed_step is not None else f"We did not see you {phrase}"
            msg = f"{said} (step {k + 1} of {n}). Start again and do each action as it is shown."
            code = ReasonCode.CHALLENGE_NOT_COMPLETED
            if seq.mistimed:
                code = ReasonCode.CHALLENGE_OUT_OF_TIME
            out.reasons.append(Reason.of(code, detail=f"step {k + 1}: {kind}", message=msg))
        if seq.too_many_other:
            out.reasons.append(
                Reason.of(
                    ReasonCode.CHALLENGE_EXTRA_ACTIONS,
                    detail=f"{seq.other_actions} actions not asked for",
                )
            )
        if not out.reasons:  # the stream ended or timed out with every step matched
            out.reasons.append(
                Reason.of(ReasonCode.CHALLENGE_NOT_COMPLETED, detail=self.failure or self.outcome)
            )

    def _challenge_evidence(self, seq, ok: bool | None) -> dict:
        d = {"live": True, "completed": bool(ok)} | self.schedule()
        if seq is not None:
            d["other_actions"] = seq.other_actions
            d["mistimed"] = seq.mistimed
            for log, st in zip(d["steps"], seq.steps, strict=False):
                log["found"] = st.event is not None
        return d

    def _check_light(self, out: Evidence) -> None:
        if self.config.light is None:
            return
        s = self._light_samples
        res = measure_response(
            self.shown,
            [x[0] for x in s],
            [x[1] for x in s],
            [x[2] for x in s],
            end_s=self._light_end if self._light_end is not None else np.inf,
            config=self.config.light,
        )
        out.liveness.challenge = (out.liveness.challenge or {}) | {"screen_light": res.to_dict()}
        if not res.followed:
            out.challenge_ok = False
            out.reasons.append(Reason.of(ReasonCode.SCREEN_LIGHT_NOT_REFLECTED, detail=res.problem))

    def close(self) -> None:
        """Forget the frames and give the landmarker back (idempotent)."""
        self._frames = []
        if self._tracker is not None:
            self.verifier.landmarks.release(self._tracker)
            self._tracker = None

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
