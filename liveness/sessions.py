"""Active liveness, protocol half: server-issued challenge sessions that can be used once.

A recovery attempt goes like this:

1. The server calls :func:`issue_challenge`. It draws a random sequence of actions (blink,
   turn the head, ...), records a session in a :class:`SessionStore` and returns an
   :class:`IssuedChallenge`: a signed, URL-safe ``token`` plus the instructions to show.
2. The person records a selfie video while doing the actions, and the client sends the video
   back together with the token.
3. Before any video analysis the server calls :func:`begin_verification` with the token and the
   SHA-256 digest of the video bytes (:func:`video_digest`). In this order it checks that the
   token is well formed and signed by a key in the :class:`Keyring`, that it has not expired,
   that this store issued it, that the account is not rate limited, and then *consumes* the
   session atomically, so that a token works exactly once even when two requests race, and
   finally that the same video bytes were never submitted before. It returns the
   :class:`ChallengeClaims`, whose ``actions`` the analysis must find, in order, in the video.
4. When the analysis rejects the attempt, the server calls ``store.record_failure(account,
   now)``; enough failures in a short window block the account for a cool-down.

Every refusal raises a :class:`SessionError` whose ``code`` is a stable reason-code string
(``TOKEN_INVALID``, ``SESSION_EXPIRED``, ``SESSION_ALREADY_USED``, ``VIDEO_REUSED``,
``RATE_LIMITED``; the same strings as :class:`liveness.reasons.ReasonCode`) and whose message
is a sentence the person can act on. ``detail`` says for the server log which check failed; it
is not meant for the person (telling a forger *why* a token failed only helps the forger).

Token format (version 1)::

    base64url(payload JSON) "." base64url(HMAC-SHA256(key[kid], payload JSON bytes))

without ``=`` padding. The payload holds ``v`` (1), ``kid``, ``sid`` (session id), ``nonce``,
``account`` (or null), ``actions``, ``iat`` and ``exp`` (UTC epoch seconds). The payload is
signed, not encrypted: the client may read its own actions, which it has to show anyway.

This module uses the standard library only (and :mod:`liveness.actions`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from .actions import INSTRUCTIONS, Action

__all__ = [
    "ENV_KEY",
    "ENV_KEY_ID",
    "INSTRUCTIONS",
    "MIN_KEY_BYTES",
    "RATE_LIMITED",
    "SESSION_ALREADY_USED",
    "SESSION_EXPIRED",
    "TOKEN_INVALID",
    "TOKEN_VERSION",
    "VIDEO_REUSED",
    "Action",
    "ChallengeClaims",
    "ChallengeGate",
    "IssuedChallenge",
    "KeyConfigError",
    "KeyMissingError",
    "Keyring",
    "MemorySessionStore",
    "RateLimit",
    "RateLimitedError",
    "SQLiteSessionStore",
    "SessionAlreadyUsedError",
    "SessionError",
    "SessionExpiredError",
    "SessionStore",
    "TokenInvalidError",
    "VideoReusedError",
    "begin_verification",
    "draw_actions",
    "encode_token",
    "issue_challenge",
    "verify_token",
    "video_digest",
]

# --------------------------------------------------------------------------------------------
# Reason codes and errors
# --------------------------------------------------------------------------------------------

# Kept as plain strings equal to liveness.reasons.ReasonCode values, so that this module does
# not depend on the rest of the package and ``ReasonCode(err.code)`` still works.
TOKEN_INVALID = "TOKEN_INVALID"
SESSION_EXPIRED = "SESSION_EXPIRED"
SESSION_ALREADY_USED = "SESSION_ALREADY_USED"
VIDEO_REUSED = "VIDEO_REUSED"
RATE_LIMITED = "RATE_LIMITED"


class SessionError(Exception):
    """A challenge session was refused.

    ``code`` is a stable reason-code string, ``message`` (also ``str(err)``) a sentence for the
    person, ``detail`` a note for the server log (which check failed) that should not be shown
    to the person.
    """

    code: str = "SESSION_ERROR"
    default_message: str = "This recording session cannot be used. Start a new recovery attempt."

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(self.message)


class TokenInvalidError(SessionError):
    """The token is malformed, not signed by a known key, or was not issued by this store."""

    code = TOKEN_INVALID
    default_message = (
        "This recording session is not valid. Start a new recovery attempt from the official page."
    )


class SessionExpiredError(SessionError):
    """The token's expiry time has passed."""

    code = SESSION_EXPIRED
    default_message = (
        "The time for this recording has run out. Start a new recovery attempt to get new "
        "instructions."
    )


