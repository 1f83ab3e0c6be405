"""python -m examples.recovery_service --db PATH [--store URL] --model-dir DIR [--port P]"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from liveness.sessions import ENV_KEY, RateLimit

from .app import ServiceConfig, create_app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m examples.recovery_service",
        description="Account recovery with a selfie video: API and capture page.",
    )
    ap.add_argument("--db", default="recovery.sqlite3", help="SQLite file for everything")
    ap.add_argument(
        "--store",
        metavar="URL",
        help="session store: sqlite:///FILE, postgresql://..., redis://... (default: --db)",
    )
    ap.add_argument("--purge-every", type=float, default=600.0, help="seconds between purges")
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
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServiceConfig(
        db=Path(args.db),
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
    )
    if config.model_dir is None and not os.environ.get("LIVENESS_MODEL_DIR"):
        logging.getLogger("recovery_service").info("no --model-dir: using the model cache")

    import uvicorn

    uvicorn.run(create_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
