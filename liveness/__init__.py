"""liveness: is the person in a short selfie video live, present now, and the same person as
a stored reference photo?

    >>> import liveness
    >>> with liveness.Verifier(model_dir) as v:          # doctest: +SKIP
    ...     result = v.verify("selfie.mp4", "reference.jpg")
    ...     print(result.decision, [r.code for r in result.reasons])
"""

from .appearance import AppearanceThresholds
from .batch import Job, JobError, JobResult, VerifierSpec, map_jobs, verify_many
from .decision import MatchCalibration, Policy
from .errors import (
    ImageDecodeError,
    InputError,
    LivenessError,
    ModelChecksumError,
    ModelNotFoundError,
    SetupError,
    VideoDecodeError,
    VideoLimitError,
)
from .formats import FormatVersionError
from .landmark_plan import LandmarkPlan
from .parts import Detector, Embedder, Landmarker, PadEnsemble, PartSpec
from .quality import QualityThresholds
from .reasons import MESSAGES, Outcome, Reason, ReasonCode, Severity
from .result import LivenessEvidence, MatchEvidence, ModelUse, VerificationResult
from .runtime import Runtime, choose_providers
from .sessions import (
    Action,
    ChallengeClaims,
    ChallengeGate,
    IssuedChallenge,
    KeyConfigError,
    KeyMissingError,
    Keyring,
    MemorySessionStore,
    RateLimit,
    RateLimitedError,
    SessionAlreadyUsedError,
    SessionError,
    SessionExpiredError,
    SessionStore,
    SQLiteSessionStore,
    TokenInvalidError,
    VideoReusedError,
    begin_verification,
    issue_challenge,
    release_verification,
    video_digest,
)
from .verify import Reference, ReferenceUnusableError, Verifier, VerifierConfig
from .video import VideoLimits, load_video

__version__ = "0.1.0"

# The public API: tests/test_public_api.py guards this list; adding a name there is a
# decision, removing one is a breaking change.
__all__ = [
    "MESSAGES",
    "AppearanceThresholds",
    "Detector",
    "Embedder",
    "Landmarker",
    "LandmarkPlan",
    "PadEnsemble",
    "PartSpec",
    "Action",
    "ChallengeClaims",
    "ChallengeGate",
    "FormatVersionError",
    "ImageDecodeError",
    "InputError",
    "IssuedChallenge",
    "Job",
    "JobError",
    "JobResult",
    "KeyConfigError",
    "KeyMissingError",
    "Keyring",
    "LivenessError",
    "LivenessEvidence",
    "MatchCalibration",
    "MatchEvidence",
    "MemorySessionStore",
    "ModelChecksumError",
    "ModelNotFoundError",
    "ModelUse",
    "Outcome",
    "Policy",
    "QualityThresholds",
    "RateLimit",
    "RateLimitedError",
    "Reason",
    "ReasonCode",
    "Reference",
    "ReferenceUnusableError",
    "Runtime",
    "SQLiteSessionStore",
    "SessionAlreadyUsedError",
    "SessionError",
    "SessionExpiredError",
    "SessionStore",
    "SetupError",
    "Severity",
    "TokenInvalidError",
    "VerificationResult",
    "Verifier",
    "VerifierConfig",
    "VerifierSpec",
    "VideoDecodeError",
    "VideoLimitError",
    "VideoLimits",
    "VideoReusedError",
    "begin_verification",
    "choose_providers",
    "issue_challenge",
    "load_video",
    "map_jobs",
    "release_verification",
    "verify_many",
    "video_digest",
]
