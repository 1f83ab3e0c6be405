"""The live check over the service's WebSocket, in real time, with the real models: a real
live clip answering the prompts with the screen's light passes; without the light it fails;
tokens are checked as for uploads; the audit log records the prompt schedule."""

from __future__ import annotations

import queue
import secrets
import threading
import time

import cv2
import pytest
from fastapi.testclient import TestClient
from media import frame_at

from benchmarks.stream import Client, load_source
from examples.recovery_service import ServiceConfig, create_app
from liveness import Verifier
from liveness.sessions import Keyring

HEAD_POSE = "videos-wild/AlaaAElshafei__Head-Pose-Estimation__test_video.mp4"


@pytest.fixture(scope="module")
def verifier(model_dir):
    with Verifier(model_dir) as v:
        yield v


@pytest.fixture(scope="module")
def app(tmp_path_factory, verifier, data_dir):
    tmp = tmp_path_factory.mktemp("live-service")
    # 2 steps: the clip has one right and one left turn to answer with
    application = create_app(
        ServiceConfig(db=tmp / "recovery.sqlite3", actions=2),
        verifier=verifier,
        keyring=Keyring.single(secrets.token_bytes(32)),
        operator_key=secrets.token_urlsafe(24),
    )
    with TestClient(application) as client:
        ok, png = cv2.imencode(".png", frame_at(data_dir / HEAD_POSE, 2.0))
        client.app.state.service.enroll("hijab", png.tobytes(), "image/png")
        yield client


@pytest.fixture(scope="module")
def source(verifier, data_dir):
    return load_source(data_dir / HEAD_POSE, verifier)


def run_live(client: TestClient, player: Client, fps: float = 10.0):
    """Start a recovery, stream ``player`` 's frames in real time; the messages and result."""
    started = client.post("/recoveries", json={"account": "hijab"}).json()
    inbox: queue.Queue = queue.Queue()
    messages = []
    with client.websocket_connect(f"/recoveries/{started['recovery_id']}/live") as ws:
        ws.send_json({"token": started["token"], "mirrored": False})

        def receive():
            while True:
                m = ws.receive_json()
                inbox.put(m)
                if m["type"] == "result":
                    return

        reader = threading.Thread(target=receive, daemon=True)
        reader.start()
        result = None
        deadline = time.monotonic() + 60
        next_t = time.monotonic()
        while result is None and time.monotonic() < deadline:
            while not inbox.empty():
                m = inbox.get()
                messages.append(m)
                if m["type"] == "result":
                    result = m
                elif m["type"] in ("light", "prompt", "seen"):
                    player.on_message(_Msg(m), None)
            if result is None and messages and messages[0]["type"] == "ready":
                if not any(m["type"] == "end" for m in messages):
                    ok, jpg = cv2.imencode(".jpg", player.frame(), [cv2.IMWRITE_JPEG_QUALITY, 85])
                    ws.send_bytes(jpg.tobytes())
            next_t += 1 / fps
            time.sleep(max(0.0, next_t - time.monotonic()))
        reader.join(timeout=10)
    return started, messages, result


class _Msg:
    def __init__(self, d):
        self.type = d["type"]
        self.rgb = tuple(d["rgb"]) if d.get("rgb") else None
        self.action = d.get("action")


def _draw_turns(monkeypatch):
    """The server draws its steps with liveness.sessions.draw_actions; here the clip can only
    turn right then left, so the draw is fixed (the pauses and colours stay random)."""
    import liveness.stream as stream
    from liveness.actions import Action

    monkeypatch.setattr(
        stream, "draw_actions", lambda n, exclude=(): [Action.TURN_RIGHT, Action.TURN_LEFT]
    )


def test_live_clip_with_screen_light_over_the_websocket_is_accepted(app, source, monkeypatch):
    _draw_turns(monkeypatch)
    started, messages, result = run_live(app, Client(source))
    assert result is not None, messages
    assert result["decision"] == "accept", result
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "ready" and "light" in kinds and kinds.count("prompt") == 2
    status = app.get(
        f"/recoveries/{started['recovery_id']}",
        headers={"Authorization": f"Bearer {started['token']}"},
    ).json()
    assert status["status"] == "done" and status["decision"] == "accept"
    entry = [e for e in app.app.state.service.audit_entries() if e["event"] == "decision"][-1]
    assert entry["live"] is True and entry["recovery_id"] == started["recovery_id"]
    steps = entry["schedule"]["steps"]
    assert [s["action"] for s in steps] == ["turn_right", "turn_left"]
    for s in steps:  # prompt sent, then the response began within a human reaction time
        assert s["prompt_at"] + 0.2 <= s["response_start"] <= s["prompt_at"] + 3.0
    assert len(entry["schedule"]["light"]) >= 10 and entry["screen_light"]["followed"]


def test_same_frames_without_the_light_are_refused(app, source, monkeypatch):
    _draw_turns(monkeypatch)
    _, _, result = run_live(app, Client(source, light=0.0))
    assert result["decision"] == "reject"
    assert "SCREEN_LIGHT_NOT_REFLECTED" in [r["code"] for r in result["reasons"]]


def test_tokens_are_checked_and_a_recovery_streams_once(app):
    started = app.post("/recoveries", json={"account": "hijab"}).json()
    url = f"/recoveries/{started['recovery_id']}/live"
    with app.websocket_connect(url) as ws:
        ws.send_json({"token": started["token"] + "x"})
        assert ws.receive_json()["reasons"][0]["code"] == "TOKEN_INVALID"
    with app.websocket_connect(url) as ws:
        ws.send_json({"token": started["token"]})
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(b"not a jpeg")  # a bad frame ends the session: refused, not a crash
        while (m := ws.receive_json())["type"] != "result":
            pass
        assert m["decision"] == "reject"
    with app.websocket_connect(url) as ws:
        ws.send_json({"token": started["token"]})
        assert ws.receive_json()["reasons"][0]["code"] == "SESSION_ALREADY_USED"
    with app.websocket_connect(url) as ws:
        ws.send_text("{not json")
        assert ws.receive_json()["reasons"][0]["code"] == "TOKEN_INVALID"
