"""The capture page in a real browser: headless Chromium (Debian's ``chromium`` package)
driven by Playwright, with a shared talking-head clip as the fake camera, against the
recovery service running with uvicorn and the real models.

The page is used the way a person with a keyboard would: type the account, Enter, Enter for
the camera, Enter to record; it shows each instruction, records with MediaRecorder, uploads,
and shows the decision with its reasons.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import pytest
from media import frame_at

from examples.recovery_service import ServiceConfig, create_app
from liveness.sessions import Keyring, StepTiming

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CLIP = "videos/talking_head_wda_1.mp4"
SCREENSHOT = Path(__file__).resolve().parents[1] / "examples/recovery_service/screenshot.png"


def write_y4m(src: Path, dst: Path, size: int = 320, seconds: float = 6.0) -> None:
    """The first ``seconds`` of ``src`` as raw YUV4MPEG2 (what Chromium's fake camera
    reads): a square centre crop scaled to ``size``, 4:2:0, 25 fps."""
    cap = cv2.VideoCapture(str(src))
    with open(dst, "wb") as out:
        out.write(f"YUV4MPEG2 W{size} H{size} F25:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(int(seconds * 25)):
            ok, img = cap.read()
            if not ok:
                break
            h, w = img.shape[:2]
            s = min(h, w)
            img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes())
    cap.release()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_chromium() -> str:
    """The browser, or a failure (never a skip: CI installs it, so missing is a fault)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's package "
            "(apt-get install -y chromium) or set CHROMIUM=/path/to/chromium",
            pytrace=False,
        )
    return CHROMIUM


def fake_camera_args(y4m: Path) -> list[str]:
    """Headless Chromium flags: no permission prompt, ``y4m`` played as the camera, no
    background traffic."""
    return [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]


