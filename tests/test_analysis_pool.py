"""The work after decoding run side by side (``VerifierConfig.face_workers``) gives the same
result as run one step after the other: the same model calls with the same arguments."""

from __future__ import annotations

import threading
from dataclasses import replace

from liveness.video import frame_at


def _without_timings(result) -> dict:
    d = result.to_dict()
    d.pop("timings_ms")
    return d


def test_side_by_side_gives_the_serial_result(verifier, data_dir):
    clip = data_dir / "videos" / "talking_head_wda_1.mp4"
    ref = verifier.enroll(frame_at(clip, 7.5))
    cfg = verifier.config
    seen: dict[int, set[str]] = {}
    detect = verifier.parts.detector.detect

    def spying_detect(image):  # which threads the keyframes are detected on
        seen.setdefault(workers, set()).add(threading.current_thread().name)
        return detect(image)

    results = {}
    try:
        verifier.parts.detector.detect = spying_detect
        for workers in (0, 2):
            verifier.config = replace(cfg, face_workers=workers)
            results[workers] = verifier.verify(clip, ref)
    finally:
        verifier.config = cfg
        del verifier.parts.detector.detect
    serial, pooled = results[0], results[2]
    assert _without_timings(pooled) == _without_timings(serial)
    # the comparison covers the parts that ran on the pool
    assert serial.decision == "accept" and serial.quality["keyframes"] >= 4
    assert len(serial.liveness.per_frame) >= 4
    assert len(serial.liveness.temporal["appearance"]) >= 2
    assert all(not name.startswith("faces") for name in seen[0])
    assert any(name.startswith("faces") for name in seen[2])
