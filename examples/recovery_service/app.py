"""Account-recovery service: reference photos, challenge sessions, video uploads, decisions.

The parts, and where each lives:

* :class:`RecoveryService` does the work and knows nothing about HTTP: it holds the one
  :class:`liveness.Verifier` (models loaded once), the :class:`~liveness.sessions.ChallengeGate`
  (signing keys + session store with its rate limit, ``--store``) and the service's own
  tables behind ``--db`` (a SQLite file or PostgreSQL, :mod:`.db`): reference templates and
  photos, recoveries, and the append-only audit log.
* :func:`create_app` wraps it in a FastAPI application and serves the capture page.

What the person sees never contains the raw score: a decision, a headline and the reasons'
sentences. The score, similarity and model hashes go to the operator log and the audit log.

Defences against the attacks of issue 12 (operator key, body limits, limits per client
address, private files, the served connection limits) live in :mod:`.security`; the keyed
audit chain in :mod:`liveness.audit`; decoding limits in :mod:`liveness.video`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from liveness import InputError, Reference, Verifier
from liveness.audit import AuditLog, is_postgres_url, load_audit_key, sqlite_path
from liveness.fingerprint import FingerprintIndex
from liveness.hints import capture_hints
from liveness.reasons import ReasonCode
from liveness.sessions import (
    ENV_KEY,
    ChallengeGate,
    Keyring,
    RateLimit,
    RateLimitedError,
    SessionAlreadyUsedError,
    SessionError,
    StepTiming,
    StoreUnavailable,
    TokenInvalidError,
    new_attempt,
    release_verification,
    verify_token,
)
from liveness.stores import store_from_url
from liveness.video import load_image

from . import timed
from .client_limits import SharedClientLimiter
from .db import retry_unavailable, service_db
from .purge import PurgeSchedule
from .security import (
    ClientLimits,
    OperatorAuth,
    private_dir,
    private_file,
    write_private,
)
from .sweep import StaleSweep

log = logging.getLogger("recovery_service")

STATIC_DIR = Path(__file__).resolve().parent / "static"
ACCOUNT_RE = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
# A recovery id is the challenge session id: 16 random bytes, base64url.
RECOVERY_ID_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
VIDEO_SUFFIXES = {
    "video/webm": ".webm",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/x-matroska": ".mkv",
}

HEADLINES = {
    "accept": "We confirmed it is you. You can now continue to reset your account.",
    "review": "We could not decide automatically. A member of staff will look at your "
    "recording and contact you.",
    "reject": "We could not confirm it is you this time.",
}


@dataclass
class ServiceConfig:
    """Everything the service can be told at start."""

    # The service's own tables and audit chain: a SQLite file (PATH or sqlite:///PATH) or
    # postgresql://... shared by several instances (examples/recovery_service/db.py).
    db: Path | str
    model_dir: Path | None = None
    key_file: Path | None = None
    # Keep each uploaded clip and the full result here (else uploads are deleted at once).
    keep_evidence: Path | None = None
    max_upload_bytes: int = 50 * 1024 * 1024
    max_photo_bytes: int = 10 * 1024 * 1024
    # Failed attempts per account: 5 in 3 minutes block new ones for 5 minutes.
    rate_limit: RateLimit = field(default_factory=RateLimit)
    actions: int = 3
    ttl: int = 120
    # Verifications running at once (each uses the CPU cores it can get).
    workers: int = 2
    # Session store URL (liveness.stores.store_from_url); None: the `db` SQLite file.
    store: str | None = None
    # Seconds between purges of expired sessions, old failures and old video digests.
    purge_every: float = 600.0
    # Operator endpoints need Authorization: Bearer <key>; the key comes from this file,
    # else LIVENESS_OPERATOR_KEY. Without one the service does not start, unless this demo
    # switch is on.
    operator_key_file: Path | None = None
    insecure_no_operator_auth: bool = False
    # The audit chain's HMAC key (separate from the token key): this file, else
    # LIVENESS_AUDIT_KEY, else <db>.audit-key (created 0600). Head exported to <db>.audit-head.
    audit_key_file: Path | None = None
    # Kept evidence is deleted after this many seconds (default 30 days).
    evidence_retention_s: float = 30 * 24 * 3600.0
    # A replaced reference cannot be used for recovery for this long (default 24 h): the
    # account's owner has a day to notice a takeover by a changed photo.
    reference_cooldown_s: float = 24 * 3600.0
    # Uploads are spooled here (0700; default: <db folder>/spool).
    spool_dir: Path | None = None
    # Bodies of requests that are not uploads (JSON) are refused above this.
    max_json_bytes: int = 16 * 1024
    # One camera preview frame sent for capture hints (static/hints.js sends a small JPEG).
    max_hint_bytes: int = 1024 * 1024
    client_limits: ClientLimits = field(default_factory=ClientLimits)
    # Seconds to wait for SQLite's write lock before answering 503 with Retry-After.
    db_busy_timeout: float = 10.0
    # Several instances on one database (issue 13): this instance's name (default: host
    # name), recorded on the attempts it claims so that its restart fails only its own
    # interrupted ones; attempts left `processing` longer than `stale_processing_s` (an
    # instance that never came back) are failed by whichever instance starts next, and by
    # every instance's sweep each `purge_every` seconds (sweep.py).
    instance: str | None = None
    stale_processing_s: float = 3600.0
    # Local files (spool, audit head checkpoint; the session store without `store`) when `db`
    # is a server URL.
    state_dir: Path | None = None
    # How long the outcome of a verification that ran is retried while the database is
    # briefly unavailable (a restart), before the attempt is left to the interrupted rule.
    outcome_retry_s: float = 30.0
    # Upload challenges are timed (v2 tokens): each step in its window after the recording
    # starts (timed.py); None issues untimed (v1) tokens, any time in the clip counts.
    step_timing: StepTiming | None = field(default_factory=StepTiming)


class ServiceError(Exception):
    """A refusal with an HTTP status, a stable code and a sentence for the person."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict | None = None, **extra
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict:
        return {"error": self.code, "message": self.message, **self.extra}


