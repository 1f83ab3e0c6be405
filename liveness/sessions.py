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

Version 2 (timed steps, ``issue_challenge(..., timed=True)``) adds ``win``: for each action
``[lo, hi]``, the seconds after the start of the recording within which that action must
*start* (the page shows step ``i`` at ``lo - min_reaction``; see :class:`StepTiming`). The
verifier then also fails a recording whose actions happen at other times, or that is full
of actions nobody asked for. Version 1 tokens (no ``win``) are still accepted.

This module uses the standard library only (and :mod:`liveness.actions`,
:mod:`liveness.errors`); the stores live in :mod:`liveness.stores` and are re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .actions import INSTRUCTIONS, Action
from .errors import InputError, LivenessError, SetupError
from .stores import (
    MemorySessionStore,
    RateLimit,
    SessionStore,
    SQLiteSessionStore,
)
from .stores.base import DIGEST_RE as _DIGEST_RE
from .stores.base import StoreUnavailable

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
    "TIMED_TOKEN_VERSION",
    "StepTiming",
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
    "StoreUnavailable",
    "TokenInvalidError",
    "VideoReusedError",
    "begin_verification",
    "check_key_strength",
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


class SessionError(LivenessError):
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


class KeyConfigError(SetupError, ValueError):
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
        check_key_strength(_secret_bytes(secret), f"The key in {ENV_KEY}")
        return cls.single(secret, env.get(ENV_KEY_ID) or DEFAULT_KEY_ID)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], kid: str = DEFAULT_KEY_ID) -> Keyring:
        """Keys from a file: a single secret (with id ``kid``) or the JSON form above.

        The file must not be readable by group or others, and every key in it must pass
        :func:`check_key_strength`; :class:`KeyConfigError` otherwise."""
        try:
            check_key_file_permissions(path)
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
            for k, secret in keys.items():
                check_key_strength(secret, f"Key {k!r} in {os.fspath(path)!r}")
            return cls(keys, current)
        if not stripped:
            raise KeyMissingError(f"Key file {os.fspath(path)!r} is empty. {_MISSING_KEY_HELP}")
        check_key_strength(_secret_bytes(stripped), f"The key in {os.fspath(path)!r}")
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


# Below this many bits of empirical (per-byte Shannon) entropy over the whole key, the key
# is refused. Random keys score above it: of 20,000 each, the lowest scores were 36.0 for
# token_hex(8) (16 hex characters, 64 bits), 47.6 for token_urlsafe(12), 55.2 for
# token_bytes(16) and 187.5 for token_urlsafe(32), none refused; the weak keys of issue 12
# score 0 ("aaaaaaaaaaaaaaaa") and 47 ("changeme-changeme", refused for its placeholder
# words instead).
MIN_KEY_ENTROPY_BITS = 32.0
# Words people type as placeholders; a key that is mostly these is a placeholder.
_PLACEHOLDER_WORDS = (
    "changeme", "change-me", "change_me", "password", "passwd", "secret", "letmein",
    "qwerty", "123456", "example", "default", "admin", "test", "key",
)  # fmt: skip


def key_entropy_bits(secret: bytes) -> float:
    """Empirical Shannon entropy of ``secret``'s bytes times its length, in bits: an upper
    bound on what a guesser faces if the key's bytes were drawn independently."""
    n = len(secret)
    if n == 0:
        return 0.0
    counts: dict[int, int] = {}
    for b in secret:
        counts[b] = counts.get(b, 0) + 1
    return -n * sum(c / n * math.log2(c / n) for c in counts.values())


