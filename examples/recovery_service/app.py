"""Account-recovery service: reference photos, challenge sessions, video uploads, decisions.

The parts, and where each lives:

* :class:`RecoveryService` does the work and knows nothing about HTTP: it holds the one
  :class:`liveness.Verifier` (models loaded once), the :class:`~liveness.sessions.ChallengeGate`
  (signing keys + SQLite session store with its rate limit) and the service's own tables in
  the same SQLite file: reference templates and photos, recoveries, and the append-only
  audit log.
* :func:`create_app` wraps it in a FastAPI application and serves the capture page.

What the person sees never contains the raw score: a decision, a headline and the reasons'
sentences. The score, similarity and model hashes go to the operator log and the audit log.
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
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from liveness import InputError, Reference, Verifier
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
    SQLiteSessionStore,
    TokenInvalidError,
    verify_token,
)
from liveness.video import load_image

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reference_photos (
    account TEXT PRIMARY KEY,
    template TEXT NOT NULL,          -- Reference.to_dict() as JSON (embedding, model, quality)
    photo BLOB NOT NULL,             -- the uploaded photo, for the operator to look at
    photo_type TEXT NOT NULL,
    enrolled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS recoveries (
    id TEXT PRIMARY KEY,             -- the challenge session id
    account TEXT NOT NULL,
    actions TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL,            -- waiting, processing, done, failed
    outcome TEXT,                    -- what the person was shown (JSON)
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    account TEXT,
    recovery_id TEXT,
    entry TEXT NOT NULL,             -- JSON: decision, reason codes, model hashes, ...
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL               -- sha256(prev_hash + entry): a changed row breaks the chain
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"""


