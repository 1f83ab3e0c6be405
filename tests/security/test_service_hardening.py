"""Issue 12 items 1, 5, 6, 7, 8 and 10 replayed against the recovery service (real models,
real SQLite files), each refused or bounded."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time

import pytest
from fastapi.testclient import TestClient

from examples.recovery_service import ServiceConfig, create_app
from examples.recovery_service.app import RecoveryService
from examples.recovery_service.security import ClientLimits, OperatorAuth
from liveness import cli
from liveness.actions import ACTIONS
from liveness.sessions import KeyConfigError, Keyring, RateLimit

OPERATOR_KEY = "op-Hk3vQ9mZ2xL7tR5wB8nC4pYj"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
CLIP = "videos/talking_head_wda_1.mp4"


class AsClient:
    """ASGI wrapper that takes the client address from ``X-Test-Client`` (tests only), so
    one TestClient can play several addresses."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            host = headers.get(b"x-test-client", b"testclient").decode()
            scope = {**scope, "client": (host, 50000)}
        await self.app(scope, receive, send)


@pytest.fixture
def make_client(tmp_path, verifier):
    """A service on its own database in ``tmp_path`` (shared Verifier); yields a factory."""
    opened = []

    def make(**overrides):
        verifier.challenges = None  # each service installs its own gate
        config = ServiceConfig(
            db=tmp_path / "db" / "recovery.sqlite3",
            max_upload_bytes=4 * 1024 * 1024,
            rate_limit=RateLimit(max_failures=3, window=180, cooldown=300),
            db_busy_timeout=0.3,
            **overrides,
        )
        app = create_app(
            config,
            verifier=verifier,
            keyring=Keyring.single(b"svc-test-key-Zq8Lm3Xv"),
            operator_key=OPERATOR_KEY,
        )
        client = TestClient(AsClient(app), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        client.service = app.state.service
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)
    verifier.challenges = None


def enroll(client, account, photo, headers=OPERATOR):
    return client.put(
        f"/accounts/{account}/reference",
        files={"photo": ("p.png", photo, "image/png")},
        headers=headers,
    )


def start(client, account, who="testclient"):
    return client.post("/recoveries", json={"account": account}, headers={"X-Test-Client": who})


def upload(client, session, data, who="testclient"):
    return client.post(
        session["upload_url"],
        data={"token": session["token"]},
        files={"video": ("v.webm", data, "video/webm")},
        headers={"X-Test-Client": who},
    )


# -- item 1: account takeover without credentials ------------------------------------------


