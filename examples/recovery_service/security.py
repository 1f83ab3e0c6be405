"""The service's defences that are not about faces: operator authentication, request body
limits, rate limits per client address and overall, private files, and a served
configuration that bounds slow or idle connections (issue 12).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from liveness.sessions import (
    KeyConfigError,
    check_key_file_permissions,
    check_key_strength,
)

ENV_OPERATOR_KEY = "LIVENESS_OPERATOR_KEY"


# -- operator authentication -----------------------------------------------------------------


class OperatorAuth:
    """One operator key, sent as ``Authorization: Bearer <key>`` and compared in constant
    time. ``actor`` names the operator in the audit log by the key's fingerprint (never the
    key)."""

    def __init__(self, key: bytes) -> None:
        check_key_strength(key, "The operator key")
        self._digest = hashlib.sha256(key).digest()
        self.actor = "operator:" + hashlib.sha256(b"actor|" + key).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"OperatorAuth(actor={self.actor!r})"

    @classmethod
    def load(cls, key_file: str | os.PathLike | None = None) -> OperatorAuth:
        """``--operator-key-file PATH`` (mode 0600 or stricter), else
        ``$LIVENESS_OPERATOR_KEY``; :class:`KeyConfigError` when neither is set."""
        if key_file is not None:
            try:
                check_key_file_permissions(key_file)
                key = Path(key_file).read_bytes().strip()
            except FileNotFoundError:
                raise KeyConfigError(
                    f"Operator key file {os.fspath(key_file)!r} not found."
                ) from None
            return cls(key)
        if os.environ.get(ENV_OPERATOR_KEY):
            return cls(os.environ[ENV_OPERATOR_KEY].encode())
        raise KeyConfigError(
            f"No operator key: set {ENV_OPERATOR_KEY} or pass --operator-key-file PATH "
            "(or --insecure-no-operator-auth for a demo on your own machine)."
        )

    def check(self, authorization: str | None) -> bool:
        """Whether the ``Authorization`` header carries the key. Both sides are hashed
        first, so the comparison takes the same time whatever the length sent."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        sent = hashlib.sha256(authorization[7:].strip().encode("utf-8", "replace")).digest()
        return hmac.compare_digest(sent, self._digest)


def bearer_matches(authorization: str | None, secret: str) -> bool:
    """Constant-time check of ``Authorization: Bearer <secret>``."""
    if not authorization or not authorization.startswith("Bearer ") or not secret:
        return False
    a = hashlib.sha256(authorization[7:].strip().encode("utf-8", "replace")).digest()
    return hmac.compare_digest(a, hashlib.sha256(secret.encode()).digest())


# -- rate limits per client and overall --------------------------------------------------------


@dataclass(frozen=True)
class ClientLimits:
    """Events allowed per ``window`` seconds, per client address and for everyone together.

    The defaults let a person retry a few times a minute and stop one client from starting
    thousands of recoveries (issue 12: 3,965 in 20 s) or spending the decoders; junk uploads
    (never reached the analysis) block the *client* for ``junk_block`` seconds, not the
    account's owner."""

    window: float = 60.0
    starts_per_client: int = 10
    starts_total: int = 300
    uploads_per_client: int = 10
    uploads_total: int = 60
    enrolments_total: int = 60
    # The capture page asks for hints once a second while the preview runs (static/hints.js):
    # twice that per client, and a total that keeps YuNet on hint frames to a few a second.
    hints_per_client: int = 120
    hints_total: int = 600
    junk_per_client: int = 5
    junk_window: float = 600.0
    junk_block: float = 600.0
    auth_failures_per_client: int = 10
    # Clients remembered at once (oldest forgotten first), so the table cannot grow
    # without bound under a flood of addresses.
    max_clients: int = 50_000