class SessionAlreadyUsedError(SessionError):
    """The session was consumed by an earlier (or a concurrent) request."""

    code = SESSION_ALREADY_USED
    default_message = (
        "This recording session has already been used. Start a new recovery attempt to get new "
        "instructions."
    )


class VideoReusedError(SessionError):
    """The same video bytes were submitted before."""

    code = VIDEO_REUSED
    default_message = "This recording was already submitted. Record a new video."


class RateLimitedError(SessionError):
    """Too many failed attempts for the account; ``retry_after`` is the wait in seconds."""

    code = RATE_LIMITED
    default_message = "Too many attempts in a short time. Wait a few minutes before trying again."

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        if message is None and retry_after is not None:
            message = (
                f"Too many attempts in a short time. Wait {_human_wait(retry_after)} before "
                "trying again."
            )
        super().__init__(message, detail=detail)


def _human_wait(seconds: float) -> str:
    """``"45 seconds"``, ``"1 minute"``, ``"5 minutes"``: rounded up, so waiting that long is
    always enough."""
    s = max(1, math.ceil(seconds))
    if s < 60:
        return f"{s} second" + ("s" if s != 1 else "")
    m = math.ceil(s / 60)
    return f"{m} minute" + ("s" if m != 1 else "")


class KeyConfigError(ValueError):
    """The signing key configuration is unusable (too short, unknown current id, bad file).

    This is a deployment problem, not a refused attempt, so it is not a :class:`SessionError`.
    """

    code = "KEY_CONFIG_INVALID"


class KeyMissingError(KeyConfigError):
    """No signing key was configured."""

    code = "KEY_MISSING"


# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------


MAX_ACTIONS = 10
MAX_TTL = 3600

# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------

ENV_KEY = "LIVENESS_SECRET_KEY"
ENV_KEY_ID = "LIVENESS_SECRET_KEY_ID"
DEFAULT_KEY_ID = "default"
# 128 bits: below this an offline guess of the key from one token and its signature becomes
# thinkable; HMAC-SHA256 itself is happy with any length.
MIN_KEY_BYTES = 16
_KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

_MISSING_KEY_HELP = (
    f"No signing key for challenge tokens. Set the environment variable {ENV_KEY} to a random "
    f"secret of at least {MIN_KEY_BYTES} bytes (for example the output of "
    '`python -c "import secrets; print(secrets.token_urlsafe(32))"`), optionally with '
    f"{ENV_KEY_ID} naming it, or pass --key-file PATH."
)


