"""Issue 11 item 3 in the recovery service: uploads get timed (v2) challenges, the page is
told when to show each step, and a recording whose actions happen at other times than the
steps were shown fails with ``CHALLENGE_OUT_OF_TIME`` (real models, a clip rendered from one
photo with known action times)."""

from __future__ import annotations

import base64
import json
import secrets
import time

import cv2
import pytest
from fastapi.testclient import TestClient

from benchmarks.render import load_ground_truth, render_live
from examples.recovery_service import ServiceConfig, create_app
from examples.recovery_service.timed import recording_started, schedule
from liveness import Verifier
from liveness.actions import Action
from liveness.sessions import Keyring, StepTiming

PHOTO = "faces/deepface/img33.jpg"
OPERATOR_KEY = "op-Timed-4Vx9Lq2Tz7Kw3Mb8"
CHALLENGE_CODES = {
    "CHALLENGE_NOT_COMPLETED",
    "CHALLENGE_OUT_OF_TIME",
    "CHALLENGE_OUT_OF_ORDER",
    "CHALLENGE_EXTRA_ACTIONS",
}


@pytest.fixture(scope="module")
def verifier(model_dir):
    with Verifier(model_dir) as v:
        yield v


@pytest.fixture(scope="module")
def clip(tmp_path_factory, data_dir, model_dir):
    """A 'pre-recorded' clip: turn left, then blink, at known times (its ground truth)."""
    out = tmp_path_factory.mktemp("timed-upload") / "lb.mp4"
    kw = dict(size=(360, 480), fps=15, seed=3, angle_deg=30, model_dir=model_dir)
    return render_live(data_dir / PHOTO, "turn_left,blink", out, **kw)


def service(tmp_path, verifier, data_dir, timing, monkeypatch) -> TestClient:
    import liveness.sessions.issue as issuing

    # The server draws its steps at random; the clip can only turn left then blink.
    monkeypatch.setattr(
        issuing, "draw_actions", lambda n, exclude=(): [Action.TURN_LEFT, Action.BLINK]
    )
    verifier.challenges = None  # each service installs its own gate
    app = create_app(
        ServiceConfig(db=tmp_path / "recovery.sqlite3", actions=2, step_timing=timing),
        verifier=verifier,
        keyring=Keyring.single(secrets.token_bytes(32)),
        operator_key=OPERATOR_KEY,
    )
    client = TestClient(app)
    client.__enter__()
    ok, png = cv2.imencode(".png", cv2.imread(str(data_dir / PHOTO)))
    app.state.service.enroll("photo", png.tobytes(), "image/png")
    return client


def attempt(client, clip, started: str | None = None) -> tuple[dict, dict]:
    started = started or f"{time.time():.3f}"  # the page's report (its clock), audited
    s = client.post("/recoveries", json={"account": "photo"}).json()
    r = client.post(
        s["upload_url"],
        data={"token": s["token"], "mirrored": "false", "recording_started": started},
        files={"video": ("clip.mp4", clip.read_bytes(), "video/mp4")},
    )
    assert r.status_code == 200, r.text
    return s, r.json()


def test_service_issues_timed_challenges_with_the_pages_schedule(
    tmp_path, verifier, data_dir, clip, monkeypatch
):
    client = service(tmp_path, verifier, data_dir, StepTiming(), monkeypatch)
    try:
        s, body = attempt(client, clip)
    finally:
        client.__exit__(None, None, None)
        verifier.challenges = None
    payload = json.loads(base64.urlsafe_b64decode(s["token"].split(".")[0] + "=="))
    assert payload["v"] == 2 and payload["win"] == [[3.2, 6.0], [7.2, 10.0]]
    assert s["schedule"] == schedule(StepTiming(), 2)
    assert [x["show_at"] for x in s["schedule"]] == [3.0, 7.0]
    # The clip turns and blinks in its first 4 seconds, before either step was shown:
    # the right actions at other times are refused, saying so.
    truth = load_ground_truth(clip)
    assert all(a.start < 3.0 for a in truth.actions), truth.actions
    codes = [r["code"] for r in body["reasons"]]
    assert body["decision"] == "reject" and "CHALLENGE_OUT_OF_TIME" in codes, codes
    entry = [e for e in client.app.state.service.audit_entries() if e["event"] == "decision"][-1]
    assert entry["windows"] == [[3.2, 6.0], [7.2, 10.0]]
    assert 0 <= entry["recording_started_after_issue_s"] < 60


def test_recording_that_follows_the_schedule_completes_the_challenge(
    tmp_path, verifier, data_dir, clip, monkeypatch
):
    # The same clip, for a schedule that shows each step 0.5 s before the clip does it (what
    # a person following the page would record): no challenge reason at all.
    starts = [a.start for a in load_ground_truth(clip).actions]
    timing = StepTiming(lead_s=starts[0] - 0.5, step_s=starts[1] - starts[0])
    client = service(tmp_path, verifier, data_dir, timing, monkeypatch)
    try:
        _s, body = attempt(client, clip)
    finally:
        client.__exit__(None, None, None)
        verifier.challenges = None
    codes = {r["code"] for r in body["reasons"]}
    assert not codes & CHALLENGE_CODES, codes


def test_recording_started_is_read_safely():
    assert recording_started("1700000010.25", 1700000000) == 10.25
    for bad in (None, "", "nan", "inf", "1e308", "x" * 40, "2e9", b"1700000010"):
        assert recording_started(bad, 1700000000) is None
