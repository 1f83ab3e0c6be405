"""liveness: is the person in a short selfie video live, present now, and the same person as
a stored reference photo?

    >>> import liveness
    >>> with liveness.Verifier(model_dir) as v:          # doctest: +SKIP
    ...     result = v.verify("selfie.mp4", "reference.jpg")
    ...     print(result.decision, [r.code for r in result.reasons])
"""

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
from .quality import QualityThresholds
from .reasons import MESSAGES, Reason, ReasonCode
from .result import VerificationResult
from .verify import Reference, ReferenceUnusableError, Verifier, VerifierConfig
from .video import VideoLimits, load_video

__version__ = "0.1.0"

__all__ = [
    "MESSAGES",
    "ImageDecodeError",
    "InputError",
    "LivenessError",
    "MatchCalibration",
    "ModelChecksumError",
    "ModelNotFoundError",
    "Policy",
    "QualityThresholds",
    "Reason",
    "ReasonCode",
    "Reference",
    "ReferenceUnusableError",
    "SetupError",
    "VerificationResult",
    "Verifier",
    "VerifierConfig",
    "VideoDecodeError",
    "VideoLimitError",
    "VideoLimits",
    "load_video",
]
