"""Format versions of what the library writes and reads back later: reference templates
(:meth:`liveness.verify.Reference.to_dict`) and audit records
(:meth:`liveness.result.VerificationResult.to_dict`).

Each record carries ``format_version`` as ``"MAJOR.MINOR"``. A minor step only adds fields,
which an older release ignores; a major step changes meaning, and a release refuses a major
version newer than its own with :class:`FormatVersionError` instead of misreading it. Records
written before versions existed (no ``format_version``) are read as ``"1.0"``.
"""

from __future__ import annotations

from .errors import InputError

REFERENCE_FORMAT = "1.0"
RESULT_FORMAT = "1.0"
# What a record without a version field was written as (the 0.1.0 release).
UNVERSIONED = "1.0"


class FormatVersionError(InputError):
    """A stored record was written in a format this release cannot read."""


def parse_version(text: object) -> tuple[int, int]:
    """``"1.2"`` -> ``(1, 2)``; anything else raises :class:`FormatVersionError`."""
    if isinstance(text, str):
        parts = text.split(".")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
    raise FormatVersionError(f"format_version must be 'MAJOR.MINOR', not {text!r}")


def check_readable(record: dict, kind: str, current: str) -> tuple[int, int]:
    """The record's version, after checking that this release (writing ``current``) can read
    it: same or older major version. ``kind`` names the record in the error message."""
    if not isinstance(record, dict):
        raise FormatVersionError(f"a stored {kind} is a JSON object, not {type(record).__name__}")
    found = parse_version(record.get("format_version", UNVERSIONED))
    if found[0] > parse_version(current)[0]:
        raise FormatVersionError(
            f"this {kind} was written in format {found[0]}.{found[1]}, by a newer release of "
            f"liveness; this release reads format {current} and older. Upgrade liveness to "
            "read it."
        )
    return found
