"""Session-store latency and cross-process consume throughput, per backend URL.

    python -m benchmarks.stores --url memory:// --url sqlite:///out/s.db \
        --url postgresql://user:pw@127.0.0.1:5432/db --url redis://:pw@127.0.0.1:6379/0

For each URL: median and 95th-percentile milliseconds of every store operation over ``--ops``
calls from one thread, the time of one ``purge`` of everything recorded, and a race in which
``--procs`` processes (each with its own store from the URL) try to consume the same
``--ops`` sessions at once: consumes per second and whether every session was won exactly
once. Server stores get a fresh random namespace (their own tables / keys) per run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import statistics
import time

from benchmarks.common import emit, parent_parser, set_progress
from liveness.sessions import ChallengeClaims, SessionAlreadyUsedError, video_digest
from liveness.stores import RateLimit, store_from_url
from liveness.stores.url import redact

T0 = time.time()


def _claims(exp: float) -> ChallengeClaims:
    return ChallengeClaims(
        session_id=secrets.token_urlsafe(16),
        nonce=secrets.token_urlsafe(16),
        account="bench",
        actions=("blink", "turn_left", "smile"),
        issued_at=int(T0),
        expires_at=int(exp),
        kid="bench",
    )


def _ms(samples: list[float]) -> dict:
    s = sorted(samples)
    return {
        "p50_ms": round(statistics.median(s) * 1000, 3),
        "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))] * 1000, 3),
    }


def _timed(fn, args_list) -> list[float]:
    out = []
    for args in args_list:
        t = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t)
    return out


def _racer(url, options, sids, barrier, results) -> None:
    store = store_from_url(url, **options)
    try:
        barrier.wait(timeout=120)
        won = 0
        t = time.perf_counter()
        for sid in sids:
            try:
                store.consume(sid, T0)
                won += 1
            except SessionAlreadyUsedError:
                pass
        results.put((won, time.perf_counter() - t))
    finally:
        store.close()


def _context():
    """forkserver (one clean process imports the package once; racers fork from it)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["benchmarks.stores", "liveness.stores"])
    return ctx


def bench_url(url: str, ops: int, procs: int) -> dict:
    """All figures for one store URL."""
    server = url.split("://", 1)[0] in ("postgresql", "postgres", "redis", "rediss")
    options = {"namespace": "bench" + secrets.token_hex(4)} if server else {}
    # A limit no benchmark account reaches, so that record_failure never blocks.
    store = store_from_url(url, limits=RateLimit(max_failures=10**9), **options)
    try:
        cl = [_claims(T0 + 120) for _ in range(ops)]
        res: dict = {"url": redact(url), "ops": ops}
        res["record_issued"] = _ms(_timed(store.record_issued, [(c,) for c in cl]))
        res["is_known"] = _ms(_timed(store.is_known, [(c.session_id,) for c in cl]))
        res["consume"] = _ms(_timed(store.consume, [(c.session_id, T0) for c in cl]))
        digests = [(video_digest(secrets.token_bytes(16)), T0) for _ in range(ops)]
        res["record_video_digest"] = _ms(_timed(store.record_video_digest, digests))
        res["record_failure"] = _ms(_timed(store.record_failure, [("bench", T0)] * ops))
        res["check_rate_limit"] = _ms(_timed(store.check_rate_limit, [("bench", T0)] * ops))
        t = time.perf_counter()
        res["purge_removed"] = store.purge(T0 + 365 * 24 * 3600)
        res["purge_s"] = round(time.perf_counter() - t, 3)
        if url.startswith("memory:"):
            return res  # one process only
        race = [_claims(T0 + 120) for _ in range(ops)]
        for c in race:
            store.record_issued(c)
        ctx = _context()
        barrier, results = ctx.Barrier(procs), ctx.Queue()
        sids = [c.session_id for c in race]
        workers = [
            ctx.Process(target=_racer, args=(url, options, sids, barrier, results))
            for _ in range(procs)
        ]
        for w in workers:
            w.start()
        got = [results.get(timeout=600) for _ in range(procs)]
        for w in workers:
            w.join(timeout=60)
        won = sum(g[0] for g in got)
        slowest = max(g[1] for g in got)
        res["race"] = {
            "procs": procs,
            "sessions": ops,
            "attempts": procs * ops,
            "consumed": won,
            "exactly_once": won == ops,
            "attempts_per_s": round(procs * ops / slowest, 1),
        }
        store.purge(T0 + 365 * 24 * 3600)
        return res
    finally:
        store.close()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[parent_parser()])
    ap.add_argument("--url", action="append", required=True, help="a store URL (repeatable)")
    ap.add_argument("--ops", type=int, default=300, help="calls per operation (default 300)")
    ap.add_argument("--procs", type=int, default=4, help="racing processes (default 4)")
    args = ap.parse_args(argv)
    set_progress(False if args.no_progress else None)
    result = {
        "benchmark": "stores",
        "backends": [bench_url(u, args.ops, args.procs) for u in args.url],
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