@dataclass
class ServiceConfig:
    """Everything the service can be told at start."""

    db: Path
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
        self.db_path = str(config.db)
        Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        self.store = SQLiteSessionStore(self.db_path, limits=config.rate_limit)
        self.gate = ChallengeGate(keyring or load_keyring(config.key_file), self.store)
        self._init_db()
        if config.keep_evidence is not None:
            Path(config.keep_evidence).mkdir(parents=True, exist_ok=True)
        self._own_verifier = verifier is None
        t = time.perf_counter()
        self.verifier = verifier or Verifier(config.model_dir, challenges=self.gate)
        if self.verifier.challenges is None:
            self.verifier.challenges = self.gate
        log.info("models loaded in %.1f s", time.perf_counter() - t)
        self._slots = threading.BoundedSemaphore(max(1, config.workers))

    def close(self) -> None:
        if self._own_verifier:
            self.verifier.close()

    # -- storage ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=10.0, isolation_level=None)
        try:
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn
        finally:
            conn.close()

    def _init_db(self) -> None:
        with self._db() as c:
            c.executescript(_SCHEMA)

    def audit(self, event: str, *, account=None, recovery_id=None, **data) -> None:
        """Append one entry to the audit log (never images or embeddings)."""
        now = time.time()
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "event": event,
            "account": account,
            "recovery_id": recovery_id,
            **data,
        }
        text = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        with self._db(write=True) as c:
            row = c.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
            prev = row[0] if row else "0" * 64
            digest = hashlib.sha256((prev + text).encode()).hexdigest()
            c.execute(
                "INSERT INTO audit_log (at, event, account, recovery_id, entry, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, event, account, recovery_id, text, prev, digest),
            )

    def audit_entries(self) -> list[dict]:
        with self._db() as c:
            rows = c.execute("SELECT entry FROM audit_log ORDER BY id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def audit_chain_ok(self) -> bool:
        """Whether every audit row still hashes to the next one's ``prev_hash``."""
        prev = "0" * 64
        with self._db() as c:
            for entry, p, h in c.execute(
                "SELECT entry, prev_hash, hash FROM audit_log ORDER BY id"
            ):
                if p != prev or hashlib.sha256((p + entry).encode()).hexdigest() != h:
                    return False
                prev = h
        return True

    # -- reference photos -----------------------------------------------------------------

    def enroll(self, account: str, photo: bytes, photo_type: str) -> dict:
        """Make and store the account's reference; :class:`ServiceError` 422 if unusable."""
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
            self.audit("reference_refused", account=account, problems=ref.problems)
            raise ServiceError(
                422,
                ReasonCode.REFERENCE_UNUSABLE.value,
                "This photo cannot be used as a reference: "
                + ", ".join(ref.problems)
                + ". Use a sharp, well-lit photo of one person facing the camera.",
                problems=list(ref.problems),
            )
        with self._db(write=True) as c:
            c.execute(
                "INSERT INTO reference_photos (account, template, photo, photo_type, enrolled_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET "
                "template = excluded.template, photo = excluded.photo, "
                "photo_type = excluded.photo_type, enrolled_at = excluded.enrolled_at",
                (account, json.dumps(ref.to_dict()), photo, photo_type, time.time()),
            )
        self.audit(
            "reference_enrolled",
            account=account,
            model=ref.model,
            model_sha256=ref.model_sha256,
            photo_sha256=hashlib.sha256(photo).hexdigest(),
        )
        return {"account": account, "usable": True, "model": ref.model}

    def reference(self, account: str) -> Reference | None:
        with self._db() as c:
            row = c.execute(
                "SELECT template FROM reference_photos WHERE account = ?", (account,)
            ).fetchone()
        return Reference.from_dict(json.loads(row[0])) if row else None

    def reference_photo(self, account: str) -> tuple[bytes, str] | None:
        """The stored photo and its media type, for the operator."""
        with self._db() as c:
            row = c.execute(
                "SELECT photo, photo_type FROM reference_photos WHERE account = ?", (account,)
            ).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    # -- recoveries -------------------------------------------------------------------------

    def start(self, account: str) -> dict:
        """Issue a challenge session for ``account``."""
        _check_account(account)
        now = time.time()
        try:
            self.store.check_rate_limit(account, now)
        except RateLimitedError as exc:
            self.audit("start_refused", account=account, reason_codes=[exc.code])
            raise _rate_limited(exc) from None
        if self.reference(account) is None:
            raise ServiceError(
                404,
                "NO_REFERENCE",
                "There is no reference photo for this account, so it cannot be recovered "
                "with a video. Contact support.",
            )
        issued = self.gate.issue(account=account, actions=self.config.actions, ttl=self.config.ttl)
        with self._db(write=True) as c:
            c.execute(
                "INSERT INTO recoveries (id, account, actions, created_at, expires_at, status) "
                "VALUES (?, ?, ?, ?, ?, 'waiting')",
                (issued.session_id, account, json.dumps(issued.actions), now, issued.expires_at),
            )
        self.audit(
            "recovery_started",
            account=account,
            recovery_id=issued.session_id,
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
        }

    def _recovery(self, recovery_id: str) -> tuple:
        if not RECOVERY_ID_RE.fullmatch(recovery_id):
            raise ServiceError(404, "RECOVERY_NOT_FOUND", "There is no such recovery attempt.")
        with self._db() as c:
            row = c.execute(
                "SELECT account, actions, expires_at, status, outcome FROM recoveries WHERE id = ?",
                (recovery_id,),
            ).fetchone()
        if row is None:
            raise ServiceError(404, "RECOVERY_NOT_FOUND", "There is no such recovery attempt.")
        return row

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

    def precheck_upload(self, recovery_id: str) -> None:
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
            raise _Refused(self._already_used(recovery_id, account, now))

    def _already_used(self, recovery_id: str, account: str, now: float) -> Outcome:
        exc = SessionAlreadyUsedError()
        # A second upload for one session is a replay: it counts against the account.
        self.store.record_failure(account, now)
        self.audit(
            "upload_refused", account=account, recovery_id=recovery_id, reason_codes=[exc.code]
        )
        return _refusal(recovery_id, exc, 409)

    def submit(self, recovery_id: str, token: str, video: Path, mirrored: bool) -> Outcome:
        """Verify an uploaded clip (a file that this call deletes, or keeps as evidence)."""
        try:
            return self._submit(recovery_id, token, video, mirrored)
        finally:
            with contextlib.suppress(FileNotFoundError):
                video.unlink()

    def _submit(self, recovery_id: str, token: str, video: Path, mirrored: bool) -> Outcome:
        try:
            self.precheck_upload(recovery_id)
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
            self.audit(
                "upload_refused", account=account, recovery_id=recovery_id, reason_codes=[exc.code]
            )
            return _refusal(recovery_id, exc, 410 if exc.code == "SESSION_EXPIRED" else 403)
        with self._db(write=True) as c:  # one upload per recovery, even when two race
            claimed = c.execute(
                "UPDATE recoveries SET status = 'processing' WHERE id = ? AND status = 'waiting'",
                (recovery_id,),
            ).rowcount
        if not claimed:
            return self._already_used(recovery_id, account, now)
        reference = self.reference(account)
        try:
            with self._slots:
                result = self.verifier.verify(video, reference, challenge=token, mirrored=mirrored)
        except InputError as exc:
            self.store.record_failure(account, time.time())
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
                error=type(exc).__name__,
            )
            return Outcome(422, body)
        except Exception:
            msg = "Something went wrong on our side. Start a new recovery attempt later."
            self._finish(recovery_id, "failed", {"error": "INTERNAL", "message": msg})
            raise
        body = public_result(recovery_id, result)
        self._finish(recovery_id, "done", body)
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
        self.audit(
            "decision",
            account=account,
            recovery_id=recovery_id,
            decision=result.decision,
            score=round(float(result.score), 4),
            reason_codes=result.reason_codes,
            actions=list(claims.actions),
            mirrored=mirrored,
            models=models,
            video_sha256=result.video.get("sha256"),
            evidence=evidence,
        )
        return Outcome(200, body)

    def _finish(self, recovery_id: str, status: str, body: dict) -> None:
        with self._db(write=True) as c:
            c.execute(
                "UPDATE recoveries SET status = ?, outcome = ?, finished_at = ? WHERE id = ?",
                (status, json.dumps(body), time.time(), recovery_id),
            )

    def _keep(self, recovery_id: str, video: Path, result) -> str:
        folder = Path(self.config.keep_evidence)
        kept = folder / f"{recovery_id}{video.suffix}"
        shutil.copyfile(video, kept)
        (folder / f"{recovery_id}.json").write_text(result.to_json(indent=1))
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
    return JSONResponse(
        {
            "error": "UPLOAD_TOO_LARGE",
            "message": f"The file is larger than {mb:.0f} MB. Record a shorter video.",
        },
        status_code=413,
    )