def test_reference_needs_the_operator_key(make_client, reference_png):
    client = make_client()
    r = enroll(client, "alice", reference_png, headers={})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "OPERATOR_AUTH_REQUIRED"
    r = enroll(client, "alice", reference_png, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert client.service.reference("alice") is None
    r = enroll(client, "alice", reference_png)
    assert r.status_code == 200, r.text
    entry = [e for e in client.service.audit_entries() if e["event"] == "reference_enrolled"][0]
    assert entry["actor"] == OperatorAuth(OPERATOR_KEY.encode()).actor
    assert entry["client"] == "testclient"
    # Guessing the key: after 10 wrong tries (2 above) the address is slowed down.
    codes = [
        enroll(client, "bob", b"x", headers={"Authorization": f"Bearer guess{i}"}).status_code
        for i in range(12)
    ]
    assert codes[:8] == [401] * 8 and codes[8:] == [429] * 4


def test_service_does_not_start_without_an_operator_key(tmp_path, monkeypatch):
    monkeypatch.delenv("LIVENESS_OPERATOR_KEY", raising=False)
    config = ServiceConfig(db=tmp_path / "r.sqlite3")
    with pytest.raises(KeyConfigError, match="LIVENESS_OPERATOR_KEY"):
        create_app(config)
    from examples.recovery_service.__main__ import main

    with pytest.raises(SystemExit, match="--operator-key-file"):
        main(["--db", str(tmp_path / "r.sqlite3")])
    key_file = tmp_path / "op.key"
    key_file.write_text(OPERATOR_KEY)
    key_file.chmod(0o644)
    with pytest.raises(SystemExit, match="chmod 600"):
        main(["--db", str(tmp_path / "r.sqlite3"), "--operator-key-file", str(key_file)])
    for weak in ("aaaaaaaaaaaaaaaa", "changeme-changeme"):
        monkeypatch.setenv("LIVENESS_OPERATOR_KEY", weak)
        with pytest.raises(KeyConfigError, match="guessed"):
            create_app(config)
    monkeypatch.delenv("LIVENESS_OPERATOR_KEY")
    create_app(ServiceConfig(db=tmp_path / "r.sqlite3", insecure_no_operator_auth=True))


def test_replaced_reference_is_kept_audited_and_cools_down(make_client, reference_png, data_dir):
    client = make_client()
    assert enroll(client, "alice", reference_png).status_code == 200
    assert start(client, "alice").status_code == 200
    other = (data_dir / "faces/deepface/couple.jpg").read_bytes()  # unusable: refused
    assert enroll(client, "alice", other).status_code == 422
    r = enroll(client, "alice", reference_png)
    assert r.status_code == 200 and r.json()["replaced"] is True
    with sqlite3.connect(client.service.db_path) as c:
        (n, by) = c.execute(
            "SELECT COUNT(*), MAX(replaced_by) FROM reference_history WHERE account = 'alice'"
        ).fetchone()
    assert n == 1 and by.startswith("operator:")
    replaced = [e for e in client.service.audit_entries() if e["event"] == "reference_replaced"]
    assert replaced and replaced[0]["previous_photo_sha256"] and replaced[0]["actor"]
    r = start(client, "alice")
    assert r.status_code == 409 and r.json()["error"] == "REFERENCE_NEW"
    assert int(r.headers["Retry-After"]) > 23 * 3600


def test_recovery_status_needs_its_token(make_client, reference_png):
    client = make_client()
    assert enroll(client, "alice", reference_png).status_code == 200
    a, b = start(client, "alice").json(), start(client, "alice").json()
    url = f"/recoveries/{a['recovery_id']}"
    assert client.get(url).status_code == 404
    assert client.get(url, headers={"Authorization": f"Bearer {b['token']}"}).status_code == 404
    r = client.get(url, headers={"Authorization": f"Bearer {a['token']}"})
    assert r.status_code == 200 and r.json()["status"] == "waiting"
    assert client.get(url, headers=OPERATOR).status_code == 200


# -- item 6: body size on every endpoint -----------------------------------------------------


def test_json_bodies_are_limited_and_never_echoed(make_client):
    client = make_client()
    t = time.perf_counter()
    r = client.post("/recoveries", content=b'{"account": "' + b"a" * 2_000_000 + b'"}', headers={})
    assert r.status_code == 413 and r.json()["error"] == "UPLOAD_TOO_LARGE"

    def chunks():  # no Content-Length: counted while it streams in
        for _ in range(200):
            yield b"x" * 10_000

    r = client.post("/recoveries", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post("/recoveries", content=b"z" * 10_000, headers={"Content-Type": "text/plain"})
    assert r.status_code == 422 and b"zzzz" not in r.content and len(r.content) < 300
    assert time.perf_counter() - t < 5
    # A photo upload is limited to the photo limit, before the form is parsed.
    r = client.put(
        "/accounts/alice/reference",
        content=b"\0" * (11 * 1024 * 1024),
        headers={**OPERATOR, "Content-Type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 413


# -- item 5: the owner locked out by anyone ------------------------------------------------


def test_junk_does_not_lock_out_the_owner_but_blocks_the_client(make_client, reference_png):
    client = make_client()
    assert enroll(client, "alice", reference_png).status_code == 200
    for _ in range(5):
        s = start(client, "alice", who="10.0.0.66").json()
        assert upload(client, s, b"junk" * 50, who="10.0.0.66").status_code == 422
    # The attacker's address is blocked; alice, from her own address, is not.
    r = start(client, "alice", who="10.0.0.66")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 60
    assert start(client, "alice", who="192.0.2.7").status_code == 200
    assert client.service.store.failures("alice", 3600, time.time()) == 0


def test_starts_are_limited_per_client_and_overall(make_client, reference_png):
    client = make_client(client_limits=ClientLimits(starts_per_client=3, starts_total=5))
    assert enroll(client, "alice", reference_png).status_code == 200
    codes = [start(client, "alice", who="10.0.0.1").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert start(client, "alice", who="10.0.0.2").status_code == 200
    assert start(client, "alice", who="10.0.0.3").status_code == 200
    r = start(client, "alice", who="10.0.0.4")  # the global limit: 5 a minute
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_review_outcomes_count_against_the_account(verifier, data_dir):
    # Photo animations that end in "review" used to reach the human queue without limit.
    import dataclasses

    from liveness.decision import Policy
    from liveness.sessions import ChallengeGate, MemorySessionStore
    from liveness.video import frame_at

    gate = ChallengeGate(Keyring.single(b"review-key-Qm7vX2pL9t"), MemorySessionStore())
    saved = verifier.config
    # Every live score is "uncertain" under this policy, so a completed challenge by the
    # right face ends in review.
    verifier.config = dataclasses.replace(saved, policy=Policy(live_accept=1.01, live_reject=0))
    verifier.challenges = gate
    try:
        clip = data_dir / "videos/selfie_blinks.mp4"
        ref = verifier.enroll(frame_at(clip, 1.0))
        others = [a for a in ACTIONS if a != "blink"]
        issued = gate.issue(account="alice", actions=1, exclude=others)
        result = verifier.verify(clip, ref, challenge=issued.token)
        assert result.decision == "review", result.reason_codes
        assert gate.store.failures("alice", 3600, time.time()) == 1
    finally:
        verifier.config = saved
        verifier.challenges = None


# -- item 7: the audit chain -------------------------------------------------------------------


def _tamper(db, sql, args=()):
    with sqlite3.connect(db) as c:
        c.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        c.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        c.execute(sql, args)


def _verify_cli(db, capsys) -> tuple[int, dict]:
    code = cli.main(["audit", "verify", "--db", str(db), "--audit-key-file", f"{db}.audit-key"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "attack",
    ["edit_entry", "edit_account", "edit_event", "edit_recovery_id", "rehash", "truncate"],
)
def test_audit_chain_detects_rewrites_and_truncation(make_client, reference_png, attack, capsys):
    import hashlib
    import hmac

    client = make_client()
    assert enroll(client, "alice", reference_png).status_code == 200
    for _ in range(3):
        assert start(client, "alice").status_code == 200
    db = client.service.db_path
    assert _verify_cli(db, capsys)[0] == 0
    if attack == "edit_entry":
        _tamper(db, "UPDATE audit_log SET entry = replace(entry, 'alice', 'mallory') WHERE id = 2")
    elif attack == "edit_account":
        _tamper(db, "UPDATE audit_log SET account = 'mallory' WHERE id = 2")
    elif attack == "edit_event":
        _tamper(db, "UPDATE audit_log SET event = 'nothing' WHERE id = 2")
    elif attack == "edit_recovery_id":
        _tamper(db, "UPDATE audit_log SET recovery_id = 'x' WHERE id = 3")
    elif attack == "truncate":
        _tamper(db, "DELETE FROM audit_log WHERE id >= 3")
    else:  # edit a row, then recompute every MAC with a key the attacker could have
        _tamper(db, "UPDATE audit_log SET account = 'mallory' WHERE id = 2")
        with sqlite3.connect(db) as c:
            rows = c.execute(
                "SELECT id, at, event, actor, client, account, recovery_id, entry "
                "FROM audit_log ORDER BY id"
            ).fetchall()
            prev = "0" * 64
            for row in rows:
                text = json.dumps([*row, prev], separators=(",", ":"))
                mac = hmac.new(b"svc-test-key-Zq8Lm3Xv", text.encode(), hashlib.sha256)
                c.execute(
                    "UPDATE audit_log SET prev_mac = ?, mac = ? WHERE id = ?",
                    (prev, mac.hexdigest(), row[0]),
                )
                prev = mac.hexdigest()
    code, report = _verify_cli(db, capsys)
    assert code == 1 and not report["ok"] and report["problems"], report
    assert not client.service.audit_chain_ok()


# -- item 8: files and evidence --------------------------------------------------------------


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_files_are_private_and_evidence_is_purged(make_client, reference_png, data_dir, tmp_path):
    evidence = tmp_path / "evidence"
    client = make_client(keep_evidence=evidence, evidence_retention_s=3600)
    assert enroll(client, "alice", reference_png).status_code == 200
    s = start(client, "alice").json()
    r = upload(client, s, (data_dir / "videos/blink_2x_tiny.mp4").read_bytes())
    assert r.status_code == 200, r.text
    db = client.service.db_path
    for path in (db, f"{db}.audit-key", f"{db}.audit-head", f"{db}-wal"):
        if os.path.exists(path):
            assert _mode(path) == 0o600, path
    assert _mode(evidence) == 0o700 and _mode(client.service.spool) == 0o700
    kept = sorted(evidence.iterdir())
    assert len(kept) == 2 and all(_mode(p) == 0o600 for p in kept)
    assert list(client.service.spool.iterdir()) == []
    old = time.time() - 7200
    for p in kept:
        os.utime(p, (old, old))
    assert client.service.purge_evidence() == 2 and list(evidence.iterdir()) == []
    assert any(e["event"] == "evidence_purged" for e in client.service.audit_entries())


# -- item 10: crash recovery, store errors, token account --------------------------------------


def test_interrupted_attempt_is_failed_audited_and_free(make_client, reference_png):
    client = make_client()
    assert enroll(client, "alice", reference_png).status_code == 200
    s = start(client, "alice").json()
    service = client.service
    with sqlite3.connect(service.db_path) as c:  # a crash mid-verification leaves this
        c.execute("UPDATE recoveries SET status = 'processing' WHERE id = ?", (s["recovery_id"],))
    (service.spool / "upload-left.webm").write_bytes(b"left by a crash")
    again = RecoveryService(service.config, verifier=service.verifier, keyring=service.gate.keyring)
    assert again.status(s["recovery_id"])["status"] == "failed"
    assert again.status(s["recovery_id"])["error"] == "INTERRUPTED"
    assert [e for e in again.audit_entries() if e["event"] == "recovery_interrupted"]
    assert list(service.spool.iterdir()) == []
    assert again.store.failures("alice", 3600, time.time()) == 0
    assert again.start("alice")["recovery_id"]


def test_locked_database_is_503_with_retry_after(make_client, reference_png):
    client = make_client()
    assert enroll(client, "alice", reference_png).status_code == 200
    lock = sqlite3.connect(client.service.db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        t = time.perf_counter()
        r = start(client, "alice")
        assert r.status_code == 503 and r.json()["error"] == "STORE_UNAVAILABLE"
        assert int(r.headers["Retry-After"]) >= 1 and time.perf_counter() - t < 5
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert start(client, "alice").status_code == 200


def test_token_for_another_account_is_refused_before_decoding(verifier, reference_png):
    from liveness.sessions import ChallengeGate, MemorySessionStore

    gate = ChallengeGate(Keyring.single(b"acct-key-Rt5Wq8Zm2X"), MemorySessionStore())
    verifier.challenges = gate
    try:
        mallory = gate.issue(account="mallory")
        ref = verifier.enroll(reference_png)
        t = time.perf_counter()
        result = verifier.verify(b"not even a video", ref, challenge=mallory.token, account="alice")
        assert result.reason_codes == ["TOKEN_INVALID"] and result.decision == "reject"
        assert time.perf_counter() - t < 1
    finally:
        verifier.challenges = None


@pytest.mark.parametrize("weak", ["aaaaaaaaaaaaaaaa", "changeme-changeme", "abcdefghijklmnop"])
def test_weak_signing_keys_are_refused(weak, tmp_path):
    with pytest.raises(KeyConfigError):
        Keyring.from_env({"LIVENESS_SECRET_KEY": weak})
    f = tmp_path / "key"
    f.write_text("Vq8Lr2Xp7Tn4Wc9Kz3Bm6Hd1")
    f.chmod(0o644)
    with pytest.raises(KeyConfigError, match="chmod 600"):
        Keyring.from_file(f)
    f.chmod(0o600)
    assert Keyring.from_file(f).current == "default"
