"""Many verifications at once: serially, on a local process pool, or on a Ray cluster.

    >>> from liveness import VerifierSpec, verify_many
    >>> jobs = [("a.mp4", "a.jpg"), ("b.mp4", ref_b)]                     # doctest: +SKIP
    >>> for item in verify_many(jobs, VerifierSpec(model_dir), engine="process"):
    ...     print(item.index, item.result.decision if item.ok else item.error)

Each worker builds one :class:`~liveness.verify.Verifier` from a picklable
:class:`VerifierSpec` (model directory, :class:`~liveness.verify.VerifierConfig`, providers,
calibration) and keeps it for all its jobs. Results come back **in job order** as they are
ready (a bounded number of jobs is in flight, so a long list does not fill memory), with a
progress bar on a terminal. A job that fails is not an exception for the whole run: its
:class:`JobResult` carries a :class:`JobError` with a kind (``input``, ``setup``, ``error``,
``worker_lost``), the exception's type and message.

The same spec gives the same decisions and scores with every engine: a Verifier's result
depends only on its configuration and the input (``tests/test_batch.py`` checks this on the
shared videos). What differs is only ``timings_ms``.

Engines
-------
``serial``  one Verifier in this process.
``process`` ``workers`` processes (default: the CPU count), started with ``spawn`` (MediaPipe
            and ONNX Runtime keep threads, which ``fork`` would copy half-alive).
``ray``     one actor per worker on a Ray cluster: the running one when ``ray.init`` was
            already called, else ``address`` (``"auto"``, ``"ray://host:10001"``,
            ``"host:6379"``) or a new local one. Paths in jobs must be readable on every node
            (a shared file system); or pass bytes. Needs the ``ray`` extra.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .decision import MatchCalibration
from .errors import InputError, LivenessError, SetupError
from .result import VerificationResult
from .verify import Verifier, VerifierConfig

Engine = Literal["serial", "process", "ray"]
ENGINES: tuple[str, ...] = ("serial", "process", "ray")
ErrorKind = Literal["input", "setup", "error", "worker_lost"]


@dataclass(frozen=True)
class VerifierSpec:
    """Everything needed to build an identical :class:`Verifier` in another process.

    Only plain data (paths, the frozen config, a calibration), so it pickles. With
    ``intra_op_threads`` each worker's ONNX Runtime sessions use that many threads (``1``
    suits one worker per core); it does not change results.
    """

    model_dir: str | None = None
    config: VerifierConfig = field(default_factory=VerifierConfig)
    providers: tuple[str, ...] | None = None
    intra_op_threads: int | None = None
    allow_download: bool | None = None
    model_paths: dict[str, str] = field(default_factory=dict)
    calibration: MatchCalibration | None = None

    def __post_init__(self) -> None:
        if self.model_dir is not None:
            object.__setattr__(self, "model_dir", os.fspath(self.model_dir))
        if self.providers is not None:
            object.__setattr__(self, "providers", tuple(self.providers))
        paths = {str(k): os.fspath(v) for k, v in dict(self.model_paths).items()}
        object.__setattr__(self, "model_paths", paths)

    def build(self) -> Verifier:
        """A new :class:`Verifier` (the caller closes it)."""
        from .runtime import Runtime

        runtime = Runtime(
            self.model_dir,
            providers=list(self.providers) if self.providers is not None else None,
            intra_op_threads=self.intra_op_threads,
            allow_download=self.allow_download,
            model_paths=self.model_paths,
        )
        return Verifier(config=self.config, calibration=self.calibration, runtime=runtime)


@dataclass(frozen=True)
class Job:
    """One verification: a video and a reference (a :class:`~liveness.verify.Reference`,
    an image path, bytes or a BGR array), with the options of :meth:`Verifier.verify`.

    ``key`` is the caller's name for the job (default: its index), carried into the result.
    Challenge tokens are not batched: they are one-use and belong to a live session.
    """

    video: Any
    reference: Any
    fps: float | None = None
    mirrored: bool = False
    key: Any = None


@dataclass(frozen=True)
class JobError:
    """Why one job failed: ``kind`` is ``input`` (unreadable video or reference),
    ``setup`` (models missing or unloadable on the worker), ``error`` (anything else
    raised) or ``worker_lost`` (the worker process died)."""

    kind: ErrorKind
    type: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.type}: {self.message}"


@dataclass(frozen=True)
class JobResult:
    """One job's outcome, in job order: ``value`` (for :func:`verify_many` a
    :class:`VerificationResult`) or ``error``."""

    index: int
    key: Any
    value: Any = None
    error: JobError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def result(self) -> VerificationResult | None:
        """The verification result (``None`` when the job failed)."""
        return self.value

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"index": self.index, "key": self.key}
        if self.error is not None:
            out["error"] = {
                "kind": self.error.kind,
                "type": self.error.type,
                "message": self.error.message,
            }
        elif hasattr(self.value, "to_dict"):
            out["result"] = self.value.to_dict()
        else:
            out["value"] = self.value
        return out


def job_error(exc: BaseException) -> JobError:
    """The :class:`JobError` recorded for an exception raised by a job."""
    if isinstance(exc, InputError):
        kind: ErrorKind = "input"
    elif isinstance(exc, SetupError):
        kind = "setup"
    else:
        kind = "error"
    return JobError(kind, type(exc).__name__, str(exc))


def run_job(verifier: Verifier, job: Job) -> VerificationResult:
    """``verifier.verify`` with the job's options (the task of :func:`verify_many`)."""
    return verifier.verify(job.video, job.reference, fps=job.fps, mirrored=job.mirrored)


