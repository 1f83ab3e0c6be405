"""Before and after the analysis: video digests, :func:`begin_verification`,
:func:`release_verification`, :class:`ChallengeGate`."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import InputError
from ..stores import SessionStore, StoreUnavailable
from ..stores.base import DIGEST_RE as _DIGEST_RE
from .errors import SessionAlreadyUsedError, TokenInvalidError, VideoReusedError
from .issue import IssuedChallenge, issue_challenge
from .keys import Keyring
from .tokens import DEFAULT_LEEWAY, ChallengeClaims, verify_token


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
    attempt: str | None = None,
) -> ChallengeClaims:
    """All checks before a submitted video is analysed; returns the claims whose actions the
    video must show. Raises a :class:`SessionError` at the first check that fails:

    1. token well formed and signed by a key in ``keyring`` -> ``TOKEN_INVALID``
    2. not expired -> ``SESSION_EXPIRED``. Checked from the signed token before the store,
       so that a token whose session was already purged still gets the right message.
    3. issued by ``store`` -> ``TOKEN_INVALID``
    4. account not rate limited -> ``RATE_LIMITED`` (the session stays unused)
    5. session consumed atomically -> ``SESSION_ALREADY_USED`` for every request but the first
       (but see "Resuming" below)
    6. ``video_digest`` (SHA-256 hex of the video bytes, :func:`video_digest`) never seen
       before -> ``VIDEO_REUSED``. After consumption on purpose: a replayed video burns the
       session too.

    Failures at 5 and 6 mean someone is replaying a genuine token or video, so they count as
    failures for the account's rate limit. The caller must record a failure itself when the
    analysis later rejects the video (``store.record_failure(claims.account, now)``).

    **Resuming.** The session is consumed *by this video*, in this ``attempt`` (a random id
    the caller chose for this try, :func:`new_attempt`). When the verification then fails
    because a store could not be reached (:class:`~liveness.stores.StoreUnavailable`: a
    server restart, a commit whose answer was lost), the caller calls
    :func:`release_verification` with that attempt, and the same bytes may begin the session
    once more: the person's retry is verified, not refused as ``SESSION_ALREADY_USED`` for
    the infrastructure's fault. Nothing else changes: without a release the session stays
    used, even by the same video (a duplicate upload sent while the first is analysed is
    refused), another video is always refused, a resumed session is used again, and an
    attempt whose consumption did not take effect (refused, or never reached) releases
    nothing. Without ``attempt`` the session can never be resumed.
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
        store.consume(claims.session_id, now, video_digest.lower(), attempt)
        if not store.record_video_digest(video_digest.lower(), now, claims.session_id):
            raise VideoReusedError(detail=f"digest {video_digest[:12]}... seen before")
    except (SessionAlreadyUsedError, VideoReusedError):
        if claims.account is not None:
            store.record_failure(claims.account, now)
        raise
    return claims


def new_attempt() -> str:
    """A random id for one try at verifying a session (``attempt`` of
    :func:`begin_verification` and :func:`release_verification`)."""
    return secrets.token_hex(16)


def release_verification(
    store: SessionStore, session_id: str, attempt: str, now: float | None = None
) -> None:
    """The verification ``attempt`` that :func:`begin_verification` started for
    ``session_id`` ended without a result, because a store could not be reached: let the
    same video begin it once more (see "Resuming" there). Call it only then, never after a
    result was given. Nothing happens unless that attempt consumed the session (so a call
    whose consumption was refused, or never reached the store, releases nothing). Raises
    :class:`~liveness.stores.StoreUnavailable` like any store call; a server retries it for
    as long as it retries its own writes."""
    store.release(session_id, attempt, time.time() if now is None else now)


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
        attempt: str | None = None,
    ) -> ChallengeClaims:
        """:func:`begin_verification` (in ``attempt``) with this gate's keyring and store;
        then, with ``fingerprints`` and the decoded frames as ``content``, the content
        check: a video whose frames were seen before raises :class:`VideoReusedError` (the
        session is consumed and the failure counted, as for a repeated digest). Frames kept
        for this same session (a resumed session's first try) do not count."""
        now = time.time() if now is None else now
        claims = begin_verification(
            self.keyring, self.store, token, video_digest, now, attempt=attempt
        )
        if content is not None and self.fingerprints is not None:
            fp = self.fingerprints.fingerprint(content)
            if not self.fingerprints.check_and_add(fp, now, session=claims.session_id):
                if claims.account is not None:
                    self.store.record_failure(claims.account, now)
                raise VideoReusedError(detail="content fingerprint seen before")
        return claims

    def check(self, claims: ChallengeClaims, events, duration_s: float):
        """Whether the recording did the token's actions, in order (and in time, for timed
        tokens): :func:`liveness.challenges.check_challenge`, a ``ChallengeCheck``."""
        from ..challenges import check_challenge

        return check_challenge(claims, events, duration_s)

    def record_failure(self, claims: ChallengeClaims, now: float | None = None) -> None:
        """Count a rejected attempt against the token's account (no-op without one)."""
        if claims.account is not None:
            self.store.record_failure(claims.account, time.time() if now is None else now)

    def release(self, session_id: str, attempt: str, now: float | None = None) -> bool:
        """:func:`release_verification` with this gate's store, once; False (nothing
        recorded) if the store is still unavailable."""
        try:
            release_verification(self.store, session_id, attempt, now)
        except StoreUnavailable:
            return False
        return True
