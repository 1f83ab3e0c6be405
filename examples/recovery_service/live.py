"""The live check over a WebSocket: the page streams camera frames, the server paces it.

``register_live(app)`` adds, to the app made by :func:`~examples.recovery_service.app.create_app`:

* ``GET /live``: the streaming capture page (``static/live.html``);
* ``WS /recoveries/{recovery_id}/live``: one live session (:class:`liveness.stream.LiveSession`).

The protocol, in order:

1. client -> ``{"token": ..., "mirrored": false}`` (the token from ``POST /recoveries``; in a
   message, not in the URL, so it does not land in access logs). The server checks it as for
   an upload (signature, expiry, this recovery, rate limit), marks the recovery as used (one
   try per token, even when two connections race) and answers ``{"type": "ready"}``, or
   ``{"type": "result", ...}`` with the refusal and closes.
2. client -> binary messages, each one JPEG frame (about 10 per second, at most 2 MB each);
   server -> JSON messages as the session goes: ``light`` (fill the screen with ``rgb``, or
   stop when it is null), ``prompt`` (show ``instruction``), ``seen``, ``end``.
3. server -> ``{"type": "result", "decision", "headline", "reasons": [...]}`` (what the upload
   path shows), then closes. The audit log gets a ``decision`` entry with ``live: true``, the
   prompt schedule and the response times.

A client that sends nothing for ``IDLE_S`` seconds, or text where a frame should be, ends its
session (the recovery is then failed); so does one still streaming ``StreamConfig.max_duration_s
+ IDLE_S`` seconds after it started. Each WebSocket start counts as an upload against the
client's address (:mod:`examples.recovery_service.client_limits`, shared by instances); a
refused token or an already used recovery counts as junk against the client, not against the
account; a ``review`` outcome counts as a failure against the account, as on the upload path.
Messages larger than a frame may be are refused by the server itself (``ws_max_size`` in
:func:`~examples.recovery_service.security.uvicorn_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from liveness.sessions import (
    RateLimitedError,
    SessionError,
    StoreUnavailable,
    TokenInvalidError,
    new_attempt,
    verify_token,
)
from liveness.stream import LiveSession, StreamConfig, StreamInputError

from .app import HEADLINES, STATIC_DIR, RecoveryService, ServiceError, public_result

log = logging.getLogger("recovery_service.live")

IDLE_S = 5.0
FIRST_MESSAGE_S = 10.0


def register_live(app: FastAPI) -> None:
    """Add the live page and the WebSocket endpoint to ``app``."""

    @app.get("/live", include_in_schema=False)
    def live_page():
        return FileResponse(STATIC_DIR / "live.html", media_type="text/html")

    @app.websocket("/recoveries/{recovery_id}/live")
    async def live(ws: WebSocket, recovery_id: str):
        await ws.accept()
        service: RecoveryService = ws.app.state.service
        client = ws.client.host if ws.client else "unknown"
        try:
            wait = await run_in_threadpool(service.limiter.allow, "upload", client)
            if wait is not None:
                await ws.send_json(_rate_limited(wait))
                return
            await _run(ws, service, recovery_id, client)
        except WebSocketDisconnect:
            pass
        finally:
            with contextlib.suppress(Exception):
                await ws.close()


def _refusal(code: str, message: str) -> dict:
    return {
        "type": "result",
        "decision": "reject",
        "accepted": False,
        "headline": HEADLINES["reject"],
        "reasons": [{"code": code, "message": message, "severity": "reject"}],
    }


def _rate_limited(wait: float) -> dict:
    return _refusal(
        "RATE_LIMITED",
        "Too many requests from your connection. Wait a few minutes and try again.",
    ) | {"retry_after": max(1, int(wait + 0.999))}


def _used() -> dict:
    return _refusal(
        "SESSION_ALREADY_USED",
        "This recording session has already been used. Start a new recovery attempt.",
    )


def _claim(service: RecoveryService, recovery_id: str, token: str, client: str = "unknown"):
    """The checks of an upload, then the recovery marked as in progress (once)."""
    try:
        account, _actions, _exp, status, _out = service._recovery(recovery_id)
    except ServiceError as exc:
        return None, _refusal(exc.code, exc.message)
    now = time.time()
    attempt = new_attempt()  # to release the session if a store fails before the claim
    try:
        service.store.check_rate_limit(account, now)
        claims = verify_token(service.gate.keyring, token, now=now)
        if claims.session_id != recovery_id or claims.account != account:
            raise TokenInvalidError(detail="token is for another recovery")
        if status != "waiting":  # never reached the analysis: the client's junk (issue 12)
            service._junk(client)
            return None, _used()
        # Consumed by "the live check of this session" (no video digest exists yet), so
        # that when a store then fails before the claim below, release_session frees it
        # and the person's reconnect resumes it instead of being refused as
        # SESSION_ALREADY_USED. An upload (its own digest) is still refused.
        service.store.consume(claims.session_id, now, _live_key(claims.session_id), attempt)
        if not service.db.claim(recovery_id, service.instance):
            return None, _used()
    except (SessionError, RateLimitedError) as exc:
        if not isinstance(exc, RateLimitedError):
            service._junk(client)
        service.audit(
            "live_refused",
            account=account,
            recovery_id=recovery_id,
            client=client,
            reason_codes=[exc.code],
        )
        return None, _refusal(exc.code, exc.message)
    except StoreUnavailable:
        service.release_session(recovery_id, attempt)
        raise
    return (account, claims), None


def _live_key(session_id: str) -> str:
    """What consumes a session for the live check, in place of a video's digest."""
    return hashlib.sha256(b"live:" + session_id.encode()).hexdigest()


