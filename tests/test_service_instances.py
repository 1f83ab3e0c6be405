"""What an attacker could round-robin across service instances is shared (issue 13 follow-up).

Two service instances (two :class:`RecoveryService` objects, each with its own store
connections, client limiter, purge thread and instance name) on one real PostgreSQL
(``--db``) and a real PostgreSQL or Redis session store (``--store``), both started by the
tests (``tests/servers.py``):

* a copy of a recording already submitted to instance A, with other bytes, is refused on
  instance B with the existing reason ``VIDEO_REUSED`` (real models, real decoding);
* per-client limits hold across the instances: N instances do not give one address N times
  its budget, and a client blocked for junk on A is blocked on B;
* attempts left ``processing`` by an instance that never came back are failed by the
  periodic sweep, with exactly one ``recovery_interrupted`` audit row each while both
  instances sweep at once.
"""

from __future__ import annotations

import json
import secrets
import threading
import time

import cv2
import pytest
from cluster_race import AUDIT_KEY
from fastapi.testclient import TestClient
from media import frame_at
from security.test_service_hardening import AsClient
from servers import postgres_server, redis_server  # noqa: F401 (fixtures)
from test_service_cluster import fresh_database

from benchmarks.service_load import PlumbingVerifier
from examples.recovery_service import ServiceConfig, create_app
from examples.recovery_service.security import ClientLimits
from liveness import Verifier
from liveness.audit import AuditLog
from liveness.sessions import Keyring

CLIP = "videos/talking_head_retalk_2.mp4"
# The Redis database the service tests use (flushed before each test; the conformance suite
# isolates itself by namespace in database 0).
REDIS_DB = 7