def _as_job(item: Any) -> Job:
    if isinstance(item, Job):
        return item
    if isinstance(item, dict):
        return Job(**item)
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return Job(item[0], item[1])
    raise InputError(
        f"a job is a Job, a (video, reference) pair or a dict of Job fields, not {type(item)!r}"
    )


def verify_many(
    jobs: Iterable[Job | tuple[Any, Any] | dict],
    spec: VerifierSpec | None = None,
    *,
    engine: Engine = "serial",
    workers: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
    runtime_env: dict | None = None,
) -> Iterator[JobResult]:
    """Verify many ``(video, reference)`` jobs; yields a :class:`JobResult` per job, in order.

    ``jobs``: :class:`Job` objects or ``(video, reference)`` pairs. ``spec``: how each worker
    builds its Verifier (default :class:`VerifierSpec()`: ``LIVENESS_MODEL_DIR``, default
    config). ``engine``: ``"serial"``, ``"process"`` or ``"ray"`` (see the module notes);
    ``workers``: processes or Ray actors (default: CPU count, or the cluster's CPUs);
    ``address``: an existing Ray cluster; ``progress``: a bar on stderr (``None``: on a tty);
    ``runtime_env``: passed to ``ray.init`` (e.g. ``{"working_dir": "."}`` on a cluster).

    A job that fails yields a result with ``error`` set; the run goes on. The generator owns
    its workers: they stop when it is exhausted or closed.
    """
    items = [_as_job(j) for j in jobs]
    keyed = [
        (i, j if j.key is not None else Job(j.video, j.reference, j.fps, j.mirrored, i))
        for i, j in enumerate(items)
    ]
    return map_jobs(
        run_job,
        [j for _, j in keyed],
        spec,
        engine=engine,
        workers=workers,
        address=address,
        progress=progress,
        keys=[j.key for _, j in keyed],
        desc="verifying",
        runtime_env=runtime_env,
    )


def map_jobs(
    task: Callable[[Verifier, Any], Any],
    items: Sequence[Any],
    spec: VerifierSpec | None = None,
    *,
    engine: Engine = "serial",
    workers: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
    keys: Sequence[Any] | None = None,
    desc: str = "jobs",
    runtime_env: dict | None = None,
) -> Iterator[JobResult]:
    """``task(verifier, item)`` for every item, each worker holding one Verifier built from
    ``spec``; :class:`JobResult` per item in order (``value`` = what ``task`` returned).

    ``task`` must be picklable (a module-level function) for the ``process`` and ``ray``
    engines. This is what :func:`verify_many` and the benchmarks (``--engine``) run on.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, not {engine!r}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    spec = spec or VerifierSpec()
    items = list(items)
    keys = list(keys) if keys is not None else list(range(len(items)))
    if len(keys) != len(items):
        raise InputError("keys and items differ in length")
    if engine == "ray":
        _require_ray()  # now, not at the first result
    if engine == "serial":
        outcomes = _serial(task, items, spec)
    elif engine == "process":
        outcomes = _process(task, items, spec, workers)
    else:
        outcomes = _ray(task, items, spec, workers, address, runtime_env)
    return _with_progress(outcomes, keys, len(items), desc, progress)


# -- results ----------------------------------------------------------------------------------


def _with_progress(
    outcomes: Iterator[tuple[Any, JobError | None]],
    keys: list[Any],
    total: int,
    desc: str,
    enabled: bool | None,
) -> Iterator[JobResult]:
    bar = _bar(total, desc, enabled)
    try:
        for i, (value, error) in enumerate(outcomes):
            if bar is not None:
                bar.update(1)
            yield JobResult(i, keys[i], value, error)
    finally:
        if bar is not None:
            bar.close()
        outcomes.close()


def _bar(total: int, desc: str, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with the bench extra; no bar without it
        return None
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False)


def _attempt(task, verifier, item) -> tuple[Any, JobError | None]:
    try:
        return task(verifier, item), None
    except Exception as exc:  # recorded per job; the run goes on
        return None, job_error(exc)


# -- serial -----------------------------------------------------------------------------------


def _serial(task, items, spec: VerifierSpec) -> Iterator[tuple[Any, JobError | None]]:
    if not items:
        return
    try:
        verifier = spec.build()
    except LivenessError as exc:
        err = job_error(exc)
        for _ in items:
            yield None, err
        return
    try:
        for item in items:
            yield _attempt(task, verifier, item)
    finally:
        verifier.close()


# -- worker side (process pool and Ray actors) ------------------------------------------------


class _WorkerState:
    """One worker's Verifier, built on its first job (or the setup error, kept)."""

    def __init__(self, spec: VerifierSpec) -> None:
        self.spec = spec
        self.verifier: Verifier | None = None
        self.setup_error: JobError | None = None

    def run(self, task, item) -> tuple[Any, JobError | None]:
        if self.verifier is None and self.setup_error is None:
            try:
                self.verifier = self.spec.build()
            except Exception as exc:
                self.setup_error = job_error(exc)
        if self.setup_error is not None:
            return None, self.setup_error
        return _attempt(task, self.verifier, item)

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.close()
            self.verifier = None