@dataclass(frozen=True, repr=False)
class Keyring:
    """Signing keys by key id (``kid``); ``current`` names the one that signs new tokens.

    Verification picks the key by the token's ``kid``, so rotation is: add the new key and make
    it current, keep the old one until the tokens it signed have expired (minutes), then remove
    it. Every key must be at least :data:`MIN_KEY_BYTES` long.

    A key file is either one secret (the whole file, surrounding whitespace stripped) or JSON::

        {"current": "2025-02", "keys": {"2025-02": "new secret", "2025-01": "old secret"}}
    """

    keys: Mapping[str, bytes]
    current: str

    def __post_init__(self) -> None:
        keys = dict(self.keys)
        if not keys:
            raise KeyMissingError(_MISSING_KEY_HELP)
        for kid, secret in keys.items():
            if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
                raise KeyConfigError(
                    f"Key id {kid!r} is not usable: use 1 to 64 letters, digits, '.', '_' or '-'."
                )
            if not isinstance(secret, bytes):
                raise KeyConfigError(f"Key {kid!r} must be bytes, not {type(secret).__name__}.")
            if len(secret) < MIN_KEY_BYTES:
                raise KeyConfigError(
                    f"Key {kid!r} is {len(secret)} bytes long; use at least {MIN_KEY_BYTES} "
                    "random bytes."
                )
        if self.current not in keys:
            raise KeyConfigError(f"The current key id {self.current!r} is not in the keyring.")
        # A private copy, so that later changes to the caller's dict cannot swap keys.
        object.__setattr__(self, "keys", keys)

    def __repr__(self) -> str:  # never print secrets
        return f"Keyring(current={self.current!r}, kids={sorted(self.keys)!r})"

    @classmethod
    def single(cls, secret: bytes | str, kid: str = DEFAULT_KEY_ID) -> Keyring:
        """A keyring with one key (a ``str`` secret is UTF-8 encoded)."""
        return cls({kid: _secret_bytes(secret)}, kid)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        """One key from ``LIVENESS_SECRET_KEY`` (UTF-8), id from ``LIVENESS_SECRET_KEY_ID``
        (default ``"default"``). Raises :class:`KeyMissingError` when the variable is unset."""
        env = os.environ if environ is None else environ
        secret = env.get(ENV_KEY, "")
        if not secret:
            raise KeyMissingError(_MISSING_KEY_HELP)
        return cls.single(secret, env.get(ENV_KEY_ID) or DEFAULT_KEY_ID)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], kid: str = DEFAULT_KEY_ID) -> Keyring:
        """Keys from a file: a single secret (with id ``kid``) or the JSON form above."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyMissingError(
                f"Key file {os.fspath(path)!r} not found. {_MISSING_KEY_HELP}"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise KeyConfigError(f"Key file {os.fspath(path)!r} cannot be read: {e}") from e
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                doc = json.loads(stripped)
                keys = {str(k): _secret_bytes(v) for k, v in doc["keys"].items()}
                current = doc["current"]
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise KeyConfigError(
                    f"Key file {os.fspath(path)!r} is not valid JSON of the form "
                    '{"current": ID, "keys": {ID: SECRET, ...}}.'
                ) from e
            return cls(keys, current)
        if not stripped:
            raise KeyMissingError(f"Key file {os.fspath(path)!r} is empty. {_MISSING_KEY_HELP}")
        return cls.single(stripped, kid)

    @classmethod
    def load(
        cls,
        key_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Keyring:
        """What a command line does: ``key_file`` if given, else the environment."""
        if key_file is not None:
            return cls.from_file(key_file)
        return cls.from_env(environ)

    def with_key(self, kid: str, secret: bytes | str, *, make_current: bool = True) -> Keyring:
        """A new keyring with ``kid`` added (or replaced), by default as the current key."""
        keys = dict(self.keys)
        keys[kid] = _secret_bytes(secret)
        return Keyring(keys, kid if make_current else self.current)

    def without_key(self, kid: str) -> Keyring:
        """A new keyring without ``kid``; tokens it signed stop verifying. The current key
        cannot be removed (make another one current first)."""
        if kid == self.current:
            raise KeyConfigError(f"Key {kid!r} is current; make another key current first.")
        return Keyring({k: v for k, v in self.keys.items() if k != kid}, self.current)

    def sign(self, payload: bytes, kid: str | None = None) -> bytes:
        """HMAC-SHA256 of ``payload`` under key ``kid`` (default: the current key)."""
        return hmac.new(self.keys[kid or self.current], payload, hashlib.sha256).digest()

    def verify(self, kid: str, payload: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is the HMAC of ``payload`` under ``kid``; unknown ``kid`` is
        False. The comparison takes the same time wherever the bytes differ."""
        key = self.keys.get(kid)
        if key is None:
            return False
        expected = hmac.new(key, payload, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)


def _secret_bytes(secret: bytes | str) -> bytes:
    if isinstance(secret, str):
        return secret.encode("utf-8")
    if isinstance(secret, bytes):
        return secret
    raise KeyConfigError(f"A key must be str or bytes, not {type(secret).__name__}.")


# --------------------------------------------------------------------------------------------
# Claims and tokens
# --------------------------------------------------------------------------------------------

TOKEN_VERSION = 1
# Far above a real token (about 400 characters), low enough that garbage is refused before
# any decoding work.
MAX_TOKEN_CHARS = 4096
MAX_ACCOUNT_CHARS = 256
DEFAULT_LEEWAY = 10.0
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
_PAYLOAD_KEYS = frozenset({"v", "kid", "sid", "nonce", "account", "actions", "iat", "exp"})
_ACTION_VALUES = frozenset(a.value for a in Action)


