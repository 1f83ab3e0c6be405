"""python -m examples.recovery_service --db PATH [--store URL] --model-dir DIR
--operator-key-file PATH [--host H] [--port P]"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from liveness.sessions import ENV_KEY, KeyConfigError, RateLimit

from .app import ServiceConfig, create_app
from .security import ServeLimits, uvicorn_config


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m examples.recovery_service",
        description="Account recovery with a selfie video: API and capture page.",
    )
    ap.add_argument(
        "--db",
        default="recovery.sqlite3",
        help="the service's tables and audit chain: SQLite PATH or sqlite:///PATH, or "
        "postgresql://... shared by several instances",
    )
    ap.add_argument("--instance", help="this instance's name (default: the host name)")
    ap.add_argument(
        "--state-dir", help="local files when --db is a server URL (default ./recovery-state)"
    )
    ap.add_argument(
        "--store",
        metavar="URL",
        help="session store: sqlite:///FILE, postgresql://..., redis://... (default: --db)",
    )
    ap.add_argument(
        "--purge-every",
        type=float,
        default=600.0,
        help="seconds between purges and sweeps of stale attempts (600)",
    )
    ap.add_argument(
        "--stale-after",
        type=float,
        default=3600.0,
        help="seconds after which an attempt still processing is failed as INTERRUPTED (3600)",
    )
    ap.add_argument("--model-dir", help="model directory (default $LIVENESS_MODEL_DIR)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--key-file", help=f"signing key file (else ${ENV_KEY}, else a random key)")
    ap.add_argument("--keep-evidence", metavar="DIR", help="keep uploads and full results here")
    ap.add_argument("--max-upload-mb", type=float, default=50.0)
    ap.add_argument("--max-failures", type=int, default=5, help="failed attempts per window")
    ap.add_argument("--window", type=float, default=180.0, help="seconds (default 180)")
    ap.add_argument("--cooldown", type=float, default=300.0, help="seconds blocked (default 300)")
    ap.add_argument("--actions", type=int, default=3, help="actions per challenge")
    ap.add_argument("--ttl", type=int, default=120, help="seconds a challenge is valid")
    ap.add_argument("--workers", type=int, default=2, help="verifications at once")
    ap.add_argument(
        "--operator-key-file",
        help="operator key (mode 0600) for Authorization: Bearer <key>; else "
        "$LIVENESS_OPERATOR_KEY. Required.",
    )
    ap.add_argument(
        "--insecure-no-operator-auth",
        action="store_true",
        help="start without an operator key (anyone can replace reference photos): demo only",
    )
    ap.add_argument("--audit-key-file", help="audit chain HMAC key (else $LIVENESS_AUDIT_KEY)")
    ap.add_argument(
        "--evidence-days", type=float, default=30.0, help="delete kept evidence after (30)"
    )
    ap.add_argument("--max-connections", type=int, default=256, help="open connections at most")
    ap.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds to send a request's headers"
    )
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServiceConfig(
        db=args.db if "://" in args.db else Path(args.db),
        instance=args.instance,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        model_dir=Path(args.model_dir) if args.model_dir else None,
        key_file=Path(args.key_file) if args.key_file else None,
        keep_evidence=Path(args.keep_evidence) if args.keep_evidence else None,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        rate_limit=RateLimit(args.max_failures, args.window, args.cooldown),
        actions=args.actions,
        ttl=args.ttl,
        workers=args.workers,
        store=args.store,
        purge_every=args.purge_every,
        stale_processing_s=args.stale_after,
        operator_key_file=Path(args.operator_key_file) if args.operator_key_file else None,
        insecure_no_operator_auth=args.insecure_no_operator_auth,
        audit_key_file=Path(args.audit_key_file) if args.audit_key_file else None,
        evidence_retention_s=args.evidence_days * 24 * 3600,
    )
    if config.model_dir is None and not os.environ.get("LIVENESS_MODEL_DIR"):
        logging.getLogger("recovery_service").info("no --model-dir: using the model cache")

    import uvicorn

    try:
        app = create_app(config)
    except KeyConfigError as exc:
        raise SystemExit(f"recovery_service: {exc}") from None
    limits = ServeLimits(max_connections=args.max_connections, header_timeout=args.header_timeout)
    uvicorn.Server(uvicorn_config(app, args.host, args.port, limits)).run()


if __name__ == "__main__":
    main()
