"""Drawing and issuing challenges: random actions (always with a head movement)."""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..actions import Action
from ..errors import InputError
from ..stores import SessionStore
from .keys import Keyring
from .tokens import (
    MAX_ACCOUNT_CHARS,
    MAX_ACTIONS,
    MAX_TTL,
    TIMED_TOKEN_VERSION,
    ChallengeClaims,
    StepTiming,
    encode_token,
)


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
