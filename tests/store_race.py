"""Child-process side of the cross-process race tests in test_stores.py (a module of its own,
so that ``spawn`` children import this and not the test module)."""

from __future__ import annotations

import os


def race(url, options, session_ids, digests, account, failures, now, barrier, results) -> None:
    """Open the store from its URL, wait for every other process, then try to consume every
    session, record every digest and record ``failures`` failures for ``account``. Puts
    ``(pid, sessions won, digests recorded first, error or None)`` on ``results``."""
    from liveness.sessions import SessionAlreadyUsedError
    from liveness.stores import RateLimit, store_from_url

    won: list[str] = []
    first: list[str] = []
    store = None
    try:
        store = store_from_url(url, limits=RateLimit(max_failures=5), **options)
        barrier.wait(timeout=120)
        for sid in session_ids:
            try:
                store.consume(sid, now)
                won.append(sid)
            except SessionAlreadyUsedError:
                pass
        first = [d for d in digests if store.record_video_digest(d, now)]
        for _ in range(failures):
            store.record_failure(account, now)
        results.put((os.getpid(), won, first, None))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put((os.getpid(), won, first, repr(exc)))
    finally:
        if store is not None:
            store.close()


def race_fingerprints(url, options, records, now, barrier, results) -> None:
    """Open the store from its URL, wait for every other process, then offer every record to
    :func:`liveness.stores.fingerprints.remember_unless_seen` (as test_stores.remember: the
    summary is the first word, equal records are the same). Puts ``(pid, records kept by
    this process, error or None)`` on ``results``."""
    from liveness.stores import store_from_url
    from liveness.stores.fingerprints import remember_unless_seen

    kept: list[str] = []
    store = None
    try:
        store = store_from_url(url, **options)
        barrier.wait(timeout=120)
        for rec in records:
            head = rec.split()[0]
            if remember_unless_seen(
                store,
                head,
                rec,
                now,
                maybe_same=lambda summaries, head=head: [s == head for s in summaries],
                same=rec.__eq__,
                retention=3600.0,
            ):
                kept.append(rec)
        results.put((os.getpid(), kept, None))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put((os.getpid(), kept, repr(exc)))
    finally:
        if store is not None:
            store.close()
