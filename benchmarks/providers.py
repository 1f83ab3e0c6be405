"""``benchmarks.speed --providers``: the same verification timed on each ONNX Runtime provider.

    python -m benchmarks.speed --video ../shared/data/videos/talking_head_wda_1.mp4 \
        --reference frame:7.5 --providers cpu cuda --repeat 3

Each ``--providers`` value is one run: a provider or a comma-separated list, best first
(``cuda``, ``tensorrt``, ``coreml``, ``dml``, ``cpu`` or full ONNX Runtime names; CPU is
always last). ``--landmark-delegate gpu`` also moves MediaPipe's landmarker to its GPU
delegate. A provider that is not available here is reported with its error, not skipped
silently, and the other runs go on. Every run's decision and similarity are printed, so that
a provider that changes results shows.
"""

from __future__ import annotations

import time

from liveness import LivenessError, Verifier, VerifierConfig


def time_providers(
    video,
    reference,
    provider_sets: list[str],
    *,
    model_dir=None,
    config: VerifierConfig | None = None,
    repeat: int = 3,
) -> dict[str, dict]:
    """For each provider set: load time, first call, the median wall time of ``repeat``
    further calls, its share of the video's duration, the provider each model ran on, and
    the decision and similarity (or ``error`` when the set cannot be used here)."""
    out: dict[str, dict] = {}
    for name in provider_sets:
        wanted = [p.strip() for p in name.split(",") if p.strip()]
        try:
            t0 = time.perf_counter()
            v = Verifier(model_dir, providers=wanted, config=config)
        except LivenessError as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        try:
            load_s = time.perf_counter() - t0
            ref = v.enroll(reference)
            t1 = time.perf_counter()
            v.verify(video, ref)
            warmup_s = time.perf_counter() - t1
            runs = []
            for _ in range(max(1, repeat)):
                w0 = time.perf_counter()
                r = v.verify(video, ref)
                runs.append((time.perf_counter() - w0, r))
            runs.sort(key=lambda x: x[0])
            wall, r = runs[len(runs) // 2]  # the median call (its stages too)
            out[name] = {
                "load_s": round(load_s, 3),
                "warmup_s": round(warmup_s, 3),
                "wall_s": round(wall, 3),
                "realtime_factor": round(wall / r.video["duration_s"], 4),
                "stages_ms": r.timings_ms,
                "models": {k: m.provider for k, m in v.models_used().items()},
                "decision": r.decision.value,
                "similarity": r.match.similarity,
                "live": r.liveness.score,
            }
        finally:
            v.close()
    return out