# The process pool's worker state: set by the pool initializer, in the worker process only.
_PROCESS_STATE: _WorkerState | None = None


def _process_init(spec: VerifierSpec) -> None:
    global _PROCESS_STATE
    _PROCESS_STATE = _WorkerState(spec)


def _process_run(task, item) -> tuple[Any, JobError | None]:
    assert _PROCESS_STATE is not None, "called outside a verify_many worker"
    return _PROCESS_STATE.run(task, item)


def _process(task, items, spec, workers) -> Iterator[tuple[Any, JobError | None]]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if not items:
        return
    n = min(workers or os.cpu_count() or 1, len(items))
    pool = ProcessPoolExecutor(
        n, mp_context=mp.get_context("spawn"), initializer=_process_init, initargs=(spec,)
    )
    pending: deque = deque()
    nxt = 0
    try:
        while nxt < len(items) or pending:
            while nxt < len(items) and len(pending) < 2 * n:
                pending.append(pool.submit(_process_run, task, items[nxt]))
                nxt += 1
            fut = pending.popleft()
            try:
                yield fut.result()
            except BrokenProcessPool as exc:
                yield None, JobError("worker_lost", type(exc).__name__, str(exc))
            except Exception as exc:  # e.g. a result that cannot be pickled back
                yield None, job_error(exc)
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


# -- Ray --------------------------------------------------------------------------------------


def _ray(task, items, spec, workers, address, runtime_env) -> Iterator[tuple[Any, JobError | None]]:
    if not items:
        return
    ray = _require_ray()
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"address": address, "include_dashboard": False}
        kw["log_to_driver"] = False
        if runtime_env is not None:
            kw["runtime_env"] = runtime_env
        ray.init(**kw)
        started = True
    try:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        n = min(n, len(items))
        actor_cls = ray.remote(num_cpus=1)(_RayWorker)
        actors = [actor_cls.remote(spec) for _ in range(n)]
        pending: deque = deque()
        nxt = 0
        try:
            while nxt < len(items) or pending:
                while nxt < len(items) and len(pending) < 2 * n:
                    pending.append(actors[nxt % n].run.remote(task, items[nxt]))
                    nxt += 1
                ref = pending.popleft()
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    yield None, JobError("worker_lost", type(exc).__name__, str(exc))
                except ray.exceptions.RayTaskError as exc:
                    yield None, JobError("error", type(exc).__name__, str(exc))
        finally:
            for a in actors:
                ray.kill(a)
    finally:
        if started:
            ray.shutdown()


def _require_ray():
    try:
        import ray
    except ImportError as exc:
        raise SetupError('engine="ray" needs Ray: pip install "liveness[ray]"') from exc
    return ray


class _RayWorker:
    """A Ray actor holding one Verifier (``ray.remote`` is applied in :func:`_ray`, so that
    importing this module does not need Ray)."""

    def __init__(self, spec: VerifierSpec) -> None:
        self.state = _WorkerState(spec)

    def run(self, task, item) -> tuple[Any, JobError | None]:
        return self.state.run(task, item)
