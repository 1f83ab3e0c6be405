"""Command line: ``liveness verify``, ``liveness audit verify``, ``liveness models list|check``.

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
from .sessions import (
    ENV_KEY,
    ChallengeGate,
    KeyConfigError,
    Keyring,
    SessionError,
    StoreUnavailable,
)
from .stores import store_from_url

DEFAULT_STORE = "liveness-sessions.sqlite3"
STORE_HELP = "session store: a SQLite file, or sqlite:///FILE, postgresql://..., redis://..."

EXIT_ACCEPT, EXIT_NOT_ACCEPTED, EXIT_ERROR = 0, 1, 2

# Models whose licenses allow commercial use and that together run the whole pipeline.
PERMISSIVE_PACK = ("yunet", "face_landmarker", "minifasnet_v2", "minifasnet_v1se", "dlib_resnet")


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
    v.add_argument("--challenge", metavar="TOKEN", help="the token from 'liveness challenge new'")
    v.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)
    v.add_argument("--key-file", help=f"signing key file (else ${ENV_KEY})")
    v.add_argument("--mirrored", action="store_true", help="the video is a mirrored preview")
    v.add_argument(
        "--embedder",
        help="face embedder (registry name); dlib_resnet is the one licensed for commercial use",
    )

    c = sub.add_parser("challenge", help="issue a challenge session")
    csub = c.add_subparsers(dest="challenge_command", required=True)
    n = csub.add_parser("new", help="draw a random action sequence and print its token")
    n.add_argument("--actions", type=int, default=3, help="number of actions (default 3)")
    n.add_argument("--ttl", type=int, default=120, help="seconds the session is valid")
    n.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)
    n.add_argument("--key-file", help=f"signing key file (else ${ENV_KEY})")
    n.add_argument("--account", help="account the session is for (rate limits count per account)")
    n.add_argument("--exclude", default="", help="actions never to ask for, comma separated")

    i = sub.add_parser("inspect", help="list every action the detectors find in a video")
    i.add_argument("video")
    i.add_argument("--json", action="store_true")
    i.add_argument("--model-dir")
    i.add_argument("--mirrored", action="store_true")
    i.add_argument("--verbose", action="store_true")

    a = sub.add_parser("audit", help="check a service's keyed audit chain")
    asub = a.add_subparsers(dest="audit_command", required=True)
    av = asub.add_parser("verify", help="check every entry's MAC, the links and the head")
    av.add_argument(
        "--db", required=True, help="the SQLite file (PATH, sqlite:///PATH) or postgresql://..."
    )
    av.add_argument("--audit-key-file", help="audit key file (else $LIVENESS_AUDIT_KEY)")
    av.add_argument("--head", help="exported head file (default: <db>.audit-head if present)")

    m = sub.add_parser("models", help="list or check the model files")
    m.add_argument("action", choices=["list", "check", "build"])
    m.add_argument("name", nargs="?", help="with build: the model to convert (dlib_resnet)")
    m.add_argument("--source", help="with build: the file to convert (else found offline)")
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
        if args.command == "challenge":
            return _challenge_new(args)
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "audit":
            return _audit_verify(args)
        return _models(args)
    except (LivenessError, KeyConfigError, StoreUnavailable) as exc:
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
    from .verify import Verifier, VerifierConfig

    providers = args.providers.split(",") if args.providers else None
    gate = None
    if args.challenge:
        gate = ChallengeGate(Keyring.load(args.key_file), store_from_url(args.store))
    config = VerifierConfig(embedder=args.embedder) if args.embedder else None
    with _closing_store(gate), quiet_native_stderr(not args.verbose):
        with Verifier(
            args.model_dir, config=config, providers=providers, challenges=gate
        ) as verifier:
            result = verifier.verify(
                args.video, args.reference, challenge=args.challenge, mirrored=args.mirrored
            )
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


def _challenge_new(args) -> int:
    gate = ChallengeGate(Keyring.load(args.key_file), store_from_url(args.store))
    exclude = [a.strip() for a in args.exclude.split(",") if a.strip()]
    try:
        with _closing_store(gate):
            issued = gate.issue(
                account=args.account, actions=args.actions, ttl=args.ttl, exclude=exclude
            )
    except SessionError as exc:  # the account is rate limited: a refusal, not a fault
        print(f"liveness: {exc.code}: {exc}", file=sys.stderr)
        return EXIT_NOT_ACCEPTED
    except ValueError as exc:
        raise LivenessError(str(exc)) from exc
    print(json.dumps(issued.to_dict()))
    return 0


@contextlib.contextmanager
def _closing_store(gate: ChallengeGate | None):
    """Close the gate's store (a server store's pool) when the command is done."""
    try:
        yield
    finally:
        if gate is not None and hasattr(gate.store, "close"):
            gate.store.close()


def _inspect(args) -> int:
    from .challenges import detect_actions
    from .landmarks import FaceLandmarks
    from .video import load_video

    with quiet_native_stderr(not args.verbose):
        video = load_video(args.video)
        lm = FaceLandmarks(models.resolve("face_landmarker", model_dir=args.model_dir))
        try:
            meshes = lm.analyse(video.frames)
        finally:
            lm.close()
    events = detect_actions(meshes, mirrored=args.mirrored)
    found = [
        {
            "kind": e.kind,
            "start": round(e.start, 3),
            "peak": round(e.peak, 3),
            "end": round(e.end, 3),
            "confidence": round(e.confidence, 3),
        }
        for e in events
    ]
    report = {
        "video": args.video,
        "duration_s": round(video.duration_s, 3),
        "frames_analysed": len(video.frames),
        "frames_with_face": sum(m is not None for m in meshes),
        "actions": found,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for a in found:
            print(
                f"{a['kind']:11} start {a['start']:6.2f} s  peak {a['peak']:6.2f} s  "
                f"end {a['end']:6.2f} s  confidence {a['confidence']:.2f}"
            )
    return 0


def _audit_verify(args) -> int:
    """Exit 0 when the chain holds, 1 when it was changed (the problems printed as JSON)."""
    from pathlib import Path

    from .audit import AuditLog, is_postgres_url, load_audit_key, sqlite_path

    shared = is_postgres_url(args.db)
    if not shared and not Path(sqlite_path(args.db)).is_file():
        raise LivenessError(f"no database at {args.db}")
    # A PostgreSQL chain has no file beside it: its heads are the instances' checkpoints.
    default_head = None if shared else Path(f"{sqlite_path(args.db)}.audit-head")
    head = Path(args.head) if args.head else default_head
    if args.head and not head.is_file():
        raise LivenessError(f"no head file at {args.head}")
    chain = AuditLog(
        args.db, load_audit_key(args.audit_key_file), head_file=head, head_may_lag=shared
    )
    try:
        report = chain.verify() if head and head.is_file() else chain.verify(head=None)
    finally:
        chain.close()
    doc = report.to_dict()
    doc["head_file"] = str(head) if head and head.is_file() else None
    print(json.dumps(doc, indent=1))
    return 0 if report.ok else EXIT_NOT_ACCEPTED


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
        print(
            "\npermissive pack (commercial use allowed): "
            + ", ".join(f"{n} {models.spec(n).license.split(' (')[0]}" for n in PERMISSIVE_PACK)
            + '\nselect it with VerifierConfig(embedder="dlib_resnet") or --embedder dlib_resnet'
        )
        return 0
    if args.action == "build":
        if not args.name:
            raise LivenessError("liveness models build needs a model name (dlib_resnet)")
        if args.name not in models.REGISTRY:
            raise LivenessError(f"unknown model {args.name!r}; known: dlib_resnet")
        p = models.build(args.name, source=args.source, model_dir=args.model_dir)
        print(json.dumps({"name": args.name, "path": str(p), "sha256": models.sha256_of(p)}))
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