@dataclass(frozen=True)
class ChallengeClaims:
    """What a verified token says: who may use it, what to do, and until when."""

    session_id: str
    nonce: str
    account: str | None
    actions: tuple[str, ...]
    issued_at: int
    expires_at: int
    kid: str
    version: int = TOKEN_VERSION

    @property
    def instructions(self) -> list[str]:
        """The instruction sentence for each action, in order."""
        return [INSTRUCTIONS[Action(a)] for a in self.actions]

    def to_payload(self) -> dict:
        return {
            "v": self.version,
            "kid": self.kid,
            "sid": self.session_id,
            "nonce": self.nonce,
            "account": self.account,
            "actions": list(self.actions),
            "iat": self.issued_at,
            "exp": self.expires_at,
        }

    @classmethod
    def from_payload(cls, p: object) -> ChallengeClaims:
        """Strictly validated claims from a decoded payload; :class:`TokenInvalidError` for
        anything unexpected (extra or missing fields, wrong types, unknown actions)."""
        if not isinstance(p, dict) or set(p) != _PAYLOAD_KEYS:
            raise TokenInvalidError(detail="payload fields")
        if p["v"] != TOKEN_VERSION or type(p["v"]) is not int:
            raise TokenInvalidError(detail=f"unsupported version {p['v']!r}")
        for name in ("kid", "sid", "nonce"):
            if not isinstance(p[name], str) or not p[name]:
                raise TokenInvalidError(detail=f"bad {name}")
        account = p["account"]
        if account is not None and (not isinstance(account, str) or not account):
            raise TokenInvalidError(detail="bad account")
        actions = p["actions"]
        if (
            not isinstance(actions, list)
            or not 1 <= len(actions) <= MAX_ACTIONS
            or not all(isinstance(a, str) and a in _ACTION_VALUES for a in actions)
        ):
            raise TokenInvalidError(detail="bad actions")
        # bool is an int subclass; a token with "iat": true is not ours.
        if type(p["iat"]) is not int or type(p["exp"]) is not int or p["exp"] <= p["iat"]:
            raise TokenInvalidError(detail="bad times")
        return cls(
            session_id=p["sid"],
            nonce=p["nonce"],
            account=account,
            actions=tuple(actions),
            issued_at=p["iat"],
            expires_at=p["exp"],
            kid=p["kid"],
            version=p["v"],
        )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # Strict: only the URL-safe alphabet, no padding, no whitespace; b64decode alone would
    # silently skip characters outside the alphabet, so a changed token could still decode.
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_token(keyring: Keyring, claims: ChallengeClaims) -> str:
    """Sign ``claims`` with the key named by ``claims.kid`` (which must be in ``keyring``)."""
    payload = json.dumps(claims.to_payload(), separators=(",", ":"), sort_keys=True).encode()
    return _b64encode(payload) + "." + _b64encode(keyring.sign(payload, claims.kid))


def verify_token(
    keyring: Keyring, token: str, *, now: float | None = None, leeway: float = DEFAULT_LEEWAY
) -> ChallengeClaims:
    """Check a token's format, signature and times; return its claims.

    Raises :class:`TokenInvalidError` for anything malformed, an unknown ``kid``, a wrong
    signature, or an issue time more than ``leeway`` seconds in the future (servers' clocks may
    differ a little; more than that is not a token we issued), and
    :class:`SessionExpiredError` when ``now >= exp``. It does not look at any store: a valid
    token may still be unknown or used (see :func:`begin_verification`).
    """
    now = time.time() if now is None else now
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
        raise TokenInvalidError(detail="empty, oversized or not a string")
    parts = token.split(".")
    if len(parts) != 2:
        raise TokenInvalidError(detail="not two parts")
    try:
        payload = _b64decode(parts[0])
        signature = _b64decode(parts[1])
    except (ValueError, binascii.Error):
        raise TokenInvalidError(detail="bad base64url") from None
    if len(signature) != hashlib.sha256().digest_size:
        raise TokenInvalidError(detail="bad signature length")
    # The kid has to be read before the signature can be checked, so the payload is parsed
    # first; it is bounded in size and nothing in it is trusted until the HMAC matches.
    try:
        raw = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise TokenInvalidError(detail="payload not JSON") from None
    kid = raw.get("kid") if isinstance(raw, dict) else None
    if not isinstance(kid, str) or not keyring.verify(kid, payload, signature):
        raise TokenInvalidError(detail=f"signature or unknown kid {kid!r}")
    claims = ChallengeClaims.from_payload(raw)
    if claims.issued_at > now + leeway:
        raise TokenInvalidError(detail="issued in the future")
    if now >= claims.expires_at:
        raise SessionExpiredError(detail=f"expired {now - claims.expires_at:.0f} s ago")
    return claims


@dataclass(frozen=True)
class IssuedChallenge:
    """A new challenge: the ``token`` to give the client and what to show the person."""

    token: str
    session_id: str
    actions: list[str]
    instructions: list[str]
    issued_at: int
    expires_at: int

    def to_dict(self) -> dict:
        """JSON-ready form for an API response."""
        return {
            "token": self.token,
            "session_id": self.session_id,
            "actions": list(self.actions),
            "instructions": list(self.instructions),
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }


