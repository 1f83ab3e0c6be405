"""Load and faults on several recovery-service instances sharing one PostgreSQL (issue 13).

    python -m benchmarks.service_load --recoveries 200 > service_load.json

starts a throw-away PostgreSQL (``tests/servers.py``; Debian's ``postgresql``), two service
instances (uvicorn processes on loopback) with ``--db`` and ``--store`` on it, and then:

1. ``--recoveries`` recoveries, each started on one instance and its clip uploaded to *both*
   instances at once with the same token (a duplicate upload racing across processes);
2. one instance SIGKILLed while an upload it accepted is being verified, then restarted
   under the same instance name;
3. the database stopped and started again while the second half of the load runs.

Clients retry a ``503`` after its ``Retry-After`` (capped at 1 s here), as the service asks.
The JSON says how every request was answered, how many times each token was verified, whether
every recovery has exactly one outcome and one ``decision`` audit row, and whether the audit
chain verifies.

PLUMBING, clearly: the instances' analysis step is :class:`PlumbingVerifier`, not the real
:class:`liveness.Verifier` (about 2 s of CPU per clip on this machine's 2 shared cores, so 200
real verifications would take minutes and measure the models, not the store). It does what
matters to the store: it checks the token and spends it through the service's real
:class:`~liveness.sessions.ChallengeGate` (the PostgreSQL session store: one-use consume,
video digest), records each verification in a log file, and waits ``--delay`` seconds to
hold the race window open. Everything else (HTTP, claims, outcomes, audit chain, rate
limits, 503s) is the real service. ``tests/test_service_cluster.py`` runs one real-model
instance pair for the cross-instance flow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


# -- the plumbing analysis step (runs inside each instance) ----------------------------------


class PlumbingVerifier:
    """Stands in for :class:`liveness.Verifier` in the load test ONLY (see module doc).

    ``enroll`` accepts any photo as a usable reference; ``verify`` checks and spends the token
    through ``challenges`` (the service's gate and store), appends ``<session id>
    <instance>`` to ``log_path`` (O_APPEND: one line per verification, from every process),
    sleeps ``delay`` and answers ``accept``."""

    def __init__(self, log_path: str, instance: str, delay: float = 0.05) -> None:
        self.log_path = log_path
        self.instance = instance
        self.delay = delay
        self.challenges = None

    def close(self) -> None:
        pass

    def enroll(self, image, **_):
        from liveness.verify import Reference

        return Reference(np.ones(4, np.float32), "plumbing", "0" * 64, None, [], 1)

    def verify(
        self, video, reference, *, challenge=None, mirrored=False, account=None, attempt=None, **_
    ):
        from liveness.reasons import Reason, ReasonCode
        from liveness.sessions import (
            SessionError,
            StoreUnavailable,
            new_attempt,
            verify_token,
            video_digest,
        )

        data = Path(video).read_bytes()
        now = time.time()
        attempt = attempt or new_attempt()
        try:
            claims = self.challenges.begin(challenge, video_digest(data), now, attempt=attempt)
        except SessionError as exc:
            reason = Reason.of(ReasonCode(exc.code), "reject", message=str(exc))
            return _result("reject", [reason])
        except StoreUnavailable:  # as liveness.Verifier: the retry may resume the session
            sid = verify_token(self.challenges.keyring, challenge, now=now).session_id
            self.challenges.release(sid, attempt, now)
            raise
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{claims.session_id} {self.instance}\n".encode())
        finally:
            os.close(fd)
        time.sleep(self.delay)
        return _result("accept", [])


def _result(decision: str, reasons: list) -> SimpleNamespace:
    return SimpleNamespace(
        decision=decision,
        score=1.0 if decision == "accept" else 0.0,
        reasons=reasons,
        reason_codes=[str(r.code.value) for r in reasons],
        match=SimpleNamespace(similarity=None),
        liveness=SimpleNamespace(challenge=None),
        video={"sha256": None},
        models={},
    )


def serve(argv: list[str]) -> None:
    """One instance: ``serve --db URL --store URL --port P --instance NAME --state-dir D
    --log FILE --delay S`` (keys from LIVENESS_SECRET_KEY / _AUDIT_KEY / _OPERATOR_KEY)."""
    import uvicorn

    from examples.recovery_service import ServiceConfig, create_app
    from examples.recovery_service.security import ClientLimits, uvicorn_config

    ap = argparse.ArgumentParser()
    for name in ("--db", "--store", "--instance", "--state-dir", "--log"):
        ap.add_argument(name, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.05)
    a = ap.parse_args(argv)
    many = 10**6  # every request comes from 127.0.0.1: per-client limits off for the load
    config = ServiceConfig(
        db=a.db,
        store=a.store,
        instance=a.instance,
        state_dir=Path(a.state_dir),
        ttl=600,
        workers=8,
        purge_every=30.0,
        client_limits=ClientLimits(
            starts_per_client=many,
            starts_total=many,
            uploads_per_client=many,
            uploads_total=many,
            enrolments_total=many,
            junk_per_client=many,
        ),
    )
    app = create_app(config, verifier=PlumbingVerifier(a.log, a.instance, a.delay))
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", a.port, log_level="warning")).run()


# -- driving instances from outside ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Instance:
    """One service process; ``command`` is its argv after ``python``."""

    name: str
    command: list[str]
    env: dict
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait for ``/healthz``; returns the seconds it took."""
        t = time.perf_counter()
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, *self.command, "--port", str(self.port)],
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"instance {self.name} exited ({self.proc.returncode})")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"instance {self.name} did not answer within {timeout} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def keys_env(model_dir: str | None = None) -> dict:
    """An environment with fresh signing, audit and operator keys (shared by instances)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["LIVENESS_SECRET_KEY"] = secrets.token_urlsafe(32)
    env["LIVENESS_AUDIT_KEY"] = secrets.token_urlsafe(32)
    env["LIVENESS_OPERATOR_KEY"] = secrets.token_urlsafe(32)
    if model_dir:
        env["LIVENESS_MODEL_DIR"] = model_dir
    return env


def request(method: str, url: str, *, json_body=None, form=None, headers=None, timeout=60):
    """(status, headers, JSON body or None); (None, {}, error text) when the connection
    failed (an instance killed)."""
    headers = dict(headers or {})
    data = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    elif form is not None:
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in form.items():
            if isinstance(value, tuple):  # (filename, bytes, type)
                fname, blob, ctype = value
                head = (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                    f'filename="{fname}"\r\nContent-Type: {ctype}\r\n\r\n'
                )
                parts.append(head.encode() + blob + b"\r\n")
            else:
                head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                parts.append(head.encode() + str(value).encode() + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = body[:200].decode("latin-1")
        return e.code, dict(e.headers), doc
    except (OSError, urllib.error.URLError) as e:
        return None, {}, str(e)


class Tally:
    """Every answer, counted; 503s checked for Retry-After; latencies of uploads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: Counter = Counter()
        self.errors: list[str] = []
        self.upload_ms: list[float] = []
        self.no_retry_after = 0

    def add(self, what: str, status, headers, body) -> None:
        with self.lock:
            self.status[f"{what} {status}"] += 1
            if status == 503 and "retry-after" not in {k.lower() for k in headers}:
                self.no_retry_after += 1
            if status is not None and status >= 500 and status != 503:
                self.errors.append(f"{what} {status} {str(body)[:200]}")


