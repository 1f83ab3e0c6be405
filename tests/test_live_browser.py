"""The live check page in a real browser: headless Chromium (Debian's package) driven by
Playwright, Chromium's fake camera playing a shared talking-head clip, against the service
under uvicorn with the real models. The clip was recorded long before the server chose its
prompts and colours, so it cannot follow them: the page shows a refusal naming the step."""

from __future__ import annotations

from test_recovery_browser import (  # noqa: F401 (server is a fixture)
    CLIP,
    camera_page,
    server,
)


def test_fake_camera_cannot_follow_live_prompts_and_is_refused_naming_the_step(
    server,  # noqa: F811 (the imported fixture)
    data_dir,
    tmp_path,
):
    from playwright.sync_api import expect

    base, service = server
    with camera_page(data_dir / CLIP, tmp_path, seconds=8.0) as (page, errors):
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
        codes = [li.get_attribute("data-code") for li in page.locator("#result-reasons li").all()]
        texts = page.locator("#result-reasons li").all_inner_texts()
        page.screenshot(path=str(tmp_path / "live-result.png"), full_page=True)
        assert not errors, errors

    assert decision == "reject", (decision, codes, texts)
    assert "SCREEN_LIGHT_NOT_REFLECTED" in codes, codes
    step_reasons = [t for c, t in zip(codes, texts, strict=True) if c.startswith("CHALLENGE")]
    assert any("step" in t and "of 3" in t for t in step_reasons), texts
    entry = [e for e in service.audit_entries() if e["event"] == "decision"][-1]
    assert entry["live"] is True and entry["decision"] == "reject"
    assert entry["schedule"]["steps"][0]["prompt_at"] is not None


def test_the_live_page_reconnects_after_the_database_fails_as_it_starts(
    server,  # noqa: F811 (the imported fixture)
    data_dir,
    tmp_path,
    monkeypatch,
):
    """The database fails as the recovery is claimed (after the session was consumed): the
    page is told STORE_UNAVAILABLE with retry_after, says it will try again, connects again
    with the same token, and the check runs to its normal result: not SESSION_ALREADY_USED,
    and one decision."""
    from playwright.sync_api import expect

    from liveness.stores import StoreUnavailable

    base, service = server
    claim, claims = service.db.claim, []

    def claim_once_unavailable(*a):
        claims.append(a)
        if len(claims) == 1:
            raise StoreUnavailable("terminating connection due to administrator command")
        return claim(*a)

    monkeypatch.setattr(service.db, "claim", claim_once_unavailable)
    before = len([e for e in service.audit_entries() if e["event"] == "decision"])
    with camera_page(data_dir / CLIP, tmp_path, seconds=8.0) as (page, errors):
        page.goto(f"{base}/live")
        page.focus("#account")
        page.keyboard.type("wda")
        page.keyboard.press("Enter")
        expect(page.locator("#prompt-text")).to_contain_text("Trying again", timeout=20_000)
        expect(page.locator("#light")).to_be_visible(timeout=30_000)  # the check started
        result = page.locator("#step-result")
        expect(result).to_be_visible(timeout=60_000)
        codes = [li.get_attribute("data-code") for li in page.locator("#result-reasons li").all()]
        assert not errors, errors
    assert len(claims) == 2 and claims[0] == claims[1], claims
    assert codes and not {"STORE_UNAVAILABLE", "SESSION_ALREADY_USED"} & set(codes), codes
    decisions = [e for e in service.audit_entries() if e["event"] == "decision"]
    assert len(decisions) == before + 1 and decisions[-1]["live"] is True
