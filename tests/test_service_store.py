"""The recovery service with its session store behind a URL (``--store``): sessions and rate
limits live in a real PostgreSQL or Redis server, and the service purges the store on a
schedule. (The service's own tables stay in the --db SQLite file this round.)"""

from __future__ import annotations

import logging
import secrets
import time

import cv2
import pytest
from fastapi.testclient import TestClient
from media import frame_at
from servers import postgres_server, redis_server  # noqa: F401 (fixtures)

from examples.recovery_service import ServiceConfig, create_app
from examples.recovery_service.purge import PurgeSchedule
from liveness import Verifier
from liveness.sessions import ChallengeClaims, Keyring
from liveness.stores import MemorySessionStore, StoreUnavailable, store_from_url

GENUINE = "videos/talking_head_wda_1.mp4"
OPERATOR_KEY = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def verifier(model_dir):
    with Verifier(model_dir) as v:
        yield v


def old_session(now: float) -> ChallengeClaims:
    """A session that expired two hours ago: the next purge removes it."""
    return ChallengeClaims(
        session_id=secrets.token_urlsafe(16),
        nonce=secrets.token_urlsafe(16),
        account="someone",
        actions=("blink",),
        issued_at=int(now) - 7300,
        expires_at=int(now) - 7200,
        kid="k1",
    )


@pytest.mark.parametrize("kind", ["postgresql", "redis"])
def test_service_keeps_sessions_in_the_store_url_and_purges_it(
    kind, request, verifier, data_dir, tmp_path
):
    server = request.getfixturevalue("postgres_server" if kind == "postgresql" else "redis_server")
    outside = store_from_url(server.url)  # another process's view of the same store
    try:
        stale = old_session(time.time())
        outside.record_issued(stale)
        config = ServiceConfig(db=tmp_path / "recovery.sqlite3", store=server.url, purge_every=0.2)
        app = create_app(
            config,
            verifier=verifier,
            keyring=Keyring.single(secrets.token_bytes(32), "k1"),
            operator_key=OPERATOR_KEY,
        )
        with TestClient(app) as client:
            ok, png = cv2.imencode(".png", frame_at(data_dir / GENUINE, 7.5))
            r = client.put(
                "/accounts/wda/reference",
                files={"photo": ("p.png", png.tobytes(), "image/png")},
                headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
            )
            assert r.status_code == 200, r.text
            r = client.post("/recoveries", json={"account": "wda"})
            assert r.status_code == 200, r.text
            # The session is in the server, where every instance can see it.
            assert outside.is_known(r.json()["recovery_id"])
            # Failures recorded elsewhere (another instance) block the account here too.
            account = "bob" + secrets.token_hex(3)
            for _ in range(5):
                outside.record_failure(account, time.time())
            r = client.post("/recoveries", json={"account": account})
            assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
            # The schedule purged the long-expired session.
            end = time.monotonic() + 20
            while outside.is_known(stale.session_id) and time.monotonic() < end:
                time.sleep(0.1)
            assert not outside.is_known(stale.session_id)
            assert app.state.service.purger.runs >= 1
    finally:
        outside.close()


class _DownStore(MemorySessionStore):
    def purge(self, now: float) -> int:
        raise StoreUnavailable(detail="test: down")


def test_purge_schedule_outlives_an_unavailable_store(caplog):
    """Plumbing only: a purge that finds the store down is logged and retried, and the
    thread stops when asked."""
    caplog.set_level(logging.WARNING, logger="recovery_service.purge")
    sched = PurgeSchedule(_DownStore(), every=0.05).start()
    time.sleep(0.3)
    sched.stop()
    assert sched.runs == 0 and "store unavailable" in caplog.text
    assert not sched._thread.is_alive()
    good = MemorySessionStore()
    good.record_issued(old_session(time.time()))
    sched = PurgeSchedule(good, every=60).start()
    end = time.monotonic() + 5
    while sched.runs == 0 and time.monotonic() < end:
        time.sleep(0.02)
    sched.stop()
    assert sched.runs == 1 and sched.removed == 1
    with pytest.raises(ValueError):
        PurgeSchedule(good, every=0)
