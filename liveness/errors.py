"""Typed errors.

Every failure the library raises is a :class:`LivenessError`. Problems with what the caller
passed in are :class:`InputError` (the CLI exits with status 2 for them); problems with the
installation (a missing or corrupt model) are :class:`SetupError`. Problems with the *face*
in an otherwise readable video are not errors: they end in a ``reject`` or ``review`` result
with reason codes (see :mod:`liveness.decision`).
"""

from __future__ import annotations


class LivenessError(Exception):
    """Base class of every error raised by the library."""


class InputError(LivenessError, ValueError):
    """The caller's input cannot be used (wrong type, corrupt, empty, over a limit)."""


class VideoDecodeError(InputError):
    """The video could not be opened or decoded, or holds no frames."""


class VideoLimitError(InputError):
    """The video is over one of the configured limits (size, duration, pixels, frames)."""


class ImageDecodeError(InputError):
    """The reference image could not be read."""


class SetupError(LivenessError, RuntimeError):
    """The installation is incomplete: a model is missing, corrupt or cannot be loaded."""


class ModelNotFoundError(SetupError, FileNotFoundError):
    """No file for a registered model was found in any of the places searched."""


class ModelChecksumError(SetupError):
    """A model file was found but its SHA-256 does not match the registry."""
