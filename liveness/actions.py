"""The challenge actions: their names, the instruction shown for each, and the phrase used
when one was not seen. Shared by the session protocol and the detectors.

Directions are the person's own: ``turn_left`` means the person turns towards *their* left,
whatever the preview shows. In an unmirrored front-camera frame (what the camera records)
the nose then moves towards the right edge of the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum


class Action(str, Enum):
    """One thing the person is asked to do in the video; values are the plain strings."""

    BLINK = "blink"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    LOOK_UP = "look_up"
    LOOK_DOWN = "look_down"
    SMILE = "smile"
    OPEN_MOUTH = "open_mouth"


ACTIONS: tuple[str, ...] = tuple(a.value for a in Action)

INSTRUCTIONS: Mapping[Action, str] = {
    Action.BLINK: "Blink your eyes",
    Action.TURN_LEFT: "Turn your head to your left",
    Action.TURN_RIGHT: "Turn your head to your right",
    Action.LOOK_UP: "Look up",
    Action.LOOK_DOWN: "Look down",
    Action.SMILE: "Smile",
    Action.OPEN_MOUTH: "Open your mouth",
}

# What to tell the person when a step is missing: "We did not see you <phrase>".
ACTION_PHRASES: Mapping[str, str] = {
    "blink": "blink",
    "turn_left": "turn your head to your left",
    "turn_right": "turn your head to your right",
    "look_up": "look up",
    "look_down": "look down",
    "smile": "smile",
    "open_mouth": "open your mouth",
}
