"""Session errors: a stable reason-code string and a sentence the person can act on."""

from __future__ import annotations

import math

from ..errors import LivenessError, SetupError

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
