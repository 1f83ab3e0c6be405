"""Purging the session store on a schedule: expired sessions, old failures and old video
digests are forgotten (``SessionStore.purge``) every ``every`` seconds, in a daemon thread,
together with the other periodic jobs given as ``also`` (the client counters' purge, the
sweep of stale attempts: :mod:`.client_limits`, :mod:`.sweep`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from liveness.stores import SessionStore, StoreUnavailable

log = logging.getLogger("recovery_service.purge")


class PurgeSchedule:
    """Calls ``store.purge(time.time())`` at start and then every ``every`` seconds until
    :meth:`stop`. A store that is briefly unavailable is logged and tried again at the next
    tick; the thread never dies of an error. ``runs`` and ``removed`` count what it did."""

    def __init__(
        self,
        store: SessionStore,
        every: float,
        also: Sequence[Callable[[float], int]] = (),
    ) -> None:
        if every <= 0:
            raise ValueError(f"purge interval must be positive, not {every!r}")
        self.store = store
        self.every = every
        # More jobs run at each tick, each given time.time() and returning what it removed
        # (or failed); one job's error is logged and never stops the others.
        self.also = tuple(also)
        self.runs = 0
        self.removed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="store-purge", daemon=True)

    def start(self) -> PurgeSchedule:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> int:
        """One purge now, then the ``also`` jobs; returns how many records they removed
        (a job whose store is down counts 0)."""
        done = [self._run(job) for job in (self.store.purge, *self.also)]
        n = sum(k for k in done if k is not None)
        if None not in done:  # `runs`: ticks at which every job ran
            self.runs += 1
        self.removed += n
        return n

    @staticmethod
    def _run(job: Callable[[float], int]) -> int | None:
        """``job(now)``; None (logged) when it failed."""
        name = getattr(job, "__qualname__", repr(job))
        try:
            n = job(time.time())
        except StoreUnavailable as exc:
            log.warning("%s skipped: store unavailable (%s)", name, exc.detail)
            return None
        except Exception:
            log.exception("%s failed", name)
            return None
        if n:
            log.info("%s removed %d records", name, n)
        return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.every)
