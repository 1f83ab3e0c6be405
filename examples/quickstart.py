"""Quickstart: verify a selfie video against a reference photo.

    python examples/quickstart.py [VIDEO] [--model-dir DIR]

With no arguments it uses a shared talking-head clip, and, since no separate photo of that
person exists here, takes the reference from the clip's last second (a stand-in for the
photo a recovery system would have on file).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import liveness
from liveness.cli import quiet_native_stderr
from liveness.video import frame_at

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?", default=str(SHARED / "data/videos/talking_head_wda_1.mp4"))
    ap.add_argument("--reference", help="reference photo (default: a frame of the video)")
    ap.add_argument(
        "--model-dir", default=os.environ.get("LIVENESS_MODEL_DIR", str(SHARED / "models"))
    )
    args = ap.parse_args()

    reference = args.reference or frame_at(Path(args.video), 7.5)
    # MediaPipe and TFLite log to the process's stderr from native code; hide those lines.
    with quiet_native_stderr(), liveness.Verifier(args.model_dir) as verifier:
        result = verifier.verify(args.video, reference)

    print(f"decision: {result.decision} (score {result.score:.2f})")
    for reason in result.reasons:
        print(f"  {reason.code.value}: {reason.message}")
    print(
        f"similarity {result.match.similarity:.3f}, live {result.liveness.score:.3f}, "
        f"{result.timings_ms['total']:.0f} ms"
    )
    return 0 if result.accepted else 1


if __name__ == "__main__":
    raise SystemExit(main())
