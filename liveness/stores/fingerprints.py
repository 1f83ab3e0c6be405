"""The "seen this recording before?" rule, written once over a store's atomic primitives.

:class:`liveness.fingerprint.FingerprintIndex` judges video reuse on the decoded frames (a
re-encoded, trimmed or byte-changed copy has a new SHA-256 but the same pictures). Matching
is a similarity, not an equality, so no store can answer "insert if absent" for it by
itself. Every backend (memory, SQLite, PostgreSQL, Redis) instead provides three primitives
(:class:`liveness.stores.base.StorePrimitives`): ``add_fingerprint`` (one atomic append that
also drops the oldest beyond ``max_fingerprints``), ``fingerprints_since`` (one consistent
read) and ``drop_fingerprint``; :func:`remember_unless_seen` is the rule over them, so
several service instances sharing one store share one set of seen recordings.

The rule is *append, then look*: the new fingerprint is appended first, then every kept
fingerprint seen within ``retention`` is read, and if any *other* one is the same recording
the new one is dropped again and the call answers False ("seen before").

Concurrency (two copies of one recording uploaded at once, to one instance or to several):
each call's append completes before its read starts, so of two racing calls the one that
reads second sees the other's record, unless that record was already dropped because its
own call saw a copy. Hence at most one of any number of racing copies is accepted; when
their appends and reads interleave, *both* may see each other and both are refused (fail
closed: two uploads of one recording at the same moment are not a person recording
themselves). A refused call removes its own record, so refusals never fill the set.

If the store fails between the append and the decision (:class:`StoreUnavailable`), the
record is dropped if the store still answers, and the error is raised: the caller answers
503 and the outcome is unknown, as for every other store call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from .base import StorePrimitives, StoreUnavailable

__all__ = ["remember_unless_seen"]


def remember_unless_seen(
    store: StorePrimitives,
    record: str,
    now: float,
    *,
    same: Callable[[str], bool],
    retention: float,
) -> bool:
    """Keep ``record`` (a fingerprint's text) as seen at ``now`` unless a kept record seen
    in ``[now - retention, now]`` or added concurrently is ``same`` as it; True if kept.

    ``same(text)`` compares the new recording with one kept record's text (False for a text
    it cannot read). Work: one append, one read of every kept record, ``same`` on each until
    one matches; bounded by the store's ``max_fingerprints``.
    """
    fid = store.add_fingerprint(record, now)
    try:
        for other, text in store.fingerprints_since(now - retention):
            if other != fid and same(text):
                store.drop_fingerprint(fid)
                return False
    except BaseException:
        with contextlib.suppress(StoreUnavailable):
            store.drop_fingerprint(fid)
        raise
    return True