def create_app(
    config: ServiceConfig,
    *,
    verifier: Verifier | None = None,
    keyring: Keyring | None = None,
) -> FastAPI:
    """The FastAPI application. The service (and the models) start once, at startup."""

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

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

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

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.put("/accounts/{account}/reference")
    async def put_reference(account: str, request: Request):
        """Enrol the account's reference photo (multipart field ``photo``)."""
        _check_account(account)
        try:
            form = await _read_form(request, config.max_photo_bytes)
        except _TooLarge:
            return _too_large(config.max_photo_bytes)
        try:
            photo = form.get("photo")
            if photo is None or isinstance(photo, str):
                raise ServiceError(422, "PHOTO_MISSING", "Send the reference photo as 'photo'.")
            data = await photo.read()
            kind = photo.content_type or "application/octet-stream"
        finally:
            await form.close()
        return await run_in_threadpool(svc(request).enroll, account, data, kind)

    @app.post("/capture-hints")
    async def post_capture_hints(request: Request):
        """Hints for one camera preview frame (JPEG or PNG body, not kept): see
        :func:`liveness.hints.capture_hints` (the verifier's own quality thresholds)."""
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > config.max_photo_bytes:
                return _too_large(config.max_photo_bytes)
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
        account = body.get("account") if isinstance(body, dict) else None
        return svc(request).start(account if isinstance(account, str) else "")

    @app.get("/recoveries/{recovery_id}")
    def get_recovery(recovery_id: str, request: Request):
        return svc(request).status(recovery_id)

    @app.post("/recoveries/{recovery_id}/video")
    async def post_video(recovery_id: str, request: Request):
        """The recorded clip (multipart: ``video``, ``token``, ``mirrored``) -> the result."""
        service = svc(request)
        try:
            await run_in_threadpool(service.precheck_upload, recovery_id)
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
            base_type = (upload.content_type or "").split(";")[0].strip().lower()
            suffix = VIDEO_SUFFIXES.get(base_type, ".video")
            fd, name = tempfile.mkstemp(prefix="recovery-", suffix=suffix)
            with os.fdopen(fd, "wb") as out:
                await run_in_threadpool(shutil.copyfileobj, upload.file, out, 1 << 20)
        finally:
            await form.close()
        outcome = await run_in_threadpool(service.submit, recovery_id, token, Path(name), mirrored)
        return JSONResponse(outcome.body, outcome.status, headers=outcome.headers)

    return app
