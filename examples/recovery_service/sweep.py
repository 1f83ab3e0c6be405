"""Failing attempts left ``processing`` by an instance that never came back, on a schedule.

An instance fails its *own* interrupted attempts when it starts again
(:meth:`RecoveryService.recover_interrupted`), and any instance that starts fails attempts
older than ``stale_processing_s``. An instance that never comes back, in a cluster where no
instance restarts, would leave its attempts ``processing`` for ever: the person sees
"processing" and cannot start over with that recovery. :class:`StaleSweep` runs with the
store purge (``--purge-every``, :class:`~.purge.PurgeSchedule`) on every instance and fails
attempts claimed more than ``stale_after`` seconds ago, each with one
``recovery_interrupted`` audit row, however many instances sweep at once
(:meth:`~.db.ServiceDB.fail_stale` reports each attempt to exactly one of them).

The timeout must be longer than any verification can run (uploads are bounded in size and
duration; a verification takes seconds): the default, one hour, is far above that, so a
sweep never fails an attempt that is still being verified.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from .db import ServiceDB, retry_unavailable

__all__ = ["INTERRUPTED", "StaleSweep"]

# What the person sees for an attempt failed on our side (also at an instance's restart).
INTERRUPTED = {
    "error": "INTERRUPTED",
    "message": "The check of your recording was interrupted on our side. Start a new "
    "recovery attempt; this one does not count against you.",
}


class StaleSweep:
    """``run(now)`` fails the attempts claimed before ``now - stale_after`` and still
    ``processing``; ``audit(event, account=, recovery_id=, actor=, **data)`` records each
    one. Returns how many this call failed."""

    def __init__(
        self,
        db: ServiceDB,
        audit: Callable[..., None],
        stale_after: float,
        *,
        audit_retry_s: float = 30.0,
    ) -> None:
        if stale_after <= 0:
            raise ValueError(f"stale timeout must be positive, not {stale_after!r}")
        self.db = db
        self.audit = audit
        self.stale_after = stale_after
        self.audit_retry_s = audit_retry_s

    def run(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        rows = self.db.fail_stale(json.dumps(INTERRUPTED), now, now - self.stale_after)
        for rid, account in rows:
            # The attempt is failed already: its audit row is retried through a database
            # restart of up to audit_retry_s, as a verification's outcome is.
            retry_unavailable(
                lambda rid=rid, account=account: self.audit(
                    "recovery_interrupted",
                    account=account,
                    recovery_id=rid,
                    actor="system",
                    stale_after_s=self.stale_after,
                ),
                self.audit_retry_s,
            )
        return len(rows)
