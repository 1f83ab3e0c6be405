"""Command line: ``liveness verify``, ``liveness models list|check``.

Exit status: 0 accept; 1 review or reject; 2 unusable input or setup (one line on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from . import models
from .errors import LivenessError

EXIT_ACCEPT, EXIT_NOT_ACCEPTED, EXIT_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="liveness", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="verify a selfie video against a reference photo")
    v.add_argument("video")
    v.add_argument("reference")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.add_argument("--model-dir", help=f"model directory (default ${models.MODEL_DIR_ENV})")
    v.add_argument("--providers", help="ONNX Runtime providers, comma separated (e.g. cuda,cpu)")
    v.add_argument("--verbose", action="store_true", help="keep native libraries' log output")

    m = sub.add_parser("models", help="list or check the model files")
    m.add_argument("action", choices=["list", "check"])
    m.add_argument("--model-dir")
    m.add_argument(
        "--download",
        action="store_true",
        help="with check: download missing models (checksum-verified)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "verify":
            return _verify(args)
        return _models(args)
    except LivenessError as exc:
        print(f"liveness: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True):
    """Silence what native libraries (MediaPipe's glog, TFLite) write to file descriptor 2,
    so that the CLI's stderr holds only its own one-line messages."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _verify(args) -> int:
    from .verify import Verifier

    providers = args.providers.split(",") if args.providers else None
    with quiet_native_stderr(not args.verbose):
        with Verifier(args.model_dir, providers=providers) as verifier:
            result = verifier.verify(args.video, args.reference)
    if args.json:
        print(result.to_json())
    else:
        print(f"decision: {result.decision}  score: {result.score:.3f}")
        if result.match.similarity is not None:
            print(
                f"match: similarity {result.match.similarity:.3f}, "
                f"estimated false-match rate {result.match.fmr_estimate:.2g}"
            )
        if result.liveness.score is not None:
            print(f"liveness: live probability {result.liveness.score:.3f}")
        for r in result.reasons:
            print(f"  {r.code.value}: {r.message}")
        print("timings (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings_ms.items()))
    return EXIT_ACCEPT if result.accepted else EXIT_NOT_ACCEPTED


def _models(args) -> int:
    if args.action == "list":
        rows = []
        for s in models.REGISTRY.values():
            use = {
                True: "commercial use allowed",
                False: "NON-COMMERCIAL ONLY",
                None: "license unclear",
            }[s.commercial_use]
            rows.append(f"{s.name:26} {s.kind:10} {s.filename:40} {use:24} {s.license}")
        print("\n".join(rows))
        return 0
    if args.download:
        os.environ[models.ALLOW_DOWNLOAD_ENV] = "1"
    statuses = []
    for s in models.REGISTRY.values():
        try:
            p = models.resolve(s.name, model_dir=args.model_dir)
            statuses.append({"name": s.name, "ok": True, "path": str(p), "sha256": s.sha256})
        except LivenessError as exc:
            statuses.append({"name": s.name, "ok": False, "error": str(exc)})
    print(json.dumps(statuses, indent=2))
    required = {"yunet", "face_landmarker", "w600k_mbf", "minifasnet_v2", "minifasnet_v1se"}
    return 0 if all(s["ok"] for s in statuses if s["name"] in required) else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