@pytest.fixture(params=["postgresql", "redis"])
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def cluster(request, store_kind, tmp_path, postgres_server, monkeypatch):  # noqa: F811
    """A factory of service instances on one fresh PostgreSQL database, with the session
    store in that database or in a flushed Redis database; every instance is closed at the
    end. ``make(name, verifier=None, **config)`` returns a TestClient whose ``service`` is
    the instance; requests may name their client address in ``X-Test-Client``."""
    import redis

    monkeypatch.setenv("LIVENESS_AUDIT_KEY", AUDIT_KEY.decode())
    db = fresh_database(postgres_server)
    if store_kind == "redis":
        server = request.getfixturevalue("redis_server")
        store = server.url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
        admin = redis.Redis.from_url(store)
        admin.flushdb()
        admin.close()
    else:
        store = db
    keyring = Keyring.single(secrets.token_bytes(32), "k1")
    operator = secrets.token_urlsafe(24)
    opened: list[TestClient] = []

    def make(name: str, verifier=None, **config) -> TestClient:
        cfg = ServiceConfig(
            db=db, store=store, instance=name, state_dir=tmp_path / name, **config
        )
        verifier = verifier or PlumbingVerifier(str(tmp_path / "verified.log"), name)
        app = create_app(cfg, verifier=verifier, keyring=keyring, operator_key=operator)
        client = TestClient(AsClient(app), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        client.service = app.state.service
        client.operator = {"Authorization": f"Bearer {operator}"}
        return client

    make.db = db
    yield make
    for c in opened:
        c.__exit__(None, None, None)


def enroll(client, account: str, png: bytes):
    r = client.put(
        f"/accounts/{account}/reference",
        files={"photo": ("p.png", png, "image/png")},
        headers=client.operator,
    )
    assert r.status_code == 200, r.text


def start(client, account: str = "ann", who: str = "testclient"):
    return client.post("/recoveries", json={"account": account}, headers={"X-Test-Client": who})


def upload(client, started: dict, data: bytes, *, token=None, who="testclient", name="c.mp4"):
    return client.post(
        started["upload_url"],
        data={"token": token or started["token"]},
        files={"video": (name, data, "video/mp4")},
        headers={"X-Test-Client": who},
    )


# -- 1. a recording seen by one instance is seen by all ----------------------------------------


@pytest.mark.parametrize("store_kind", ["redis"], indirect=True)
def test_a_copy_sent_to_the_other_instance_is_refused_as_reused(
    cluster, verifier, data_dir, store_kind
):
    """Real models: the clip is verified on A; the same clip with 100 bytes appended (a new
    SHA-256, the same pictures) is refused on B as VIDEO_REUSED, by the content
    fingerprint that A left in the shared store. Each instance has its own Verifier and
    gate (models shared through one Runtime)."""
    own = [Verifier(runtime=verifier.runtime) for _ in range(2)]
    try:
        a = cluster("a", verifier=own[0])
        b = cluster("b", verifier=own[1])
        assert a.service.gate is not b.service.gate
        assert own[0].challenges is a.service.gate and own[1].challenges is b.service.gate
        ok, png = cv2.imencode(".png", frame_at(data_dir / CLIP, 1.0))
        enroll(a, "ann", png.tobytes())
        clip = (data_dir / CLIP).read_bytes()

        first = upload(a, start(a).json(), clip)
        assert first.status_code == 200, first.text
        codes = [r["code"] for r in first.json()["reasons"]]
        assert "VIDEO_REUSED" not in codes, codes

        copy = upload(b, start(b).json(), clip + b"\0" * 100)
        assert copy.status_code == 200, copy.text
        body = copy.json()
        assert body["decision"] == "reject"
        assert [r["code"] for r in body["reasons"]] == ["VIDEO_REUSED"], body
        assert "already submitted" in body["reasons"][0]["message"]
        # The refusal is B's own: its audit row names no other instance's work.
        decisions = [e for e in b.service.audit_entries() if e["event"] == "decision"]
        assert [d["reason_codes"] for d in decisions][-1] == ["VIDEO_REUSED"]
    finally:
        for v in own:
            v.close()


# -- 2. per-client limits across instances ----------------------------------------------------


def test_client_limits_hold_across_instances(cluster):
    """Plumbing analysis step (PlumbingVerifier). One address alternating between A and B
    gets its 4 starts a minute in total, not 4 on each; another address is not affected;
    3 junk uploads spread over both instances block the address on both."""
    limits = ClientLimits(starts_per_client=4, junk_per_client=3, junk_block=600.0)
    a, b = cluster("a", client_limits=limits), cluster("b", client_limits=limits)
    enroll(a, "ann", b"photo")
    codes = [start((a, b)[i % 2], who="10.0.0.9").status_code for i in range(6)]
    assert codes == [200, 200, 200, 200, 429, 429]
    r = start(b, who="10.0.0.9")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert start(a, who="192.0.2.7").status_code == 200

    # Junk (a wrong token) sent to A, B, A from one address: blocked on both instances.
    for inst in (a, b, a):
        s = start(inst, who="192.0.2.50").json()
        r = upload(inst, s, b"clip", token="not-a-token", who="192.0.2.50")
        assert r.status_code == 403, r.text
    for inst in (a, b):
        r = start(inst, who="192.0.2.50")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 60, r.text
    assert start(b, who="192.0.2.51").status_code == 200

    # The counters live in a store of their own (client addresses are not kept in the
    # session store) and purge forgets them after the longest window.
    limiter = a.service.limiter
    assert limiter.store is not a.service.store
    assert limiter.purge(time.time() + 3600) > 0
    assert start(b, who="10.0.0.9").status_code == 200  # the window is gone too


# -- 3. attempts left processing by an instance that never came back --------------------------


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_the_periodic_sweep_fails_stale_attempts_once(cluster, store_kind):
    """Plumbing analysis step. An instance "gone" claimed 12 attempts two hours ago and one
    a minute ago, and never came back. A and B sweep on their schedule (every 0.2 s) and
    four more sweeps are forced at the same moment from both: the 12 stale attempts are
    failed as INTERRUPTED with exactly one audit row each; the recent one is left alone."""
    a = cluster("a", purge_every=0.2, stale_processing_s=3600.0)
    b = cluster("b", purge_every=0.2, stale_processing_s=3600.0)
    enroll(a, "ann", b"photo")
    db = a.service.db
    stale = [start(a, who=f"10.1.0.{i}").json()["recovery_id"] for i in range(12)]
    recent = start(b, who="10.1.1.1").json()["recovery_id"]
    for rid in stale:
        assert db.claim(rid, "gone", now=time.time() - 7200)
    assert db.claim(recent, "gone", now=time.time() - 60)

    gate = threading.Barrier(4)
    swept: list[int] = []

    def sweep(inst) -> None:
        gate.wait(30)
        swept.append(inst.service.sweep.run())

    threads = [threading.Thread(target=sweep, args=(i,)) for i in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    end = time.monotonic() + 10
    while time.monotonic() < end and any(db.recovery(r)[3] != "failed" for r in stale):
        time.sleep(0.1)
    time.sleep(0.5)  # a few more scheduled sweeps on both instances
    for rid in stale:
        status, outcome = db.recovery(rid)[3:]
        assert status == "failed" and json.loads(outcome)["error"] == "INTERRUPTED"
        assert a.service.status(rid)["error"] == "INTERRUPTED"
    assert db.recovery(recent)[3] == "processing"
    assert a.service.purger.runs >= 2 and b.service.purger.runs >= 2
    log = AuditLog(cluster.db, AUDIT_KEY)
    try:
        rows = [e for e in log.entries() if e["event"] == "recovery_interrupted"]
        assert log.verify(head=None).ok
    finally:
        log.close()
    assert sorted(e["recovery_id"] for e in rows) == sorted(stale)
    assert sum(swept) <= len(stale)
