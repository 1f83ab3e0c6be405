"""Reason codes: stable strings, each with a sentence the person can act on.

Codes never change once released (integrators key on them); messages may be improved.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal


class _StrEnum(str, Enum):
    """A ``str`` enum that prints, formats and serialises as its value, so that
    ``result.decision == "accept"``, ``f"{result.decision}"`` and JSON all see the plain string."""

    __str__ = str.__str__
    __format__ = str.__format__


class Outcome(_StrEnum):
    """What a verification decides (``VerificationResult.decision``)."""

    ACCEPT = "accept"
    REVIEW = "review"
    REJECT = "reject"


class Severity(_StrEnum):
    """What a reason blocks: acceptance as a ``reject`` or as a ``review``."""

    REJECT = "reject"
    REVIEW = "review"


OutcomeName = Literal["accept", "review", "reject"]
SeverityName = Literal["reject", "review"]


class ReasonCode(str, Enum):
    """Why a verification was not accepted (or what was noticed on the way)."""

    NO_FACE = "NO_FACE"
    FACE_LOST = "FACE_LOST"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    SUBJECT_CHANGED = "SUBJECT_CHANGED"
    LOW_QUALITY_DARK = "LOW_QUALITY_DARK"
    LOW_QUALITY_BRIGHT = "LOW_QUALITY_BRIGHT"
    LOW_QUALITY_BLUR = "LOW_QUALITY_BLUR"
    FACE_TOO_SMALL = "FACE_TOO_SMALL"
    POSE_NOT_FRONTAL = "POSE_NOT_FRONTAL"
    FACE_MISMATCH = "FACE_MISMATCH"
    MATCH_UNCERTAIN = "MATCH_UNCERTAIN"
    PRESENTATION_ATTACK_SUSPECTED = "PRESENTATION_ATTACK_SUSPECTED"
    LIVENESS_UNCERTAIN = "LIVENESS_UNCERTAIN"
    REFERENCE_UNUSABLE = "REFERENCE_UNUSABLE"
    CHALLENGE_NOT_COMPLETED = "CHALLENGE_NOT_COMPLETED"
    CHALLENGE_OUT_OF_ORDER = "CHALLENGE_OUT_OF_ORDER"
    CHALLENGE_MISSING = "CHALLENGE_MISSING"
    SESSION_EXPIRED = "SESSION_EXPIRED"
    SESSION_ALREADY_USED = "SESSION_ALREADY_USED"
    TOKEN_INVALID = "TOKEN_INVALID"
    VIDEO_REUSED = "VIDEO_REUSED"
    RATE_LIMITED = "RATE_LIMITED"
    CHALLENGE_OUT_OF_TIME = "CHALLENGE_OUT_OF_TIME"
    CHALLENGE_EXTRA_ACTIONS = "CHALLENGE_EXTRA_ACTIONS"
    SCREEN_LIGHT_NOT_REFLECTED = "SCREEN_LIGHT_NOT_REFLECTED"
    FLAT_FACE = "FLAT_FACE"


MESSAGES: dict[ReasonCode, str] = {
    ReasonCode.NO_FACE: "We could not see a face. Hold the camera at arm's length, facing you, "
    "with your whole face in the frame.",
    ReasonCode.FACE_LOST: "Your face left the frame for much of the recording. Keep your whole "
    "face in view until the recording ends.",
    ReasonCode.MULTIPLE_FACES: "More than one face was in view. Record where nobody else is in "
    "the picture, and do not hold up photos.",
    ReasonCode.SUBJECT_CHANGED: "The person in the recording changed part way through. The "
    "same person must be in view for the whole recording.",
    ReasonCode.LOW_QUALITY_DARK: "The picture is too dark. Move to a brighter place or face a "
    "window or lamp.",
    ReasonCode.LOW_QUALITY_BRIGHT: "The picture is too bright. Move away from direct sunlight or "
    "turn so the light is not behind or straight on the camera.",
    ReasonCode.LOW_QUALITY_BLUR: "The picture is blurry. Hold the phone still and wipe the "
    "camera lens.",
    ReasonCode.FACE_TOO_SMALL: "Your face is too small in the picture. Hold the camera closer, "
    "so your face fills about half the frame.",
    ReasonCode.POSE_NOT_FRONTAL: "We need you looking at the camera for part of the recording. "
    "Face the camera directly between the instructions.",
    ReasonCode.FACE_MISMATCH: "The face in the recording does not match the photo on the "
    "account. If you believe this is wrong, ask for a review by staff.",
    ReasonCode.MATCH_UNCERTAIN: "We could not be sure the face matches the photo on the "
    "account. A member of staff will review it; better light and facing the camera help.",
    ReasonCode.PRESENTATION_ATTACK_SUSPECTED: "The recording looks like a photo or a screen, "
    "not a live person. Record yourself directly with your device's camera.",
    ReasonCode.LIVENESS_UNCERTAIN: "We could not be sure the recording shows a live person. "
    "A member of staff will review it; recording directly, in good light, helps.",
    ReasonCode.REFERENCE_UNUSABLE: "The photo on the account cannot be used for comparison. "
    "Contact support to update it.",
    ReasonCode.CHALLENGE_NOT_COMPLETED: "We did not see every requested action. Try again "
    "with a new set of instructions and do each one clearly.",
    ReasonCode.CHALLENGE_OUT_OF_ORDER: "The actions were not done in the order asked. Try "
    "again and follow the instructions one at a time, in order.",
    ReasonCode.CHALLENGE_MISSING: "This check needs the instructions issued for it. Start a new "
    "recovery attempt.",
    ReasonCode.SESSION_EXPIRED: "The time for this recording has run out. Start a new "
    "recovery attempt to get new instructions.",
    ReasonCode.SESSION_ALREADY_USED: "This recording session has already been used. Start a "
    "new recovery attempt to get new instructions.",
    ReasonCode.TOKEN_INVALID: "This recording session is not valid. Start a new recovery "
    "attempt from the official page.",
    ReasonCode.VIDEO_REUSED: "This recording was already submitted. Record a new video.",
    ReasonCode.RATE_LIMITED: "Too many attempts in a short time. Wait a few minutes before "
    "trying again.",
    ReasonCode.CHALLENGE_OUT_OF_TIME: "An action was done before it was asked for, or too long "
    "after. Start again and do each action as soon as it is shown, not before.",
    ReasonCode.CHALLENGE_EXTRA_ACTIONS: "The recording is full of movements that were not "
    "asked for. Start again, keep still between the instructions and do only what is shown.",
    ReasonCode.SCREEN_LIGHT_NOT_REFLECTED: "Your face did not take on the colours the screen "
    "showed. Turn the screen brightness up, hold the device about 30 cm from your face and "
    "keep your face in view while the colours flash.",
    ReasonCode.FLAT_FACE: "When the head turned, the face moved like a flat picture, not a "
    "real head. Record yourself directly, not a photo or a screen, and turn your head when "
    "asked.",
}


@dataclass(frozen=True)
class Reason:
    """One reason in a result: a stable ``code``, a ``message`` for the person, and whether
    it ``blocks`` acceptance as a reject (``"reject"``) or as a review (``"review"``)."""

    code: ReasonCode  # (a plain str only for a code read back from a newer release)
    message: str
    severity: Severity = Severity.REJECT
    detail: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))

    @classmethod
    def of(
        cls,
        code: ReasonCode,
        severity: Severity | SeverityName = Severity.REJECT,
        detail: str | None = None,
        message: str | None = None,
    ) -> Reason:
        return cls(code, message or MESSAGES[code], Severity(severity), detail)

    @classmethod
    def from_dict(cls, d: dict) -> Reason:
        """The reason as :meth:`to_dict` wrote it. A code this release does not know (written
        by a newer one) is kept as its string."""
        try:
            code = ReasonCode(d["code"])
        except ValueError:
            code = d["code"]
        return cls(code, d["message"], Severity(d.get("severity", "reject")), d.get("detail"))

    def to_dict(self) -> dict:
        code = getattr(self.code, "value", self.code)
        d = {"code": code, "message": self.message, "severity": self.severity.value}
        if self.detail:
            d["detail"] = self.detail
        return d