class ClientLimiter:
    """Sliding-window counters in this process's memory, behind one lock."""

    def __init__(self, limits: ClientLimits | None = None) -> None:
        self.limits = limits or ClientLimits()
        self._lock = threading.Lock()
        self._events: OrderedDict[tuple[str, str], deque] = OrderedDict()
        self._blocked: dict[str, float] = {}

    def _hit(self, key: tuple[str, str], limit: int, window: float, now: float) -> float | None:
        q = self._events.get(key)
        if q is None:
            q = self._events[key] = deque()
            while len(self._events) > self.limits.max_clients:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        while q and q[0] <= now - window:
            q.popleft()
        if len(q) >= limit:
            return q[0] + window - now
        q.append(now)
        return None

    def allow(self, kind: str, client: str, now: float | None = None) -> float | None:
        """Count one ``kind`` event ("start", "upload", "enrol", "hint", "auth") from ``client``;
        returns None when allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        lim = self.limits
        per, total = {
            "start": (lim.starts_per_client, lim.starts_total),
            "upload": (lim.uploads_per_client, lim.uploads_total),
            "enrol": (10**9, lim.enrolments_total),
            "hint": (lim.hints_per_client, lim.hints_total),
            "auth": (lim.auth_failures_per_client, 10**9),
        }[kind]
        with self._lock:
            until = self._blocked.get(client)
            if until is not None:
                if until > now:
                    return until - now
                del self._blocked[client]
            wait = self._hit((kind, client), per, lim.window, now)
            if wait is None:
                wait = self._hit((kind, "*"), total, lim.window, now)
                if wait is not None:  # give the client's slot back
                    self._events[(kind, client)].pop()
            return wait

    def record_junk(self, client: str, now: float | None = None) -> float | None:
        """Count an upload that never reached the analysis; returns the block length when
        this one blocked the client."""
        now = time.monotonic() if now is None else now
        lim = self.limits
        with self._lock:
            if self._hit(("junk", client), lim.junk_per_client - 1, lim.junk_window, now):
                self._blocked[client] = now + lim.junk_block
                return lim.junk_block
        return None


# -- files -------------------------------------------------------------------------------------


def private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and make it 0700."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(p, 0o700)
    return p


def private_file(path: str | os.PathLike) -> None:
    """Make an existing file 0600 (SQLite creates its files with the process umask)."""
    p = Path(path)
    if p.exists():
        os.chmod(p, 0o600)


def write_private(path: str | os.PathLike, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# -- the served configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on connections: issue 12 held 1,100 connections that never finished their
    headers and made ``/healthz`` time out for 60 s."""

    # Connections open at once; more are closed at once (well under the usual 1024 open
    # files, so accept() never fails with "Too many open files").
    max_connections: int = 256
    # Of those, from one client address: one address cannot take every slot.
    max_connections_per_client: int = 64
    # Seconds a connection may take to send a request's headers (from connect, or from
    # the end of the previous response).
    header_timeout: float = 10.0
    # Seconds an idle keep-alive connection is kept.
    keep_alive: float = 5.0
    # Requests in progress at once; more get 503.
    max_requests: int = 64
    # Largest WebSocket message (the live check's frames: ``StreamConfig.max_frame_bytes``,
    # 2 MiB, plus room for the framing); a larger one closes the connection (1009) before the
    # app sees it, instead of uvicorn's default 16 MiB.
    ws_max_bytes: int = 2 * 1024 * 1024 + 4096


def guarded_protocol(limits: ServeLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header timeout and a connection cap."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer = None
            host = self.client[0] if self.client else None
            same = sum(1 for c in self.connections if c.client and c.client[0] == host)
            if (
                len(self.connections) > limits.max_connections
                or same > limits.max_connections_per_client
            ):
                self.connections.discard(self)
                transport.abort()
                return
            self._arm()

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(limits.header_timeout, self._expire)

        def _expire(self) -> None:
            self._header_timer = None
            # Still waiting for (the rest of) a request's headers: drop the connection.
            if self.conn.their_state in (h11.IDLE, h11.DONE) and not self.transport.is_closing():
                if self.cycle is None or self.cycle.response_complete:
                    self.transport.abort()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is h11.SEND_BODY or (
                self.cycle is not None and not self.cycle.response_complete
            ):
                if self._header_timer is not None:
                    self._header_timer.cancel()
                    self._header_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if getattr(self, "_header_timer", None) is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_config(app, host: str, port: int, limits: ServeLimits | None = None, **kwargs):
    """The ``uvicorn.Config`` the service is served with (see :class:`ServeLimits`)."""
    import uvicorn

    limits = limits or ServeLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits),
        timeout_keep_alive=int(limits.keep_alive),
        limit_concurrency=limits.max_connections + limits.max_requests,
        h11_max_incomplete_event_size=16 * 1024,
        ws_max_size=limits.ws_max_bytes,
        backlog=128,
        server_header=False,
        **kwargs,
    )
