"""The capture page shows live hints from /capture-hints before recording (headless
Chromium, the shared talking-head clip as the fake camera; see test_recovery_browser)."""

from __future__ import annotations

from test_recovery_browser import (  # noqa: F401 (server is a fixture)
    CLIP,
    fake_camera_args,
    require_chromium,
    server,
    write_y4m,
)


def test_hints_appear_before_recording(server, data_dir, tmp_path):  # noqa: F811
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    base, _ = server
    y4m = tmp_path / "camera.y4m"
    write_y4m(data_dir / CLIP, y4m)
    args = fake_camera_args(y4m)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 760, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/?fast=1")
            page.fill("#account", "wda")
            page.keyboard.press("Enter")
            page.click("#camera-on")
            # A clear, centred face: the server's answer is shown as the single "ok" hint.
            hint = page.locator("#hints li")
            expect(hint).to_have_count(1, timeout=15_000)
            assert hint.first.get_attribute("data-code") == "ok"
            expect(page.locator("#hints")).to_have_attribute("aria-live", "polite")
            assert not errors, errors
        finally:
            browser.close()
