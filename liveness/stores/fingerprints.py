"""The "seen this recording before?" rule, written once over a store's atomic primitives.

:class:`liveness.fingerprint.FingerprintIndex` judges video reuse on the decoded frames (a
re-encoded, trimmed or byte-changed copy has a new SHA-256 but the same pictures). Matching
is a similarity, not an equality, so no store can answer "insert if absent" for it by
itself. Every backend (memory, SQLite, PostgreSQL, Redis) instead provides four primitives
(:class:`liveness.stores.base.StorePrimitives`): ``add_fingerprint`` (one atomic append that
also drops the oldest beyond ``max_fingerprints``), ``fingerprints_since`` (one consistent
read of the short summaries), ``fingerprint_texts`` (the full texts of a few) and
``drop_fingerprint``; :func:`remember_unless_seen` is the rule over them, so several service
instances sharing one store share one set of seen recordings.

The rule is *append, then look*: the new fingerprint is appended first, then the summary of
every kept fingerprint seen within ``retention`` is read; the full texts of those whose
summary may be the same recording (``maybe_same``, a cheap upper bound) are fetched and
compared (``same``), and if any *other* one is the same recording the new one is dropped
again and the call answers False ("seen before").

Concurrency (two copies of one recording uploaded at once, to one instance or to several):
each call's append completes before its read starts, so of two racing calls the one that
reads second sees the other's record. Two *kept* copies are therefore impossible: the
second to read would have seen the first (which, being kept, is never dropped). When their
appends and reads interleave, *both* may see each other and both are refused (fail closed:
two uploads of one recording at the same moment are not a person recording themselves). A
refused call removes its own record, so refusals never fill the set; a record dropped
between the two reads is skipped (its call refused itself).

If the store fails between the append and the decision (:class:`StoreUnavailable`), the
record is dropped if the store still answers, and the error is raised: the caller answers
503 and the outcome is unknown, as for every other store call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from .base import StorePrimitives, StoreUnavailable

__all__ = ["remember_unless_seen"]

# Full texts fetched per round trip (each a few KB to tens of KB).
_BATCH = 32


def remember_unless_seen(
    store: StorePrimitives,
    summary: str,
    record: str,
    now: float,
    *,
    maybe_same: Callable[[list[str]], Sequence[bool]],
    same: Callable[[str], bool],
    retention: float,
) -> bool:
    """Keep ``record`` (a fingerprint's text, with its short ``summary``) as seen at
    ``now`` unless a kept record seen in ``[now - retention, now]`` or added concurrently is
    ``same`` as it; True if kept.

    ``maybe_same(summaries)`` says for each summary whether its ``same(text)`` could be True
    (it must never rule out one that is; it only saves fetching and comparing the others, in
    one call so that it can work on all of them at once); ``same(text)``
    compares the new recording with one kept record's text (False for a text it cannot
    read). Work: one append, one read of every kept summary, one fetch per ``_BATCH``
    candidates; bounded by the store's ``max_fingerprints``.
    """
    fid = store.add_fingerprint(summary, record, now)
    try:
        kept = [(i, s) for i, s in store.fingerprints_since(now - retention) if i != fid]
        flags = maybe_same([s for _, s in kept]) if kept else []
        candidates = [i for (i, _), maybe in zip(kept, flags, strict=True) if maybe]
        for k in range(0, len(candidates), _BATCH):
            batch = candidates[k : k + _BATCH]
            texts = store.fingerprint_texts(batch)
            if any(i in texts and same(texts[i]) for i in batch):
                store.drop_fingerprint(fid)
                return False
    except BaseException:
        with contextlib.suppress(StoreUnavailable):
            store.drop_fingerprint(fid)
        raise
    return True
