"""The capture page shows live hints from /capture-hints before recording (headless
Chromium, the shared talking-head clip as the fake camera; see test_recovery_browser)."""

from __future__ import annotations

from test_recovery_browser import (  # noqa: F401 (server is a fixture)
    CLIP,
    camera_page,
    server,
)


def test_hints_appear_before_recording(server, data_dir, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    base, _ = server
    with camera_page(data_dir / CLIP, tmp_path) as (page, errors):
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