def draw_actions(count: int = 3, exclude: Iterable[str | Action] = ()) -> list[Action]:
    """``count`` actions drawn with :mod:`secrets`, never the same one twice in a row and never
    one in ``exclude`` (for people who cannot do some actions, e.g. turn their head).
    Every sequence contains a head movement (turn, or look up / down) unless all four are
    excluded.

    The same action may come back later in the sequence (blink, smile, blink): that keeps
    more sequences possible, so a video recorded in advance is less likely to fit.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ACTIONS:
        raise ValueError(f"actions must be an integer from 1 to {MAX_ACTIONS}, not {count!r}")
    try:
        excluded = {Action(a) for a in exclude}
    except ValueError as e:
        # A typo in an accessibility policy must not silently leave the action in.
        raise ValueError(f"unknown action in exclude: {e}") from None
    allowed = [a for a in Action if a not in excluded]
    if not allowed or (count > 1 and len(allowed) < 2):
        raise ValueError(
            f"cannot draw {count} actions without repeating one in a row from {allowed!r}"
        )
    seq: list[Action] = []
    for _ in range(count):
        choices = [a for a in allowed if not seq or a is not seq[-1]]
        seq.append(secrets.choice(choices))
    return _with_head_move(seq, allowed)


# A head turn (or look up / down where turns are excluded) gives the 3D-consistency check
# (liveness.geometry) the motion it judges a face by: every drawn challenge has one.
_HEAD_MOVES = (Action.TURN_LEFT, Action.TURN_RIGHT, Action.LOOK_UP, Action.LOOK_DOWN)


def _with_head_move(seq: list[Action], allowed: list[Action]) -> list[Action]:
    """``seq`` with one step, at a random place, replaced by an allowed head movement when
    it has none (unchanged when every head movement is excluded)."""
    heads = [a for a in _HEAD_MOVES if a in allowed]
    if not heads or any(a in _HEAD_MOVES for a in seq):
        return seq
    p = secrets.randbelow(len(seq))
    near = {seq[q] for q in (p - 1, p + 1) if 0 <= q < len(seq)}
    seq[p] = secrets.choice([a for a in heads if a not in near])
    return seq


def issue_challenge(
    keyring: Keyring,
    store: SessionStore,
    *,
    account: str | None = None,
    actions: int = 3,
    ttl: int = 120,
    exclude: Iterable[str | Action] = (),
    now: float | None = None,
) -> IssuedChallenge:
    """Draw a challenge, record its session in ``store`` and return the signed token.

    ``account`` binds the token to an account (needed for rate limiting; tokens without one
    are not rate limited). An account blocked after too many failed attempts gets no new
    session: :class:`RateLimitedError` says how long to wait. ``ttl`` is the lifetime in
    seconds; it should cover reading the instructions and recording, and little more. Times
    are UTC epoch seconds.
    """
    if account is not None and (
        not isinstance(account, str) or not 0 < len(account) <= MAX_ACCOUNT_CHARS
    ):
        raise ValueError(f"account must be a non-empty string of at most {MAX_ACCOUNT_CHARS}")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be an integer from 1 to {MAX_TTL} seconds, not {ttl!r}")
    seq = draw_actions(actions, exclude)
    if account is not None:
        store.check_rate_limit(account, time.time() if now is None else now)
    iat = math.floor(time.time() if now is None else now)
    claims = ChallengeClaims(
        session_id=secrets.token_urlsafe(16),
        nonce=secrets.token_urlsafe(16),
        account=account,
        actions=tuple(a.value for a in seq),
        issued_at=iat,
        expires_at=iat + ttl,
        kid=keyring.current,
    )
    token = encode_token(keyring, claims)
    store.record_issued(claims)
    return IssuedChallenge(
        token=token,
        session_id=claims.session_id,
        actions=list(claims.actions),
        instructions=claims.instructions,
        issued_at=claims.issued_at,
        expires_at=claims.expires_at,
    )


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    """``max_failures`` failures within ``window`` seconds block the account for
    ``cooldown`` seconds. Failures before a block do not count towards the next one."""

    max_failures: int = 5
    window: float = 180.0
    cooldown: float = 300.0

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window <= 0 or self.cooldown <= 0:
            raise ValueError(f"invalid rate limit {self!r}")


# SHA-256 hex: the only thing kept about a video.
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
DEFAULT_DIGEST_RETENTION = 30 * 24 * 3600.0


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions, video digests and failures are kept.

    Small on purpose, so that a shared store for several servers (Redis, PostgreSQL) can
    replace :class:`SQLiteSessionStore`. What an implementation must guarantee:

    * :meth:`consume` is atomic: of any number of concurrent calls for one session, exactly
      one returns (e.g. ``UPDATE ... SET consumed_at=? WHERE id=? AND consumed_at IS NULL``
      and check the row count; Redis: ``SET used:<id> 1 NX``).
    * :meth:`record_video_digest` is an atomic insert-if-absent.
    * Rate limiting follows :class:`RateLimit`: :meth:`record_failure` counts the account's
      failures since ``now - window`` (ignoring those up to the failure that triggered the
      previous block) and blocks it until ``now + cooldown`` when they reach
      ``max_failures``; :meth:`check_rate_limit` raises while blocked.

    All times are UTC epoch seconds, passed in by the caller so that tests can move time.
    """

    def record_issued(self, claims: ChallengeClaims) -> None:
        """Remember a newly issued session (not consumed)."""
        ...

    def is_known(self, session_id: str) -> bool:
        """Whether this store issued ``session_id`` (and has not purged it)."""
        ...

    def consume(self, session_id: str, now: float) -> None:
        """Mark the session used. :class:`SessionAlreadyUsedError` if it already was,
        :class:`TokenInvalidError` if it is unknown."""
        ...

    def record_video_digest(self, digest: str, now: float) -> bool:
        """Remember a video's SHA-256 hex digest; False if it was seen before."""
        ...

    def record_failure(self, account: str, now: float) -> float | None:
        """Count a failed attempt; returns the time the account is blocked until, if this
        failure blocked it."""
        ...

    def failures(self, account: str, window: float, now: float) -> int:
        """How many failures the account had in ``(now - window, now]``."""
        ...

    def check_rate_limit(self, account: str, now: float) -> None:
        """:class:`RateLimitedError` (with ``retry_after``) while the account is blocked."""
        ...

    def purge(self, now: float) -> int:
        """Forget what can no longer matter (expired sessions, old failures and digests);
        returns how many records were removed."""
        ...