def _finish(service: RecoveryService, session: LiveSession):
    with service._slots:  # the full analysis: as many at once as uploads
        return session.finish()


async def _run(ws: WebSocket, service: RecoveryService, recovery_id: str, client: str) -> None:
    try:
        hello = json.loads(await asyncio.wait_for(ws.receive_text(), FIRST_MESSAGE_S))
        token = hello["token"]
        mirrored = bool(hello.get("mirrored", False))
        if not isinstance(token, str):
            raise TypeError
    except (asyncio.TimeoutError, ValueError, KeyError, TypeError):
        await ws.send_json(_refusal("TOKEN_INVALID", "Start the check from the official page."))
        return
    try:
        claimed, refusal = await run_in_threadpool(_claim, service, recovery_id, token, client)
    except StoreUnavailable as exc:  # as the upload path's 503: try again shortly
        log.warning("recovery %s: store unavailable: %s", recovery_id, exc.detail)
        await ws.send_json(
            _refusal(exc.code, exc.message) | {"retry_after": max(1, int(exc.retry_after))}
        )
        return
    if refusal is not None:
        await ws.send_json(refusal)
        return
    account, claims = claimed
    session = LiveSession(
        service.verifier,
        service.reference(account),
        config=StreamConfig(steps=service.config.actions),
        mirrored=mirrored,
    )
    try:
        await ws.send_json({"type": "ready", "steps": len(session.steps)})
        for m in session.start():
            await ws.send_json(m.to_dict())
        # A bounded session: past the stream's own limit (checked per frame), plus one idle
        # wait, the server stops waiting, however the client paces its messages.
        deadline = time.monotonic() + session.config.max_duration_s + IDLE_S
        while not session.done:
            left = deadline - time.monotonic()
            if left <= 0:
                log.info("recovery %s: session ran past its time limit", recovery_id)
                break
            try:
                msg = await asyncio.wait_for(ws.receive(), min(IDLE_S, left))
            except asyncio.TimeoutError:
                break
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data is None:
                break
            now = time.monotonic()
            try:
                out = await run_in_threadpool(session.push, data, now)
            except StreamInputError as exc:
                log.info("recovery %s: bad frame (%s)", recovery_id, exc)
                break
            for m in out:
                await ws.send_json(m.to_dict())
        result = await run_in_threadpool(_finish, service, session)
    finally:
        session.close()
    body = public_result(recovery_id, result)
    await run_in_threadpool(service._finish, recovery_id, "done", body)
    if result.decision in ("reject", "review"):  # as uploads: review counts (issue 12)
        service.store.record_failure(account, time.time())
    schedule = (result.liveness.challenge or {}) | {}
    schedule.pop("sequence", None)
    service.audit(
        "decision",
        account=account,
        recovery_id=recovery_id,
        live=True,
        decision=result.decision,
        score=round(float(result.score), 4),
        reason_codes=result.reason_codes,
        actions=[s.action for s in session.steps],
        schedule={k: schedule.get(k) for k in ("outcome", "failure", "light", "steps")},
        screen_light={
            k: v for k, v in (schedule.get("screen_light") or {}).items() if k != "sequence"
        },
        mirrored=mirrored,
        models={name: m.sha256 for name, m in result.models.items()},
    )
    log.info(
        "recovery %s live decision=%s reasons=%s",
        recovery_id,
        result.decision,
        ",".join(result.reason_codes) or "-",
    )
    await ws.send_json({"type": "result"} | body)
