"""Cost of the shared "seen this recording before?" check, per store and number kept.

    python -m benchmarks.fingerprint_store --kept 100,1000 [--servers] [--url URL ...]

Fingerprints are :func:`liveness.fingerprint.content_fingerprint` of the shared clips
(``$LIVENESS_DATA_DIR/videos``, sampled at 15 frames/s, as the Verifier does). For each store
(``memory://``, a SQLite file, and with ``--servers`` a throw-away PostgreSQL and Redis from
``tests/servers.py``; ``--url`` adds any) and each count N of ``--kept``: N fingerprints of
other clips are stored, then :meth:`FingerprintIndex.check_and_add` is timed for a recording
not among them (every kept one is read and compared: the worst case) ``--repeats`` times,
and so is the read of the summaries alone (``fingerprints_since``; only candidates' full
texts are fetched after it). Prints one JSON object: milliseconds (median, max) per check
and per read, and the summary bytes read per check.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit, parent_parser, set_progress
from liveness.fingerprint import FingerprintIndex, content_fingerprint
from liveness.stores import store_from_url
from liveness.stores.url import redact
from liveness.video import load_video

ROOT = Path(__file__).resolve().parent.parent
PROBE = "talking_head_retalk_1.mp4"


def clip_fingerprints(data_dir: Path) -> dict:
    """Fingerprint of every clip in ``data_dir/videos`` (name -> Fingerprint)."""
    out = {}
    for p in sorted((data_dir / "videos").iterdir()):
        if p.suffix in (".mp4", ".webm"):
            out[p.name] = content_fingerprint(load_video(p, sample_fps=15).frames)
    return out


def bench_store(url: str, kept: list[int], fps: dict, repeats: int) -> dict:
    probe = fps[PROBE]
    others = [(fp.summary(), fp.to_json()) for name, fp in fps.items() if name != PROBE]
    rows = []
    for n in kept:
        at = url
        if url.startswith("sqlite:///"):
            at = f"{url.rsplit('.', 1)[0]}-{n}.db"  # a fresh file per count
        options = {} if url.startswith(("memory", "sqlite")) else {"namespace": _ns()}
        store = store_from_url(at, max_fingerprints=max(kept) + repeats + 1, **options)
        try:
            now = time.time()
            for i in range(n):
                store.add_fingerprint(*others[i % len(others)], now)
            index = FingerprintIndex(store=store)
            read, check, nbytes = [], [], 0
            for _ in range(repeats):
                t = time.perf_counter()
                texts = store.fingerprints_since(now - index.retention)
                read.append(time.perf_counter() - t)
                nbytes = sum(len(s) for _, s in texts)
                t = time.perf_counter()
                assert index.check_and_add(probe, now)  # new: scans everything kept
                check.append(time.perf_counter() - t)
                # forget it again, so that every repeat is a new recording
                store.drop_fingerprint(max(i for i, _ in store.fingerprints_since(0)))
            rows.append(
                {
                    "kept": n,
                    "check_ms_median": round(statistics.median(check) * 1000, 1),
                    "check_ms_max": round(max(check) * 1000, 1),
                    "read_ms_median": round(statistics.median(read) * 1000, 1),
                    "bytes_read_per_check": nbytes,
                }
            )
        finally:
            store.close()
    return {"store": redact(url), "rows": rows}


def _ns() -> str:
    return "fpbench" + secrets.token_hex(4)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("--kept", default="100,1000", help="numbers kept, comma-separated")
    ap.add_argument("--repeats", type=int, default=5, help="checks per number (default 5)")
    ap.add_argument("--url", action="append", default=[], help="a store URL (repeatable)")
    ap.add_argument(
        "--servers", action="store_true", help="also a throw-away PostgreSQL and Redis"
    )
    ap.add_argument("--data-dir", default=os.environ.get("LIVENESS_DATA_DIR", "../shared/data"))
    a = ap.parse_args(argv)
    set_progress(False if a.no_progress else None)
    kept = [int(k) for k in a.kept.split(",")]
    fps = clip_fingerprints(Path(a.data_dir))
    tmp = Path(tempfile.mkdtemp(prefix="fpbench-"))
    urls = ["memory://", f"sqlite:///{tmp / 'fp.db'}", *a.url]
    servers = []
    if a.servers:
        sys.path.insert(0, str(ROOT / "tests"))
        from servers import PostgresServer, RedisServer

        servers = [PostgresServer.create(), RedisServer.create()]
        urls += [s.url for s in servers]
    try:
        results = [bench_store(u, kept, fps, a.repeats) for u in urls]
    finally:
        for s in servers:
            s.destroy()
    sizes = [len(fp.to_json()) for fp in fps.values()]
    out = {
        "clips": len(fps),
        "fingerprint_bytes_median": int(statistics.median(sizes)),
        "probe": PROBE,
        "stores": results,
    }
    emit(out, a.json)
    return out


if __name__ == "__main__":
    main()