def _rate_limited(blocked_until: float | None, now: float) -> None:
    if blocked_until is not None and blocked_until > now:
        raise RateLimitedError(
            retry_after=blocked_until - now, detail=f"blocked until {blocked_until:.0f}"
        )


# Expired sessions are kept this long after expiry before purge() drops them; only for
# inspection, as expiry is checked from the signed token before the store is asked.
_SESSION_GRACE = 3600.0


@dataclass(eq=False)  # identity, not contents: two stores are never "the same store"
class MemorySessionStore:
    """A :class:`SessionStore` in this process's memory, behind one lock: for tests and a
    single-process server. Everything is lost on exit, so a restart re-opens used tokens
    until they expire; use :class:`SQLiteSessionStore` otherwise."""

    limits: RateLimit = field(default_factory=RateLimit)
    digest_retention: float = DEFAULT_DIGEST_RETENTION
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # session id -> [expires_at, consumed_at or None]
    _sessions: dict[str, list] = field(default_factory=dict, init=False, repr=False)
    _digests: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    # account -> [(failure id, time)]; ids order failures even when times are equal
    _failures: dict[str, list[tuple[int, float]]] = field(
        default_factory=dict, init=False, repr=False
    )
    # account -> (blocked_until, id of the failure that triggered the block)
    _blocks: dict[str, tuple[float, int]] = field(default_factory=dict, init=False, repr=False)
    _next_failure_id: int = field(default=1, init=False, repr=False)

    def record_issued(self, claims: ChallengeClaims) -> None:
        with self._lock:
            if claims.session_id in self._sessions:
                raise ValueError(f"session {claims.session_id!r} already recorded")
            self._sessions[claims.session_id] = [claims.expires_at, None]

    def is_known(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._sessions

    def consume(self, session_id: str, now: float) -> None:
        with self._lock:
            rec = self._sessions.get(session_id)
            if rec is None:
                raise TokenInvalidError(detail="unknown session")
            if rec[1] is not None:
                raise SessionAlreadyUsedError(detail=f"consumed at {rec[1]:.0f}")
            rec[1] = now

    def record_video_digest(self, digest: str, now: float) -> bool:
        with self._lock:
            if digest in self._digests:
                return False
            self._digests[digest] = now
            return True

    def record_failure(self, account: str, now: float) -> float | None:
        with self._lock:
            fid = self._next_failure_id
            self._next_failure_id += 1
            lst = self._failures.setdefault(account, [])
            lst.append((fid, now))
            trigger = self._blocks.get(account, (0.0, 0))[1]
            n = sum(1 for i, t in lst if i > trigger and t > now - self.limits.window)
            if n >= self.limits.max_failures:
                until = now + self.limits.cooldown
                self._blocks[account] = (until, fid)
                return until
            return None

    def failures(self, account: str, window: float, now: float) -> int:
        with self._lock:
            return sum(1 for _, t in self._failures.get(account, ()) if now - window < t <= now)

    def check_rate_limit(self, account: str, now: float) -> None:
        with self._lock:
            block = self._blocks.get(account)
        _rate_limited(block[0] if block else None, now)

    def purge(self, now: float) -> int:
        with self._lock:
            removed = 0
            for sid in [s for s, r in self._sessions.items() if r[0] < now - _SESSION_GRACE]:
                del self._sessions[sid]
                removed += 1
            for d in [d for d, t in self._digests.items() if t < now - self.digest_retention]:
                del self._digests[d]
                removed += 1
            for acct, lst in list(self._failures.items()):
                keep = [(i, t) for i, t in lst if t > now - self.limits.window]
                removed += len(lst) - len(keep)
                if keep:
                    self._failures[acct] = keep
                else:
                    del self._failures[acct]
            # A block's trigger id still matters while failures before it are in a window.
            for acct in [a for a, (u, _) in self._blocks.items() if u + self.limits.window < now]:
                del self._blocks[acct]
                removed += 1
            return removed


_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    account TEXT,
    actions TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    consumed_at REAL
);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS video_digests (
    digest TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_account_at ON failures (account, at);
CREATE TABLE IF NOT EXISTS blocks (
    account TEXT PRIMARY KEY,
    blocked_until REAL NOT NULL,
    trigger_id INTEGER NOT NULL
);
"""


class SQLiteSessionStore:
    """The default :class:`SessionStore`: one SQLite file, safe across threads and processes
    on one machine.

    Every call opens its own connection (cheap for SQLite) and runs in ``BEGIN IMMEDIATE``,
    which takes the write lock up front so that a read-then-write cannot interleave with
    another writer; concurrent callers wait up to ``busy_timeout`` seconds. The file is in WAL
    mode and ``synchronous=FULL``, so a consumed session stays consumed after a power cut. No
    connection is shared, so the store also survives ``fork``. Do not put the file on a
    network file system (SQLite's locking is not reliable there); use a shared store for
    several machines.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: RateLimit | None = None,
        busy_timeout: float = 10.0,
        digest_retention: float = DEFAULT_DIGEST_RETENTION,
    ) -> None:
        self.path = os.fspath(path)
        if not self.path or self.path == ":memory:" or self.path.startswith("file:"):
            # Each call opens a new connection, which would see a new, empty in-memory db.
            raise ValueError(
                "SQLiteSessionStore needs a file path; use MemorySessionStore for memory"
            )
        self.limits = limits or RateLimit()
        self.busy_timeout = busy_timeout
        self.digest_retention = digest_retention
        self._init_db()

    def __repr__(self) -> str:
        return f"SQLiteSessionStore({self.path!r}, limits={self.limits!r})"

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE ourselves.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _init_db(self) -> None:
        conn = self._connect()
        try:
            # Persistent in the file; switching needs a moment alone with the db, which the
            # busy timeout gives when several processes open it at once.
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        with self._tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise RuntimeError(
                    f"{self.path}: session store schema {version} is newer than this code "
                    f"({_SCHEMA_VERSION})"
                )
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def record_issued(self, claims: ChallengeClaims) -> None:
        with self._tx() as c:
            try:
                c.execute(
                    "INSERT INTO sessions (id, account, actions, issued_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        claims.session_id,
                        claims.account,
                        json.dumps(list(claims.actions)),
                        claims.issued_at,
                        claims.expires_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"session {claims.session_id!r} already recorded") from None

    def is_known(self, session_id: str) -> bool:
        conn = self._connect()
        try:
            row = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
        finally:
            conn.close()
        return row is not None

    def consume(self, session_id: str, now: float) -> None:
        with self._tx() as c:
            # One conditional UPDATE: whoever changes the row first wins; everyone else sees
            # rowcount 0. Atomic even without the IMMEDIATE transaction around it.
            cur = c.execute(
                "UPDATE sessions SET consumed_at = ? WHERE id = ? AND consumed_at IS NULL",
                (now, session_id),
            )
            if cur.rowcount == 1:
                return
            row = c.execute(
                "SELECT consumed_at FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        if row is None:
            raise TokenInvalidError(detail="unknown session")
        raise SessionAlreadyUsedError(detail=f"consumed at {row[0]:.0f}")

    def record_video_digest(self, digest: str, now: float) -> bool:
        with self._tx() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO video_digests (digest, seen_at) VALUES (?, ?)",
                (digest, now),
            )
            return cur.rowcount == 1

    def record_failure(self, account: str, now: float) -> float | None:
        lim = self.limits
        with self._tx() as c:
            fid = c.execute(
                "INSERT INTO failures (account, at) VALUES (?, ?)", (account, now)
            ).lastrowid
            row = c.execute(
                "SELECT trigger_id FROM blocks WHERE account = ?", (account,)
            ).fetchone()
            trigger = row[0] if row else 0
            (n,) = c.execute(
                "SELECT COUNT(*) FROM failures WHERE account = ? AND id > ? AND at > ?",
                (account, trigger, now - lim.window),
            ).fetchone()
            if n < lim.max_failures:
                return None
            until = now + lim.cooldown
            c.execute(
                "INSERT INTO blocks (account, blocked_until, trigger_id) VALUES (?, ?, ?) "
                "ON CONFLICT (account) DO UPDATE SET blocked_until = excluded.blocked_until, "
                "trigger_id = excluded.trigger_id",
                (account, until, fid),
            )
            return until

    def failures(self, account: str, window: float, now: float) -> int:
        conn = self._connect()
        try:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM failures WHERE account = ? AND at > ? AND at <= ?",
                (account, now - window, now),
            ).fetchone()
        finally:
            conn.close()
        return n

    def check_rate_limit(self, account: str, now: float) -> None:
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT blocked_until FROM blocks WHERE account = ?", (account,)
            ).fetchone()
        finally:
            conn.close()
        _rate_limited(row[0] if row else None, now)

    def purge(self, now: float) -> int:
        lim = self.limits
        with self._tx() as c:
            removed = 0
            for sql, arg in (
                ("DELETE FROM sessions WHERE expires_at < ?", now - _SESSION_GRACE),
                ("DELETE FROM video_digests WHERE seen_at < ?", now - self.digest_retention),
                ("DELETE FROM failures WHERE at <= ?", now - lim.window),
                ("DELETE FROM blocks WHERE blocked_until < ?", now - lim.window),
            ):
                removed += c.execute(sql, (arg,)).rowcount
            return removed