@dataclass
class Outcome:
    """An answer to an upload: HTTP status and the JSON the person sees."""

    status: int
    body: dict
    headers: dict = field(default_factory=dict)


def load_keyring(key_file: Path | None) -> Keyring:
    """--key-file, else LIVENESS_SECRET_KEY, else (example only) a random key for this run."""
    if key_file is not None:
        return Keyring.from_file(key_file)
    if os.environ.get(ENV_KEY):
        return Keyring.from_env()
    log.warning(
        "no signing key set (%s or --key-file): generated a random key for this run; "
        "recoveries started now stop working when the service restarts",
        ENV_KEY,
    )
    return Keyring.single(secrets.token_bytes(32), "random")


class RecoveryService:
    """The recovery flow on top of the liveness library (no HTTP in here)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        verifier: Verifier | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.config = config
        self.instance = config.instance or socket.gethostname()
        url = os.fspath(config.db)
        shared = is_postgres_url(url)
        # db_path: the SQLite file, or (server URL) the local file for the session store and
        # its fingerprints when no --store is given.
        local = Path(config.state_dir or "recovery-state") if shared else None
        self.db_path = str(local / "local.sqlite3") if local else sqlite_path(url)
        Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        # Every file the service creates is 0600 (reference photos are biometric data).
        old_umask = os.umask(0o077)
        try:
            # A store URL (PostgreSQL, Redis) or, by default, the service's SQLite file.
            options = {} if config.store else {"busy_timeout": config.db_busy_timeout}
            self.store = store_from_url(
                config.store or self.db_path, limits=config.rate_limit, **options
            )
            # Limits per client address, in a store beside the session store: shared by
            # every instance on it (client_limits.py).
            self.limiter = SharedClientLimiter.beside(self.store, config.client_limits)
            self.db = service_db(url, busy_timeout=config.db_busy_timeout)
            self.auditlog = AuditLog(
                url,
                # Instances sharing a database share the audit key: given, never created.
                load_audit_key(config.audit_key_file, create_beside=None if shared else url),
                head_file=f"{self.db_path}.audit-head",
                busy_timeout=config.db_busy_timeout,
                head_may_lag=shared,
            )
            # Reuse is judged on the decoded frames too (a re-encoded or byte-changed copy),
            # in the session store: instances sharing it share the recordings seen.
            fingerprints = FingerprintIndex(store=self.store)
            self.auditlog.init()
            self.db.init()
        finally:
            os.umask(old_umask)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                private_file(self.db_path + suffix)
        self.gate = ChallengeGate(
            keyring or load_keyring(config.key_file), self.store, fingerprints
        )
        self.spool = private_dir(config.spool_dir or Path(self.db_path).parent / "spool")
        self._clean_spool()
        self.recover_interrupted()
        # Every --purge-every seconds: the stores' purges and the sweep of attempts left
        # `processing` by an instance that never came back (sweep.py).
        self.sweep = StaleSweep(
            self.db, self.audit, config.stale_processing_s, audit_retry_s=config.outcome_retry_s
        )
        self.purger = PurgeSchedule(
            self.store, config.purge_every, also=(self.limiter.purge, self.sweep.run)
        ).start()
        if config.keep_evidence is not None:
            private_dir(config.keep_evidence)
            self.purge_evidence()
        self._own_verifier = verifier is None
        t = time.perf_counter()
        self.verifier = verifier or Verifier(config.model_dir, challenges=self.gate)
        if self.verifier.challenges is None:
            self.verifier.challenges = self.gate
        log.info("models loaded in %.1f s", time.perf_counter() - t)
        self._slots = threading.BoundedSemaphore(max(1, config.workers))

    def close(self) -> None:
        self.purger.stop()
        self.store.close()
        self.limiter.close()
        self.db.close()
        self.auditlog.close()
        if self._own_verifier:
            self.verifier.close()

    # -- storage ------------------------------------------------------------------------

    def audit(
        self, event: str, *, account=None, recovery_id=None, actor=None, client=None, **data
    ) -> None:
        """Append one entry to the keyed audit chain (never images or embeddings)."""
        self.auditlog.append(
            event, actor=actor, client=client, account=account, recovery_id=recovery_id, **data
        )

    def audit_entries(self) -> list[dict]:
        return self.auditlog.entries()

    def audit_chain_ok(self) -> bool:
        """Whether every audit row's MAC holds and the chain ends at the exported head."""
        return self.auditlog.verify().ok

    # -- crash recovery, spool and evidence ---------------------------------------------------

    def recover_interrupted(self) -> int:
        """Mark attempts left ``processing`` by a crash as ``failed`` and audit them. They do
        not count against the account: the person just starts a new attempt."""
        body = {
            "error": "INTERRUPTED",
            "message": "The check of your recording was interrupted on our side. Start a new "
            "recovery attempt; this one does not count against you.",
        }
        now = time.time()
        rows = self.db.fail_interrupted(
            self.instance, json.dumps(body), now, now - self.config.stale_processing_s
        )
        for rid, account in rows:
            self.audit("recovery_interrupted", account=account, recovery_id=rid, actor="system")
        return len(rows)

    def _clean_spool(self) -> None:
        """Uploads left in the spool by a crash are deleted at start."""
        for p in self.spool.iterdir():
            with contextlib.suppress(OSError):
                p.unlink()

    def spool_file(self, suffix: str) -> tuple[int, str]:
        """A new 0600 file in the private spool folder."""
        return tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=self.spool)

    def purge_evidence(self, now: float | None = None) -> int:
        """Delete kept evidence older than ``evidence_retention_s``; returns files deleted."""
        if self.config.keep_evidence is None:
            return 0
        now = time.time() if now is None else now
        cutoff = now - self.config.evidence_retention_s
        removed = []
        for p in Path(self.config.keep_evidence).iterdir():
            with contextlib.suppress(OSError):
                if p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed.append(p.name)
        if removed:
            self.audit("evidence_purged", actor="system", files=sorted(removed)[:100])
        return len(removed)

    # -- reference photos -----------------------------------------------------------------

    def enroll(
        self, account: str, photo: bytes, photo_type: str, *, actor=None, client=None
    ) -> dict:
        """Make and store the account's reference; :class:`ServiceError` 422 if unusable.

        Replacing a reference keeps the old one in ``reference_history``, audits who
        replaced it, and closes video recovery for ``reference_cooldown_s``."""
        _check_account(account)
        if not photo:
            raise ServiceError(422, "PHOTO_MISSING", "Send the reference photo as 'photo'.")
        try:
            ref = self.verifier.enroll(photo)
        except InputError as exc:
            raise ServiceError(
                422, "PHOTO_UNREADABLE", "The photo could not be read. Send a JPEG or PNG file."
            ) from exc
        if not ref.usable:
            self.audit(
                "reference_refused",
                account=account,
                actor=actor,
                client=client,
                problems=ref.problems,
            )
            raise ServiceError(
                422,
                ReasonCode.REFERENCE_UNUSABLE.value,
                "This photo cannot be used as a reference: "
                + ", ".join(ref.problems)
                + ". Use a sharp, well-lit photo of one person facing the camera.",
                problems=list(ref.problems),
            )
        old, usable_from = self.db.put_reference(
            account,
            json.dumps(ref.to_dict()),
            photo,
            photo_type,
            now=time.time(),
            cooldown=self.config.reference_cooldown_s,
            actor=actor,
        )
        self.audit(
            "reference_replaced" if old is not None else "reference_enrolled",
            account=account,
            actor=actor,
            client=client,
            model=ref.model,
            model_sha256=ref.model_sha256,
            photo_sha256=hashlib.sha256(photo).hexdigest(),
            previous_photo_sha256=hashlib.sha256(old).hexdigest() if old else None,
            usable_from=int(usable_from),
        )
        out = {"account": account, "usable": True, "model": ref.model}
        if old is not None:
            out["replaced"] = True
            out["usable_from"] = int(usable_from)
        return out

    def reference(self, account: str) -> Reference | None:
        template = self.db.reference_template(account)
        return Reference.from_dict(json.loads(template)) if template else None

    def reference_photo(self, account: str) -> tuple[bytes, str] | None:
        """The stored photo and its media type, for the operator."""
        return self.db.reference_photo(account)

    # -- recoveries -------------------------------------------------------------------------

    def start(self, account: str, *, client=None) -> dict:
        """Issue a challenge session for ``account``."""
        _check_account(account)
        now = time.time()
        try:
            self.store.check_rate_limit(account, now)
        except RateLimitedError as exc:
            self.audit("start_refused", account=account, client=client, reason_codes=[exc.code])
            raise _rate_limited(exc) from None
        usable_from = self.db.usable_from(account)
        if usable_from is None:
            raise ServiceError(
                404,
                "NO_REFERENCE",
                "There is no reference photo for this account, so it cannot be recovered "
                "with a video. Contact support.",
            )
        if usable_from > now:
            hours = max(1, int((usable_from - now) / 3600 + 0.999))
            self.audit(
                "start_refused", account=account, client=client, reason_codes=["REFERENCE_NEW"]
            )
            raise ServiceError(
                409,
                "REFERENCE_NEW",
                "The reference photo of this account was changed recently. For your safety, "
                f"video recovery opens again in about {hours} hour(s). Contact support if you "
                "did not ask for this change.",
                headers={"Retry-After": str(int(usable_from - now) + 1)},
            )
        timing = self.config.step_timing
        issued = self.gate.issue(
            account=account, actions=self.config.actions, ttl=self.config.ttl, timed=timing or False
        )
        self.db.add_recovery(
            issued.session_id,
            account,
            json.dumps(issued.actions),
            now,
            issued.expires_at,
            hashlib.sha256(issued.token.encode()).hexdigest(),
            client,
        )
        self.audit(
            "recovery_started",
            account=account,
            recovery_id=issued.session_id,
            client=client,
            actor="person",
            actions=issued.actions,
        )
        steps = [s[0].lower() + s[1:] for s in issued.instructions]
        text = "While recording, " + ", then ".join(steps) + "."
        return {
            "recovery_id": issued.session_id,
            "token": issued.token,
            "actions": issued.actions,
            "instructions": issued.instructions,
            "instruction_text": text,
            "issued_at": issued.issued_at,
            "expires_at": issued.expires_at,
            "expires_in": issued.expires_at - int(now),
            "upload_url": f"/recoveries/{issued.session_id}/video",
            "max_upload_bytes": self.config.max_upload_bytes,
        } | ({"schedule": timed.schedule(timing, len(issued.actions))} if timing else {})

    def _recovery(self, recovery_id: str) -> tuple:
        if not RECOVERY_ID_RE.fullmatch(recovery_id):
            raise ServiceError(404, "RECOVERY_NOT_FOUND", "There is no such recovery attempt.")
        row = self.db.recovery(recovery_id)
        if row is None:
            raise ServiceError(404, "RECOVERY_NOT_FOUND", "There is no such recovery attempt.")
        return row

    def can_read(self, recovery_id: str, authorization: str | None) -> bool:
        """Whether ``Authorization: Bearer <token>`` carries the token that created the
        recovery (compared as SHA-256 digests, in constant time)."""
        if not RECOVERY_ID_RE.fullmatch(recovery_id) or not authorization:
            return False
        digest = self.db.token_sha256(recovery_id)
        if not digest or not authorization.startswith("Bearer "):
            return False
        sent = hashlib.sha256(authorization[7:].strip().encode("utf-8", "replace")).hexdigest()
        return secrets.compare_digest(sent, digest)

    def status(self, recovery_id: str) -> dict:
        _account, actions, expires_at, status, outcome = self._recovery(recovery_id)
        if status == "waiting" and time.time() >= expires_at:
            status = "expired"
        out = {
            "recovery_id": recovery_id,
            "status": status,
            "actions": json.loads(actions),
            "expires_at": int(expires_at),
        }
        if outcome:
            out.update(json.loads(outcome))
        return out

    def precheck_upload(self, recovery_id: str, *, client=None) -> None:
        """Cheap refusals before the upload is read: unknown, blocked or already used."""
        account, _a, _e, status, _o = self._recovery(recovery_id)
        now = time.time()
        try:
            self.store.check_rate_limit(account, now)
        except RateLimitedError as exc:
            self.audit(
                "upload_refused", account=account, recovery_id=recovery_id, reason_codes=[exc.code]
            )
            raise _Refused(_refusal(recovery_id, exc, 429, _retry_after(exc))) from None
        if status != "waiting":
            raise _Refused(self._already_used(recovery_id, account, now, client))

    def _already_used(self, recovery_id: str, account: str, now: float, client=None) -> Outcome:
        exc = SessionAlreadyUsedError()
        # A second upload for one session never reaches the analysis: it counts against
        # the client that sent it, not against the account's owner (issue 12).
        self._junk(client)
        self.audit(
            "upload_refused",
            account=account,
            recovery_id=recovery_id,
            client=client,
            reason_codes=[exc.code],
        )
        return _refusal(recovery_id, exc, 409)

    def release_session(self, session_id: str, attempt: str) -> None:
        """After a store failure: the session, if ``attempt`` consumed it, may be consumed
        once more by the same upload or live check (liveness.sessions.release_verification),
        retried for up to ``outcome_retry_s`` as an outcome is; nothing if the store stays
        away (the retry is then refused SESSION_ALREADY_USED, as before)."""
        with contextlib.suppress(StoreUnavailable):
            retry_unavailable(
                lambda: release_verification(self.store, session_id, attempt),
                self.config.outcome_retry_s,
            )

    def _junk(self, client) -> None:
        if client is not None and self.limiter.record_junk(client):
            log.warning("client %s blocked after repeated junk uploads", client)

    def submit(
        self,
        recovery_id: str,
        token: str,
        video: Path,
        mirrored: bool,
        *,
        client=None,
        started=None,
    ) -> Outcome:
        """Verify an uploaded clip (a file that this call deletes, or keeps as evidence).
        ``started``: the page's ``recording_started`` field, audited only (timed.py)."""
        try:
            return self._submit(recovery_id, token, video, mirrored, client, started)
        finally:
            with contextlib.suppress(FileNotFoundError):
                video.unlink()

    def _submit(
        self, recovery_id: str, token: str, video: Path, mirrored: bool, client=None, started=None
    ) -> Outcome:
        try:
            self.precheck_upload(recovery_id, client=client)
        except _Refused as r:
            return r.outcome
        account = self._recovery(recovery_id)[0]
        now = time.time()
        try:
            claims = verify_token(self.gate.keyring, token, now=now)
            if claims.session_id != recovery_id or claims.account != account:
                raise TokenInvalidError(detail="token is for another recovery")
        except SessionError as exc:
            log.info("recovery %s: token refused (%s: %s)", recovery_id, exc.code, exc.detail)
            self._junk(client)
            self.audit(
                "upload_refused",
                account=account,
                recovery_id=recovery_id,
                client=client,
                reason_codes=[exc.code],
            )
            return _refusal(recovery_id, exc, 410 if exc.code == "SESSION_EXPIRED" else 403)
        # One upload per recovery, even when two race (on one instance or several).
        if not self.db.claim(recovery_id, self.instance):
            return self._already_used(recovery_id, account, now, client)
        attempt = new_attempt()  # to release the session if a store fails mid-way
        try:
            reference = self.reference(account)
            with self._slots:
                result = self.verifier.verify(
                    video,
                    reference,
                    challenge=token,
                    mirrored=mirrored,
                    account=account,
                    attempt=attempt,
                )
        except StoreUnavailable:
            # The database went away before an outcome: the attempt goes back to `waiting`
            # and the person's retry (after Retry-After) finishes it. The session, if this
            # attempt consumed it, is released, so that the retry of the same upload resumes
            # it (liveness.sessions.begin_verification, "Resuming"); another upload is
            # refused as SESSION_ALREADY_USED, with that outcome recorded. One outcome per
            # recovery (db.py, README "Several instances").
            self.release_session(claims.session_id, attempt)
            retry_unavailable(
                lambda: self.db.release(recovery_id, self.instance), self.config.outcome_retry_s
            )
            raise
        except InputError as exc:
            # Junk that never reached the analysis: against the client, not the owner.
            self._junk(client)
            body = {
                "recovery_id": recovery_id,
                "error": "VIDEO_UNREADABLE",
                "message": "We could not use the recording. Record a new video and try again.",
            }
            self._finish(recovery_id, "failed", body)
            log.info("recovery %s: unreadable upload (%s)", recovery_id, exc)
            self.audit(
                "upload_unreadable",
                account=account,
                recovery_id=recovery_id,
                client=client,
                error=type(exc).__name__,
            )
            return Outcome(422, body)
        except Exception:
            msg = "Something went wrong on our side. Start a new recovery attempt later."
            retry_unavailable(
                lambda: self._finish(recovery_id, "failed", {"error": "INTERNAL", "message": msg}),
                self.config.outcome_retry_s,
            )
            raise
        body = public_result(recovery_id, result)
        # The verification ran and the token is spent: its outcome is recorded even across
        # a database restart of up to outcome_retry_s (db.retry_unavailable).
        retry_unavailable(
            lambda: self._finish(recovery_id, "done", body), self.config.outcome_retry_s
        )
        models = {name: m.sha256 for name, m in result.models.items()}
        log.info(
            "recovery %s account=%s decision=%s score=%.3f similarity=%s reasons=%s",
            recovery_id,
            account,
            result.decision,
            result.score,
            _fmt(result.match.similarity),
            ",".join(result.reason_codes) or "-",
        )
        evidence = None
        if self.config.keep_evidence is not None:
            evidence = self._keep(recovery_id, video, result)
        retry_unavailable(
            lambda: self.audit(
                "decision",
                account=account,
                recovery_id=recovery_id,
                actor="person",
                client=client,
                decision=result.decision,
                score=round(float(result.score), 4),
                reason_codes=result.reason_codes,
                actions=list(claims.actions),
                mirrored=mirrored,
                models=models,
                video_sha256=result.video.get("sha256"),
                evidence=evidence,
                windows=None if claims.windows is None else [list(w) for w in claims.windows],
                recording_started_after_issue_s=timed.recording_started(started, claims.issued_at),
            ),
            self.config.outcome_retry_s,
        )
        return Outcome(200, body)

    def _finish(self, recovery_id: str, status: str, body: dict) -> None:
        self.db.finish(recovery_id, status, json.dumps(body), time.time())

    def _keep(self, recovery_id: str, video: Path, result) -> str:
        """Keep the clip and the full result (0600, in a 0700 folder) until purged."""
        folder = private_dir(self.config.keep_evidence)
        kept = folder / f"{recovery_id}{video.suffix}"
        fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, open(video, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        write_private(folder / f"{recovery_id}.json", result.to_json(indent=1).encode())
        self.purge_evidence()
        return kept.name


class _Refused(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


def public_result(recovery_id: str, result) -> dict:
    """What the person sees: decision, headline and the reasons' sentences (no score)."""
    return {
        "recovery_id": recovery_id,
        "decision": result.decision,
        "accepted": result.decision == "accept",
        "headline": HEADLINES[result.decision],
        "reasons": [
            {"code": r.code.value, "message": r.message, "severity": r.severity}
            for r in result.reasons
        ],
    }


def _refusal(recovery_id: str, exc: SessionError, status: int, headers=None) -> Outcome:
    body = {
        "recovery_id": recovery_id,
        "decision": "reject",
        "accepted": False,
        "headline": HEADLINES["reject"],
        "reasons": [{"code": exc.code, "message": exc.message, "severity": "reject"}],
    }
    return Outcome(status, body, headers or {})


def _retry_after(exc: RateLimitedError) -> dict:
    return {"Retry-After": str(max(1, int((exc.retry_after or 60) + 0.999)))}


def _rate_limited(exc: RateLimitedError) -> ServiceError:
    return ServiceError(429, exc.code, exc.message, headers=_retry_after(exc))


def _check_account(account: str) -> None:
    if not ACCOUNT_RE.fullmatch(account or ""):
        raise ServiceError(
            422,
            "ACCOUNT_INVALID",
            "Enter the account name: 1 to 128 letters, digits or . _ @ + -",
        )


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


# ----------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


async def _read_form(request: Request, limit: int):
    """The multipart form, refusing bodies over ``limit`` bytes while they stream in
    (file parts are spooled to disk by the parser, never held whole in memory)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge
        return message

    return await Request(request.scope, receive).form(max_files=1, max_fields=8)


def _too_large(limit: int) -> JSONResponse:
    mb = limit / (1024 * 1024)
    size = f"{mb:.0f} MB" if mb >= 1 else f"{limit // 1024} KB"
    return JSONResponse(
        {
            "error": "UPLOAD_TOO_LARGE",
            "message": f"The request is larger than {size}. Record a shorter video.",
        },
        status_code=413,
    )


def body_limit(config: ServiceConfig, method: str, path: str) -> int:
    """The largest body a request may send: the upload limits on the two upload routes
    (plus 64 KB for the form's other fields), ``max_hint_bytes`` for a preview frame sent
    for capture hints, ``max_json_bytes`` everywhere else."""
    if method == "POST" and path.startswith("/recoveries/") and path.endswith("/video"):
        return config.max_upload_bytes + 64 * 1024
    if method == "PUT" and path.startswith("/accounts/") and path.endswith("/reference"):
        return config.max_photo_bytes + 64 * 1024
    if method == "POST" and path == "/capture-hints":
        return config.max_hint_bytes
    return config.max_json_bytes


class BodyLimitMiddleware:
    """Refuses bodies over :func:`body_limit` with 413: by ``Content-Length`` before any
    byte is read, and by counting while they stream in (issue 12: a 400 MB JSON body was
    answered 200 after costing 1.17 GB)."""

    def __init__(self, app, config: ServiceConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(self.config, scope["method"], scope["path"])
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    return await _too_large(limit)(scope, receive, send)
        received = 0
        started = False
        refused = False

        async def limited_receive():
            nonlocal received, refused, started
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now: the app may turn the exception into a 400 of its own,
                    # which tracking_send then drops.
                    refused = True
                    if not started:
                        started = True
                        await _too_large(limit)(scope, receive, send)
                    raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(limit)(scope, receive, send)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def operator_auth(
    config: ServiceConfig, operator_key: bytes | str | None = None
) -> OperatorAuth | None:
    """The operator key: ``operator_key``, else ``--operator-key-file``, else
    ``$LIVENESS_OPERATOR_KEY``. None only with ``insecure_no_operator_auth``; otherwise a
    missing key is a :class:`~liveness.sessions.KeyConfigError` and the service does not
    start."""
    if operator_key is not None:
        key = operator_key.encode() if isinstance(operator_key, str) else operator_key
        return OperatorAuth(key)
    if config.operator_key_file is not None or os.environ.get("LIVENESS_OPERATOR_KEY"):
        return OperatorAuth.load(config.operator_key_file)
    if config.insecure_no_operator_auth:
        log.warning(
            "--insecure-no-operator-auth: anyone who can reach this service can replace "
            "reference photos. For a demo on your own machine only."
        )
        return None
    return OperatorAuth.load(None)  # raises with the sentence saying what to set


def create_app(
    config: ServiceConfig,
    *,
    verifier: Verifier | None = None,
    keyring: Keyring | None = None,
    operator_key: bytes | str | None = None,
) -> FastAPI:
    """The FastAPI application. The service (and the models) start once, at startup.

    Operator endpoints (replacing a reference photo) need ``Authorization: Bearer <key>``
    (:func:`operator_auth`); the app is not created without a key unless
    ``config.insecure_no_operator_auth``."""
    operator = operator_auth(config, operator_key)
    # The signing key is checked now, so that a weak or missing one stops the start with
    # one sentence rather than a traceback from the startup hook.
    keyring = keyring or load_keyring(config.key_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = await run_in_threadpool(
            RecoveryService, config, verifier=verifier, keyring=keyring
        )
        app.state.service = service
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="Account recovery (liveness example)", lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimitMiddleware, config=config)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable):
        log.warning("store unavailable: %s", exc.detail)
        return JSONResponse(
            {"error": exc.code, "message": exc.message},
            status_code=503,
            headers={"Retry-After": str(max(1, int(exc.retry_after)))},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # Never echo the body back (issue 12: a 100 MB text body came back in the 422).
        return JSONResponse(
            {"error": "REQUEST_INVALID", "message": "Send a JSON object as the request body."},
            status_code=422,
        )

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path == "/":
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; media-src 'self' blob: mediastream:; img-src 'self' data:; "
                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
            )
            response.headers["Permissions-Policy"] = "camera=(self), microphone=()"
        return response

    def svc(request: Request) -> RecoveryService:
        return request.app.state.service

    def limit(request: Request, kind: str) -> None:
        wait = svc(request).limiter.allow(kind, _client(request))
        if wait is not None:
            raise ServiceError(
                429,
                "RATE_LIMITED",
                "Too many requests from your connection. Wait a few minutes and try again.",
                headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            )

    def require_operator(request: Request) -> str:
        """The operator's actor name, or 401 (429 after repeated wrong keys)."""
        if operator is None:
            return "operator:unauthenticated-demo"
        if operator.check(request.headers.get("authorization")):
            return operator.actor
        limit(request, "auth")
        raise ServiceError(
            401,
            "OPERATOR_AUTH_REQUIRED",
            "This needs an operator key: send it as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.put("/accounts/{account}/reference")
    async def put_reference(account: str, request: Request):
        """Enrol or replace the account's reference photo (multipart field ``photo``);
        operator only."""
        actor = await run_in_threadpool(require_operator, request)
        _check_account(account)
        await run_in_threadpool(limit, request, "enrol")
        try:
            form = await _read_form(request, config.max_photo_bytes)
        except _TooLarge:
            return _too_large(config.max_photo_bytes)
        try:
            photo = form.get("photo")
            if photo is None or isinstance(photo, str):
                raise ServiceError(422, "PHOTO_MISSING", "Send the reference photo as 'photo'.")
            data = await photo.read(config.max_photo_bytes + 1)
            kind = photo.content_type or "application/octet-stream"
        finally:
            await form.close()
        if len(data) > config.max_photo_bytes:
            return _too_large(config.max_photo_bytes)
        return await run_in_threadpool(
            svc(request).enroll, account, data, kind, actor=actor, client=_client(request)
        )

    @app.post("/capture-hints")
    async def post_capture_hints(request: Request):
        """Hints for one camera preview frame (JPEG or PNG body, not kept): see
        :func:`liveness.hints.capture_hints` (the verifier's own quality thresholds)."""
        await run_in_threadpool(limit, request, "hint")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > config.max_hint_bytes:
                return _too_large(config.max_hint_bytes)
        verifier = svc(request).verifier
        try:
            image = load_image(bytes(data))
        except InputError as exc:
            raise ServiceError(422, "PHOTO_UNREADABLE", "Send one JPEG or PNG frame.") from exc
        hints = await run_in_threadpool(
            capture_hints, image, verifier.detector, verifier.config.quality
        )
        return {"hints": [h.to_dict() for h in hints]}

    @app.post("/recoveries")
    def post_recovery(body: dict, request: Request):
        """Start a recovery: ``{"account": ...}`` -> a challenge session."""
        limit(request, "start")
        account = body.get("account") if isinstance(body, dict) else None
        return svc(request).start(
            account if isinstance(account, str) else "", client=_client(request)
        )

    @app.get("/recoveries/{recovery_id}")
    def get_recovery(recovery_id: str, request: Request):
        """The attempt's status: only with ``Authorization: Bearer <its token>`` (or the
        operator key)."""
        auth = request.headers.get("authorization")
        service = svc(request)
        if not (
            service.can_read(recovery_id, auth) or (operator is not None and operator.check(auth))
        ):
            limit(request, "auth")
            raise ServiceError(404, "RECOVERY_NOT_FOUND", "There is no such recovery attempt.")
        return service.status(recovery_id)

    @app.post("/recoveries/{recovery_id}/video")
    async def post_video(recovery_id: str, request: Request):
        """The recorded clip (multipart: ``video``, ``token``, ``mirrored``) -> the result."""
        service = svc(request)
        client = _client(request)
        await run_in_threadpool(limit, request, "upload")
        try:
            await run_in_threadpool(service.precheck_upload, recovery_id, client=client)
        except _Refused as r:
            return JSONResponse(r.outcome.body, r.outcome.status, headers=r.outcome.headers)
        try:
            form = await _read_form(request, config.max_upload_bytes)
        except _TooLarge:
            return _too_large(config.max_upload_bytes)
        try:
            upload = form.get("video")
            token = form.get("token")
            if upload is None or isinstance(upload, str) or not isinstance(token, str):
                raise ServiceError(
                    422, "UPLOAD_INVALID", "Send the recording as 'video' and the token."
                )
            mirrored = str(form.get("mirrored", "false")).lower() in ("1", "true", "yes")
            started = form.get("recording_started")
            base_type = (upload.content_type or "").split(";")[0].strip().lower()
            suffix = VIDEO_SUFFIXES.get(base_type, ".video")
            fd, name = service.spool_file(suffix)
            with os.fdopen(fd, "wb") as out:
                await run_in_threadpool(shutil.copyfileobj, upload.file, out, 1 << 20)
        finally:
            await form.close()
        outcome = await run_in_threadpool(
            service.submit, recovery_id, token, Path(name), mirrored, client=client, started=started
        )
        return JSONResponse(outcome.body, outcome.status, headers=outcome.headers)

    from .live import register_live  # the live check over a WebSocket (live.py)

    register_live(app)
    return app