def check_key_strength(secret: bytes, what: str = "The key") -> None:
    """:class:`KeyConfigError` if ``secret`` is short or guessable.

    Refused: under :data:`MIN_KEY_BYTES` bytes; under :data:`MIN_KEY_ENTROPY_BITS` of
    empirical entropy (:func:`key_entropy_bits`); one piece repeated (``"abcabcabc..."``,
    ``"changeme-changeme"``); a run with a constant step (``"abcdefghijklmnop"``); or made
    mostly of placeholder words (``"secretsecretkey!"``). Random keys from
    ``secrets.token_urlsafe(32)`` or ``token_bytes(32)`` always pass.
    """
    n = len(secret)
    if n < MIN_KEY_BYTES:
        raise KeyConfigError(
            f"{what} is {n} bytes long; use at least {MIN_KEY_BYTES} random bytes "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))").'
        )
    weak = None
    if key_entropy_bits(secret) < MIN_KEY_ENTROPY_BITS:
        weak = "has too little variety"
    elif any(secret == (secret[:p] * (n // p + 1))[:n] for p in range(1, n // 2 + 1)):
        weak = "is one piece repeated"
    elif len({(secret[i + 1] - secret[i]) % 256 for i in range(n - 1)}) == 1:
        weak = "is a simple sequence"
    else:
        rest = secret.lower()
        for word in _PLACEHOLDER_WORDS:
            rest = rest.replace(word.encode(), b"")
        if len(rest) < MIN_KEY_BYTES // 2:
            weak = "is made of placeholder words"
    if weak:
        raise KeyConfigError(
            f"{what} {weak}, so it can be guessed; use a random secret "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))").'
        )


def check_key_file_permissions(path: str | os.PathLike[str]) -> None:
    """:class:`KeyConfigError` if the key file can be read or written by group or others
    (POSIX only): a key others can read signs tokens for them too."""
    if os.name != "posix":
        return
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise KeyConfigError(
            f"Key file {os.fspath(path)!r} has permissions {mode:o}: others can read it. "
            f"Run: chmod 600 {os.fspath(path)}"
        )


# --------------------------------------------------------------------------------------------
# Claims and tokens
# --------------------------------------------------------------------------------------------

TOKEN_VERSION = 1
TIMED_TOKEN_VERSION = 2
MAX_WINDOW_S = 600.0
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
    # Version 2: per action, (lo, hi) seconds after the recording starts within which the
    # action must start; None for version 1 tokens (only the order is checked).
    windows: tuple[tuple[float, float], ...] | None = None

    @property
    def instructions(self) -> list[str]:
        """The instruction sentence for each action, in order."""
        return [INSTRUCTIONS[Action(a)] for a in self.actions]

    def to_payload(self) -> dict:
        p = {
            "v": self.version,
            "kid": self.kid,
            "sid": self.session_id,
            "nonce": self.nonce,
            "account": self.account,
            "actions": list(self.actions),
            "iat": self.issued_at,
            "exp": self.expires_at,
        }
        if self.windows is not None:
            p["win"] = [[lo, hi] for lo, hi in self.windows]
        return p

    @classmethod
    def from_payload(cls, p: object) -> ChallengeClaims:
        """Strictly validated claims from a decoded payload; :class:`TokenInvalidError` for
        anything unexpected (extra or missing fields, wrong types, unknown actions)."""
        if not isinstance(p, dict) or "v" not in p:
            raise TokenInvalidError(detail="payload fields")
        if type(p["v"]) is not int or p["v"] not in (TOKEN_VERSION, TIMED_TOKEN_VERSION):
            raise TokenInvalidError(detail=f"unsupported version {p['v']!r}")
        timed = p["v"] == TIMED_TOKEN_VERSION
        if set(p) != (_PAYLOAD_KEYS | {"win"} if timed else _PAYLOAD_KEYS):
            raise TokenInvalidError(detail="payload fields")
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
        windows = _windows(p["win"], len(actions)) if timed else None
        return cls(
            session_id=p["sid"],
            nonce=p["nonce"],
            account=account,
            actions=tuple(actions),
            issued_at=p["iat"],
            expires_at=p["exp"],
            kid=p["kid"],
            version=p["v"],
            windows=windows,
        )


def _windows(raw: object, steps: int) -> tuple[tuple[float, float], ...]:
    """Validated step windows: one ``[lo, hi]`` per action, ``0 <= lo < hi <= 600``, in
    order (each starts no earlier than the previous one)."""
    if not isinstance(raw, list) or len(raw) != steps:
        raise TokenInvalidError(detail="bad windows")
    out: list[tuple[float, float]] = []
    for w in raw:
        if (
            not isinstance(w, list)
            or len(w) != 2
            or not all(type(x) in (int, float) and math.isfinite(x) for x in w)
            or not 0 <= w[0] < w[1] <= MAX_WINDOW_S
            or (out and w[0] < out[-1][0])
        ):
            raise TokenInvalidError(detail="bad windows")
        out.append((float(w[0]), float(w[1])))
    return tuple(out)


@dataclass(frozen=True)
class StepTiming:
    """When a timed challenge's steps happen, in seconds after the recording starts.

    The page shows "get ready" for ``lead_s``, then step ``i`` at ``lead_s + i * step_s``
    for ``step_s`` seconds. Its action must start between ``min_reaction_s`` and
    ``max_reaction_s`` after the step is shown: 0.2 s is about the fastest simple visual
    reaction, and 3 s leaves time to read the instruction (the same figures as the live
    session, :class:`liveness.stream.StreamConfig`).
    """

    lead_s: float = 3.0
    step_s: float = 4.0
    min_reaction_s: float = 0.2
    max_reaction_s: float = 3.0

    def windows(self, steps: int) -> tuple[tuple[float, float], ...]:
        return tuple(
            (
                round(self.lead_s + i * self.step_s + self.min_reaction_s, 3),
                round(self.lead_s + i * self.step_s + self.max_reaction_s, 3),
            )
            for i in range(steps)
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
    windows: list[list[float]] | None = None  # timed tokens: per step [lo, hi] seconds

    def to_dict(self) -> dict:
        """JSON-ready form for an API response."""
        d = {
            "token": self.token,
            "session_id": self.session_id,
            "actions": list(self.actions),
            "instructions": list(self.instructions),
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }
        if self.windows is not None:
            d["windows"] = [list(w) for w in self.windows]
        return d


def draw_actions(count: int = 3, exclude: Iterable[str | Action] = ()) -> list[Action]:
    """``count`` actions drawn with :mod:`secrets`, never the same one twice in a row and never
    one in ``exclude`` (for people who cannot do some actions, e.g. turn their head).
    Every sequence contains a head movement (turn, or look up / down) unless all four are
    excluded.

    The same action may come back later in the sequence (blink, smile, blink): that keeps
    more sequences possible, so a video recorded in advance is less likely to fit.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ACTIONS:
        raise InputError(f"actions must be an integer from 1 to {MAX_ACTIONS}, not {count!r}")
    try:
        excluded = {Action(a) for a in exclude}
    except ValueError as e:
        # A typo in an accessibility policy must not silently leave the action in.
        raise InputError(f"unknown action in exclude: {e}") from None
    allowed = [a for a in Action if a not in excluded]
    if not allowed or (count > 1 and len(allowed) < 2):
        raise InputError(
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
    timed: bool | StepTiming = False,
) -> IssuedChallenge:
    """Draw a challenge, record its session in ``store`` and return the signed token.

    ``timed`` (True or a :class:`StepTiming`) issues a version 2 token whose steps each have
    a time window after the start of the recording (``IssuedChallenge.windows``).

    ``account`` binds the token to an account (needed for rate limiting; tokens without one
    are not rate limited). An account blocked after too many failed attempts gets no new
    session: :class:`RateLimitedError` says how long to wait. ``ttl`` is the lifetime in
    seconds; it should cover reading the instructions and recording, and little more. Times
    are UTC epoch seconds.
    """
    if account is not None and (
        not isinstance(account, str) or not 0 < len(account) <= MAX_ACCOUNT_CHARS
    ):
        raise InputError(f"account must be a non-empty string of at most {MAX_ACCOUNT_CHARS}")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL:
        raise InputError(f"ttl must be an integer from 1 to {MAX_TTL} seconds, not {ttl!r}")
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
    if timed:
        timing = timed if isinstance(timed, StepTiming) else StepTiming()
        claims = dataclasses.replace(
            claims, version=TIMED_TOKEN_VERSION, windows=timing.windows(len(seq))
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
        windows=None if claims.windows is None else [list(w) for w in claims.windows],
    )


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
        raise InputError("video_digest must be a SHA-256 hex digest (see video_digest())")
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
    # A liveness.fingerprint.FingerprintIndex: judge video reuse on the decoded frames too,
    # so that a re-encoded, trimmed or byte-changed copy is refused as VIDEO_REUSED.
    fingerprints: object | None = None

    def issue(self, **kwargs) -> IssuedChallenge:
        """:func:`issue_challenge` with this gate's keyring and store."""
        return issue_challenge(self.keyring, self.store, **kwargs)

    def begin(
        self,
        token: str,
        video_digest: str,
        now: float | None = None,
        *,
        content: Iterable | None = None,
    ) -> ChallengeClaims:
        """:func:`begin_verification` with this gate's keyring and store; then, with
        ``fingerprints`` and the decoded frames as ``content``, the content check: a video
        whose frames were seen before raises :class:`VideoReusedError` (the session is
        consumed and the failure counted, as for a repeated digest)."""
        now = time.time() if now is None else now
        claims = begin_verification(self.keyring, self.store, token, video_digest, now)
        if content is not None and self.fingerprints is not None:
            fp = self.fingerprints.fingerprint(content)
            if not self.fingerprints.check_and_add(fp, now):
                if claims.account is not None:
                    self.store.record_failure(claims.account, now)
                raise VideoReusedError(detail="content fingerprint seen before")
        return claims

    def check(self, claims: ChallengeClaims, events, duration_s: float):
        """Whether the recording did the token's actions, in order (and in time, for timed
        tokens): :func:`liveness.challenges.check_challenge`, a ``ChallengeCheck``."""
        from .challenges import check_challenge

        return check_challenge(claims, events, duration_s)

    def record_failure(self, claims: ChallengeClaims, now: float | None = None) -> None:
        """Count a rejected attempt against the token's account (no-op without one)."""
        if claims.account is not None:
            self.store.record_failure(claims.account, time.time() if now is None else now)