def with_retry(tally: Tally, what: str, fn, budget: float = 90.0):
    """``fn()`` again after each 503 (sleeping its Retry-After, at most 1 s) or connection
    error, for up to ``budget`` seconds."""
    end = time.monotonic() + budget
    while True:
        status, headers, body = fn()
        tally.add(what, status, headers, body)
        if status not in (503, None) or time.monotonic() > end:
            return status, headers, body
        ra = {k.lower(): v for k, v in headers.items()}.get("retry-after", "1")
        time.sleep(min(1.0, float(ra)))


def one_recovery(insts, i, accounts, tally, results, barrier_timeout=30.0) -> None:
    """Start on instance i % n, upload the same token to two instances at once."""
    home = insts[i % len(insts)]
    account = accounts[i % len(accounts)]
    st, _h, body = with_retry(
        tally,
        "start",
        lambda: request("POST", home.url + "/recoveries", json_body={"account": account}),
    )
    if st != 200:
        results.append({"i": i, "start": st, "body": body})
        return
    rid, token = body["recovery_id"], body["token"]
    clip = b"plumbing-clip-" + secrets.token_bytes(64)
    targets = [insts[i % len(insts)], insts[(i + 1) % len(insts)]]
    answers: list = [None, None]
    gate = threading.Barrier(2, timeout=barrier_timeout)

    def upload(k: int) -> None:
        gate.wait()
        t = time.perf_counter()
        answers[k] = with_retry(
            tally,
            "upload",
            lambda: request(
                "POST",
                f"{targets[k].url}/recoveries/{rid}/video",
                form={"video": ("c.webm", clip, "video/webm"), "token": token},
            ),
        )
        with tally.lock:
            tally.upload_ms.append((time.perf_counter() - t) * 1000)

    threads = [threading.Thread(target=upload, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.append({"i": i, "rid": rid, "token": token, "uploads": [a[0] for a in answers]})


def run_batch(insts, indices, accounts, tally, results, threads: int = 6) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(one_recovery, insts, i, accounts, tally, results) for i in indices]:
            f.result()


def kill_mid_upload(insts, victim: int, account: str, verifications: Path, tally: Tally) -> dict:
    """Upload to instance ``victim``, SIGKILL it once the verification is under way, restart
    it under the same name; returns what became of that recovery."""
    inst = insts[victim]
    st, _h, body = request("POST", inst.url + "/recoveries", json_body={"account": account})
    assert st == 200, (st, body)
    rid, token = body["recovery_id"], body["token"]
    out: dict = {}

    def upload() -> None:
        out["upload"] = request(
            "POST",
            f"{inst.url}/recoveries/{rid}/video",
            form={
                "video": ("c.webm", b"killed-" + secrets.token_bytes(32), "video/webm"),
                "token": token,
            },
        )[0]

    t = threading.Thread(target=upload)
    t.start()
    end = time.monotonic() + 30
    while time.monotonic() < end and rid not in verifications.read_text():
        time.sleep(0.01)
    started = rid in verifications.read_text()
    inst.kill()
    t.join(30)
    restart_s = inst.start()
    other = insts[(victim + 1) % len(insts)]
    op = {"Authorization": f"Bearer {inst.env['LIVENESS_OPERATOR_KEY']}"}
    st, _h, status = request("GET", f"{other.url}/recoveries/{rid}", headers=op)
    # The same token again, on the other instance: refused, never verified twice.
    again = request(
        "POST",
        f"{other.url}/recoveries/{rid}/video",
        form={
            "video": ("c.webm", b"again-" + secrets.token_bytes(32), "video/webm"),
            "token": token,
        },
    )
    tally.add("kill-reupload", *again)
    return {
        "recovery_id": rid,
        "verification_started_before_kill": started,
        "client_saw": out.get("upload"),
        "restart_s": round(restart_s, 2),
        "status_after_restart": status.get("status") if isinstance(status, dict) else None,
        "error_after_restart": status.get("error") if isinstance(status, dict) else None,
        "reupload_status": again[0],
    }


def run(
    n: int,
    *,
    db_url: str,
    workdir: Path,
    restart_db=None,
    delay: float = 0.05,
    store_url: str | None = None,
) -> dict:
    """The whole load + fault run against the PostgreSQL at ``db_url`` (``restart_db()``
    stops and starts it; None skips that fault), sessions in ``store_url`` (default: the same
    database). Returns the figures and the checks."""
    from liveness.audit import AuditLog

    workdir.mkdir(parents=True, exist_ok=True)
    verifications = workdir / "verifications.log"
    verifications.touch()
    env = keys_env()
    insts = []
    for name in ("a", "b"):
        cmd = [
            "-m", "benchmarks.service_load", "serve", "--db", db_url,
            "--store", store_url or db_url,
            "--instance", name, "--state-dir", str(workdir / name), "--log", str(verifications),
            "--delay", str(delay),
        ]  # fmt: skip
        insts.append(Instance(name, cmd, env, log=workdir / f"{name}.log"))
    tally = Tally()
    results: list = []
    figures: dict = {
        "recoveries": n,
        "instances": len(insts),
        "session_store": (store_url or db_url).split(":", 1)[0],
        "plumbing_verifier": True,
    }
    try:
        figures["start_s"] = [round(i.start(), 2) for i in insts]
        op = {"Authorization": f"Bearer {env['LIVENESS_OPERATOR_KEY']}"}
        accounts = [f"load{k}" for k in range(20)]
        for a in accounts:
            st, _h, body = request(
                "PUT",
                f"{insts[0].url}/accounts/{a}/reference",
                form={"photo": ("p.png", b"plumbing-photo", "image/png")},
                headers=op,
            )
            assert st == 200, (st, body)
        t0 = time.perf_counter()
        half = n // 2
        run_batch(insts, range(half), accounts, tally, results)
        # An instance killed mid-upload (its own account, so its limits stay apart).
        request(
            "PUT",
            f"{insts[0].url}/accounts/killed/reference",
            form={"photo": ("p.png", b"plumbing-photo", "image/png")},
            headers=op,
        )
        figures["kill"] = kill_mid_upload(insts, 1, "killed", verifications, tally)
        db_fault: dict = {}
        if restart_db is not None:

            def fault() -> None:
                time.sleep(1.0)
                t = time.perf_counter()
                restart_db()
                db_fault["down_s"] = round(time.perf_counter() - t, 2)

            ft = threading.Thread(target=fault)
            ft.start()
        run_batch(insts, range(half, n), accounts, tally, results)
        if restart_db is not None:
            ft.join()
        figures["db_restart"] = db_fault or None
        figures["load_s"] = round(time.perf_counter() - t0, 2)
        figures["recoveries_per_s"] = round(n / figures["load_s"], 1)
        # -- the checks --------------------------------------------------------------------
        lines = verifications.read_text().split()
        per_token = Counter(lines[0::2])
        rids = [r["rid"] for r in results if "rid" in r]
        statuses = Counter()
        for rid in rids:
            st, _h, body = with_retry(
                tally,
                "status",
                lambda rid=rid: request("GET", f"{insts[0].url}/recoveries/{rid}", headers=op),
            )
            statuses[body.get("status") if isinstance(body, dict) else st] += 1
        audit = AuditLog(db_url, env["LIVENESS_AUDIT_KEY"].encode())
        try:
            entries = audit.entries()
            report = audit.verify(head=None)
        finally:
            audit.close()
        decisions = Counter(e["recovery_id"] for e in entries if e["event"] == "decision")
        started = Counter(e["recovery_id"] for e in entries if e["event"] == "recovery_started")
        pairs = Counter(
            tuple(sorted(str(s) for s in r["uploads"])) for r in results if "uploads" in r
        )
        figures.update(
            answers=dict(sorted(tally.status.items())),
            upload_pairs={" + ".join(k): v for k, v in sorted(pairs.items())},
            five_hundreds_other_than_503=tally.errors[:10],
            responses_503_without_retry_after=tally.no_retry_after,
            recoveries_started=len(rids),
            recovery_status=dict(statuses),
            verified_exactly_once=sum(1 for r in rids if per_token[r] == 1),
            verified_more_than_once=sum(1 for r in rids if per_token[r] > 1),
            never_verified=[r for r in rids if per_token[r] == 0][:5],
            decision_rows_exactly_one=sum(1 for r in rids if decisions[r] == 1),
            started_rows_exactly_one=sum(1 for r in rids if started[r] == 1),
            audit_rows=report.rows,
            audit_chain_ok=report.ok,
            audit_problems=report.problems[:5],
            upload_ms_p50=round(statistics.median(tally.upload_ms), 1) if tally.upload_ms else None,
            upload_ms_p95=round(float(np.percentile(tally.upload_ms, 95)), 1)
            if tally.upload_ms
            else None,
        )
        kill_rid = figures["kill"]["recovery_id"]
        figures["kill"]["verifications"] = per_token[kill_rid]
        figures["kill"]["decision_rows"] = decisions[kill_rid]
        figures["kill"]["interrupted_rows"] = sum(
            1
            for e in entries
            if e["event"] == "recovery_interrupted" and e["recovery_id"] == kill_rid
        )
    finally:
        for inst in insts:
            inst.stop()
    return figures


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m benchmarks.service_load")
    ap.add_argument("--recoveries", type=int, default=200)
    ap.add_argument("--delay", type=float, default=0.05, help="plumbing verification seconds")
    ap.add_argument("--workdir", default=None)
    ap.add_argument(
        "--store", choices=("postgresql", "redis"), default="postgresql", help="session store"
    )
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    import tempfile

    from servers import PostgresServer, RedisServer

    srv = PostgresServer.create()
    redis = RedisServer.create() if a.store == "redis" else None
    try:

        def restart() -> None:
            srv.stop()
            time.sleep(2.0)
            srv.start()

        workdir = Path(a.workdir or tempfile.mkdtemp(prefix="service-load-"))
        out = run(
            a.recoveries,
            db_url=srv.url,
            workdir=workdir,
            restart_db=restart,
            delay=a.delay,
            store_url=redis.url if redis else None,
        )
    finally:
        srv.destroy()
        if redis is not None:
            redis.destroy()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
