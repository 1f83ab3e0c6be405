"""Timed (version 2) challenges for uploads: when the capture page shows each step.

The service issues tokens with :class:`liveness.sessions.StepTiming` windows (issue 11 item
3): step ``i``'s action must *start* inside ``windows[i]`` seconds after the recording
starts, so a pre-recorded clip doing the right actions at other times fails with
``CHALLENGE_OUT_OF_TIME``, and one full of other actions with ``CHALLENGE_EXTRA_ACTIONS``
(checked by the verifier on the video's own clock; see ``Verifier._check_challenge``).

``schedule`` tells the page when to show each step (the same figures the windows come
from); ``recording_started`` reads the page's report of when its recording started, which is
only audited: it comes from the client's clock, so it decides nothing.
"""

from __future__ import annotations

import math

from liveness.sessions import StepTiming

# The page's clock may be off by this much and still be audited as a plausible start.
CLOCK_SKEW_S = 24 * 3600.0


def schedule(timing: StepTiming, steps: int) -> list[dict]:
    """When the page shows each step, in seconds after its recording starts: ``show_at``
    (the window's start less the fastest reaction) until ``hide_at`` (the next step's
    ``show_at``), with the step's ``window`` for the action's start."""
    out = []
    for i, (lo, hi) in enumerate(timing.windows(steps)):
        show = round(timing.lead_s + i * timing.step_s, 3)
        out.append({"show_at": show, "hide_at": round(show + timing.step_s, 3), "window": [lo, hi]})
    return out


def recording_started(value: object, issued_at: float) -> float | None:
    """The page's ``recording_started`` form field (UTC epoch seconds, the client's clock) as
    seconds after the token was issued; None when absent, not a number or implausible."""
    if not isinstance(value, str) or len(value) > 32:
        return None
    try:
        started = float(value)
    except ValueError:
        return None
    offset = started - issued_at
    if not math.isfinite(offset) or abs(offset) > CLOCK_SKEW_S:
        return None
    return round(offset, 3)
