"""The live check page in a real browser: headless Chromium (Debian's package) driven by
Playwright, Chromium's fake camera playing a shared talking-head clip, against the service
under uvicorn with the real models. The clip was recorded long before the server chose its
prompts and colours, so it cannot follow them: the page shows a refusal naming the step."""

from __future__ import annotations

import threading
import time

import cv2
import pytest
from media import frame_at
from test_recovery_browser import free_port, require_chromium, write_y4m

from examples.recovery_service import ServiceConfig, create_app
from liveness.sessions import Keyring

CLIP = "videos/talking_head_wda_1.mp4"


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, data_dir):
    import uvicorn

    tmp = tmp_path_factory.mktemp("live-browser")
    app = create_app(
        ServiceConfig(db=tmp / "recovery.sqlite3", model_dir=model_dir),
        keyring=Keyring.single(b"live-browser-test-key" * 2),
        operator_key="op-live-browser-4RkW8zQ2nTc6Yb3M",
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


def test_fake_camera_cannot_follow_live_prompts_and_is_refused_naming_the_step(
    server, data_dir, tmp_path
):
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    base, service = server
    y4m = tmp_path / "camera.y4m"
    write_y4m(data_dir / CLIP, y4m, seconds=8.0)
    args = [
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
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 760, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/")
            page.click("a[href='/live']")  # linked from the capture page
            page.focus("#account")
            page.keyboard.type("wda")
            page.keyboard.press("Enter")
            # the server's colours fill the screen, then its first instruction appears
            expect(page.locator("#light")).to_be_visible(timeout=20_000)
            color = page.eval_on_selector("#light", "e => getComputedStyle(e).backgroundColor")
            assert color.startswith("rgb("), color
            # (by the time it is checked, a quick step may already read "Step 1: done")
            expect(page.locator("#prompt-text[data-action]")).to_have_count(1, timeout=20_000)
            assert page.inner_text("#prompt-step").startswith("Step ")
            expect(page.locator("#live")).not_to_be_empty()
            result = page.locator("#step-result")
            expect(result).to_be_visible(timeout=60_000)
            decision = page.get_attribute("#result-decision", "data-decision")
            codes = [
                li.get_attribute("data-code") for li in page.locator("#result-reasons li").all()
            ]
            texts = page.locator("#result-reasons li").all_inner_texts()
            page.screenshot(path=str(tmp_path / "live-result.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()

    assert decision == "reject", (decision, codes, texts)
    assert "SCREEN_LIGHT_NOT_REFLECTED" in codes, codes
    step_reasons = [t for c, t in zip(codes, texts, strict=True) if c.startswith("CHALLENGE")]
    assert any("step" in t and "of 3" in t for t in step_reasons), texts
    entry = [e for e in service.audit_entries() if e["event"] == "decision"][-1]
    assert entry["live"] is True and entry["decision"] == "reject"
    assert entry["schedule"]["steps"][0]["prompt_at"] is not None
