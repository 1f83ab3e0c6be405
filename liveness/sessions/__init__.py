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
5. When the verification fails because a store cannot be reached (a server restart), the
   server calls :func:`release_verification` with the attempt id it gave
   :func:`begin_verification` (:func:`new_attempt`): the same video may then begin the
   session once more, so that the person's retry is verified rather than refused
   (:func:`begin_verification`, "Resuming"). :class:`liveness.Verifier` does steps 3 to 5.

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

The package uses the standard library only (and :mod:`liveness.actions`,
:mod:`liveness.errors`), one job per module:

* :mod:`~liveness.sessions.errors`: the session errors and their reason-code strings;
* :mod:`~liveness.sessions.keys`: the :class:`Keyring` and key checks;
* :mod:`~liveness.sessions.tokens`: claims, token encoding and verification;
* :mod:`~liveness.sessions.issue`: drawing and issuing challenges;
* :mod:`~liveness.sessions.gate`: video digests, :func:`begin_verification`,
  :func:`release_verification` and :class:`ChallengeGate`.

The stores live in :mod:`liveness.stores`; they and every name above are re-exported here.
"""

from __future__ import annotations

from ..actions import INSTRUCTIONS, Action
from ..stores import MemorySessionStore, RateLimit, SessionStore, SQLiteSessionStore
from ..stores.base import StoreUnavailable
from .errors import (
    RATE_LIMITED,
    SESSION_ALREADY_USED,
    SESSION_EXPIRED,
    TOKEN_INVALID,
    VIDEO_REUSED,
    KeyConfigError,
    KeyMissingError,
    RateLimitedError,
    SessionAlreadyUsedError,
    SessionError,
    SessionExpiredError,
    TokenInvalidError,
    VideoReusedError,
)
from .gate import (
    ChallengeGate,
    begin_verification,
    new_attempt,
    release_verification,
    video_digest,
)
from .issue import IssuedChallenge, draw_actions, issue_challenge
from .keys import (
    ENV_KEY,
    ENV_KEY_ID,
    MIN_KEY_BYTES,
    Keyring,
    check_key_file_permissions,
    check_key_strength,
    key_entropy_bits,
)
from .tokens import (
    MAX_ACTIONS,
    MAX_TTL,
    TIMED_TOKEN_VERSION,
    TOKEN_VERSION,
    ChallengeClaims,
    StepTiming,
    encode_token,
    verify_token,
)

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
    "check_key_file_permissions",
    "check_key_strength",
    "key_entropy_bits",
    "MAX_ACTIONS",
    "MAX_TTL",
    "draw_actions",
    "encode_token",
    "issue_challenge",
    "new_attempt",
    "release_verification",
    "verify_token",
    "video_digest",
]