@contextlib.contextmanager
def camera_page(clip: Path, tmp_path: Path, seconds: float = 6.0):
    """A page in headless Chromium whose camera plays ``seconds`` of ``clip``, and the list
    its uncaught script errors go to; the browser is closed after the block."""
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    y4m = tmp_path / "camera.y4m"
    write_y4m(clip, y4m, seconds=seconds)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=fake_camera_args(y4m)
        )
        try:
            page = browser.new_page(viewport={"width": 760, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
        finally:
            browser.close()


def wait_for_camera(page, timeout: float = 30.0) -> None:
    """Until the preview shows the camera. Polled from here: ``page.wait_for_function``
    polls with ``eval`` in the page once its first check fails, which the page's Content
    Security Policy (``default-src 'self'``) refuses."""
    end = time.monotonic() + timeout
    while not page.evaluate("document.querySelector('#preview').videoWidth > 0"):
        assert time.monotonic() < end, "the camera preview did not start"
        time.sleep(0.05)


def start_recording(page, base: str) -> None:
    """By keyboard, as the first test checks step by step: the account, the camera, then
    the recording (which the page uploads when it ends)."""
    from playwright.sync_api import expect

    page.goto(f"{base}/?fast=1")
    page.focus("#account")
    page.keyboard.type("wda")
    page.keyboard.press("Enter")
    expect(page.locator("#camera-on")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#record")).to_be_focused()
    wait_for_camera(page)
    page.keyboard.press("Enter")


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, data_dir):
    """The service on 127.0.0.1 with a free port, in a background thread."""
    import uvicorn

    tmp = tmp_path_factory.mktemp("browser-service")
    app = create_app(
        ServiceConfig(db=tmp / "recovery.sqlite3", model_dir=model_dir),
        keyring=Keyring.single(b"browser-test-key" * 2),
        operator_key="op-browser-7TqL9xZ2mWc4Vb8K",
    )
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    ok, png = cv2.imencode(".png", frame_at(data_dir / CLIP, 7.5))
    app.state.service.enroll("wda", png.tobytes(), "image/png")
    yield f"http://127.0.0.1:{port}", app.state.service
    srv.should_exit = True
    thread.join(timeout=10)


def test_capture_page_records_uploads_and_shows_the_result(server, data_dir, tmp_path):
    from playwright.sync_api import expect

    base, service = server
    with camera_page(data_dir / CLIP, tmp_path) as (page, errors):
        page.goto(f"{base}/?fast=1")

        # 1. account, by keyboard
        page.focus("#account")
        page.keyboard.type("wda")
        page.keyboard.press("Enter")
        expect(page.locator("#camera-on")).to_be_focused()

        # 2. camera: the preview is shown mirrored; focus moves to the record button
        page.keyboard.press("Enter")
        expect(page.locator("#record")).to_be_focused()
        transform = page.eval_on_selector("#preview", "v => getComputedStyle(v).transform")
        assert transform.startswith("matrix(-1"), transform
        wait_for_camera(page)

        # 3. recording: each instruction on screen and in the aria-live region
        page.keyboard.press("Enter")
        expect(page.locator("#prompt-step")).to_have_text("Step 1 of 3", timeout=10_000)
        instruction = page.inner_text("#prompt-text")
        expect(page.locator("#live")).to_contain_text(instruction)
        page.screenshot(path=str(tmp_path / "recording.png"))

        # 4. the result, in words
        result = page.locator("#step-result")
        expect(result).to_be_visible(timeout=60_000)
        expect(page.locator("#h-result")).to_be_focused()
        decision = page.get_attribute("#result-decision", "data-decision")
        headline = page.inner_text("#result-decision")
        reasons = page.locator("#result-reasons li").all_inner_texts()
        status = result.get_attribute("data-status")
        shot = tmp_path / "result.png"
        page.screenshot(path=str(shot), full_page=True)
        if not SCREENSHOT.exists():
            shutil.copyfile(shot, SCREENSHOT)
        assert not errors, errors

    assert status == "200", (status, headline)
    assert decision in ("accept", "review", "reject"), (decision, headline)
    assert len(headline) > 20
    # The clip cannot follow the random instructions: refused, with sentences saying why.
    assert reasons and all(len(r) > 20 for r in reasons), reasons
    assert "score" not in headline.lower()
    # The server analysed the browser's recording as unmirrored WebM.
    last = [e for e in service.audit_entries() if e["event"] == "decision"][-1]
    assert last["mirrored"] is False and last["decision"] == decision
    # The challenge was timed (v2): the page showed the steps on the server's schedule and
    # reported when its recording started; the fake camera's talking head, which does not
    # follow the steps, fails the challenge (not in time, not done, or other actions).
    assert last["windows"] == [list(w) for w in StepTiming().windows(3)]
    assert 0 <= last["recording_started_after_issue_s"] < 30
    challenge = {
        "CHALLENGE_NOT_COMPLETED",
        "CHALLENGE_OUT_OF_TIME",
        "CHALLENGE_EXTRA_ACTIONS",
        "CHALLENGE_OUT_OF_ORDER",
    }
    assert decision == "reject" and challenge & set(last["reason_codes"]), last["reason_codes"]


def test_the_page_sends_the_same_recording_again_after_a_503(
    server, data_dir, tmp_path, monkeypatch
):
    """The session store commits the token's consumption and the connection breaks before
    its answer (a database restart): the service answers 503 with Retry-After. The page
    says it will try again, sends the same recording after that wait, and the server
    resumes the session: the person gets their result, not SESSION_ALREADY_USED, and the
    recovery has one decision."""
    from playwright.sync_api import expect

    from liveness.stores import StoreUnavailable

    base, service = server
    consume, calls = service.store.consume, []

    def consumed_then_lost(*a):
        calls.append(a)
        consume(*a)
        if len(calls) == 1:
            raise StoreUnavailable("terminating connection due to administrator command")

    monkeypatch.setattr(service.store, "consume", consumed_then_lost)
    before = len([e for e in service.audit_entries() if e["event"] == "decision"])
    with camera_page(data_dir / CLIP, tmp_path) as (page, errors):
        start_recording(page, base)
        expect(page.locator("#upload-status")).to_contain_text("Trying again", timeout=60_000)
        expect(page.locator("#live")).to_contain_text("Trying again")
        result = page.locator("#step-result")
        expect(result).to_be_visible(timeout=60_000)
        status = result.get_attribute("data-status")
        codes = page.locator("#result-reasons li").evaluate_all(
            "items => items.map(li => li.dataset.code)"
        )
        assert not errors, errors
    assert status == "200", (status, codes)
    assert "SESSION_ALREADY_USED" not in codes and codes, codes
    # The same upload twice: the same session, the same digest, two attempts.
    assert len(calls) == 2 and calls[0][0] == calls[1][0] and calls[0][2] == calls[1][2]
    assert calls[0][3] != calls[1][3]
    decisions = [e for e in service.audit_entries() if e["event"] == "decision"]
    assert len(decisions) == before + 1


def test_a_lost_answer_is_read_back_instead_of_refused(server, data_dir, tmp_path):
    """The upload reaches the server and is verified, but the connection breaks before the
    answer arrives (a mobile network): the page asks the server for the recovery's result
    with its token and shows it. Before, the page said the video could not be sent, and
    sending it again would have been refused as SESSION_ALREADY_USED."""
    from playwright.sync_api import expect

    base, service = server
    before = [e for e in service.audit_entries() if e["event"] == "decision"]
    uploads, reads = [], []

    def answer_lost(route):
        uploads.append(route.request.url)
        route.fetch(timeout=120_000)  # the server receives and verifies the upload...
        route.abort("connectionreset")  # ...and its answer never reaches the page

    with camera_page(data_dir / CLIP, tmp_path) as (page, errors):
        page.route("**/recoveries/*/video", answer_lost)

        def note_read(request) -> None:
            if request.method == "GET" and "/recoveries/" in request.url:
                reads.append(request.url)

        page.on("request", note_read)
        start_recording(page, base)
        result = page.locator("#step-result")
        expect(result).to_be_visible(timeout=120_000)
        decision = page.get_attribute("#result-decision", "data-decision")
        codes = page.locator("#result-reasons li").evaluate_all(
            "items => items.map(li => li.dataset.code)"
        )
        assert not errors, errors
    decisions = [e for e in service.audit_entries() if e["event"] == "decision"]
    assert len(decisions) == len(before) + 1  # verified once
    assert len(uploads) == 1 and reads, (uploads, reads)
    # What the page shows is what the server decided, with its reasons.
    assert decision == decisions[-1]["decision"], (decision, decisions[-1])
    assert codes and set(codes) <= set(decisions[-1]["reason_codes"]), codes
    assert "SESSION_ALREADY_USED" not in codes
