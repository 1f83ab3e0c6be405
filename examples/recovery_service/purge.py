"""Purging the session store on a schedule: expired sessions, old failures and old video
digests are forgotten (``SessionStore.purge``) every ``every`` seconds, in a daemon thread."""

from __future__ import annotations

import logging
import threading
import time

from liveness.stores import SessionStore, StoreUnavailable

log = logging.getLogger("recovery_service.purge")


class PurgeSchedule:
    """Calls ``store.purge(time.time())`` at start and then every ``every`` seconds until
    :meth:`stop`. A store that is briefly unavailable is logged and tried again at the next
    tick; the thread never dies of an error. ``runs`` and ``removed`` count what it did."""

    def __init__(self, store: SessionStore, every: float) -> None:
        if every <= 0:
            raise ValueError(f"purge interval must be positive, not {every!r}")
        self.store = store
        self.every = every
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
        """One purge now; returns how many records it removed (0 if the store is down)."""
        try:
            n = self.store.purge(time.time())
        except StoreUnavailable as exc:
            log.warning("session store purge skipped: store unavailable (%s)", exc.detail)
            return 0
        except Exception:
            log.exception("session store purge failed")
            return 0
        self.runs += 1
        self.removed += n
        if n:
            log.info("session store purge removed %d records", n)
        return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.every)