# --------------------------------------------------------------------------------------------
# Before analysing a video
# --------------------------------------------------------------------------------------------


def video_digest(source: bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO) -> str:
    """SHA-256 hex digest of a video: its bytes, a file path, or a binary file object (read
    from its current position to the end, in chunks)."""
    h = hashlib.sha256()
    if isinstance(source, (bytes, bytearray, memoryview)):
        h.update(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def begin_verification(
    keyring: Keyring,
    store: SessionStore,
    token: str,
    video_digest: str,
    now: float | None = None,
    *,
    leeway: float = DEFAULT_LEEWAY,
) -> ChallengeClaims:
    """All checks before a submitted video is analysed; returns the claims whose actions the
    video must show. Raises a :class:`SessionError` at the first check that fails:

    1. token well formed and signed by a key in ``keyring`` -> ``TOKEN_INVALID``
    2. not expired -> ``SESSION_EXPIRED``. Checked from the signed token before the store,
       so that a token whose session was already purged still gets the right message.
    3. issued by ``store`` -> ``TOKEN_INVALID``
    4. account not rate limited -> ``RATE_LIMITED`` (the session stays unused)
    5. session consumed atomically -> ``SESSION_ALREADY_USED`` for every request but the first
    6. ``video_digest`` (SHA-256 hex of the video bytes, :func:`video_digest`) never seen
       before -> ``VIDEO_REUSED``. After consumption on purpose: a replayed video burns the
       session too.

    Failures at 5 and 6 mean someone is replaying a genuine token or video, so they count as
    failures for the account's rate limit. The caller must record a failure itself when the
    analysis later rejects the video (``store.record_failure(claims.account, now)``).
    """
    now = time.time() if now is None else now
    if not isinstance(video_digest, str) or not _DIGEST_RE.fullmatch(video_digest.lower()):
        # A programming error, not the person's: say so loudly rather than as a reason code.
        raise ValueError("video_digest must be a SHA-256 hex digest (see video_digest())")
    claims = verify_token(keyring, token, now=now, leeway=leeway)
    if not store.is_known(claims.session_id):
        raise TokenInvalidError(detail="session not issued by this store")
    if claims.account is not None:
        store.check_rate_limit(claims.account, now)
    try:
        store.consume(claims.session_id, now)
        if not store.record_video_digest(video_digest.lower(), now):
            raise VideoReusedError(detail=f"digest {video_digest[:12]}... seen before")
    except (SessionAlreadyUsedError, VideoReusedError):
        if claims.account is not None:
            store.record_failure(claims.account, now)
        raise
    return claims


@dataclass(frozen=True)
class ChallengeGate:
    """A keyring and a store together, for servers that would rather hold one object."""

    keyring: Keyring
    store: SessionStore

    def issue(self, **kwargs) -> IssuedChallenge:
        """:func:`issue_challenge` with this gate's keyring and store."""
        return issue_challenge(self.keyring, self.store, **kwargs)

    def begin(self, token: str, video_digest: str, now: float | None = None) -> ChallengeClaims:
        """:func:`begin_verification` with this gate's keyring and store."""
        return begin_verification(self.keyring, self.store, token, video_digest, now)

    def record_failure(self, claims: ChallengeClaims, now: float | None = None) -> None:
        """Count a rejected attempt against the token's account (no-op without one)."""
        if claims.account is not None:
            self.store.record_failure(claims.account, time.time() if now is None else now)
