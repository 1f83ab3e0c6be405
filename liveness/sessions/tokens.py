"""Challenge claims and signed tokens (versions 1 and 2, timed steps): encode and verify."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass

from ..actions import INSTRUCTIONS, Action
from .errors import SessionExpiredError, TokenInvalidError
from .keys import Keyring

MAX_ACTIONS = 10
MAX_TTL = 3600

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
