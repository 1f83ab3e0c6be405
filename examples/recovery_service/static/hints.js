// Capture hints: while the camera preview is on and recording has not started, send one
// preview frame a second to POST /capture-hints and show what to fix (too dark, too small,
// off-centre, two faces...). The server answers with the verifier's own thresholds, so the
// numbers live in one place (liveness/quality.py, liveness/hints.py). Frames are not kept.
"use strict";

(function () {
  const INTERVAL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  let busy = false;
  let lastText = "";

  function box() {
    let el = $("hints");
    if (!el) {
      el = document.createElement("div");
      el.id = "hints";
      el.className = "hints";
      el.setAttribute("aria-live", "polite");
      el.setAttribute("aria-atomic", "true");
      const ready = $("ready");
      const record = $("record");
      if (!ready || !record) return null;
      ready.insertBefore(el, record);
    }
    return el;
  }

  function active() {
    const ready = $("ready");
    const video = $("preview");
    return ready && !ready.hidden && video && video.srcObject && video.videoWidth > 0 &&
      !document.hidden;
  }

  function show(hints) {
    const el = box();
    if (!el) return;
    const text = hints.map((h) => h.message).join(" ");
    if (text === lastText) return; // do not re-announce the same advice every second
    lastText = text;
    el.textContent = "";
    const list = document.createElement("ul");
    for (const h of hints) {
      const item = document.createElement("li");
      item.textContent = h.message;
      item.dataset.code = h.code;
      item.className = h.code === "ok" ? "hint-ok" : "hint-fix";
      list.appendChild(item);
    }
    el.appendChild(list);
    el.dataset.codes = hints.map((h) => h.code).join(",");
  }

  async function tick() {
    if (busy || !active()) return;
    busy = true;
    try {
      const video = $("preview");
      const canvas = document.createElement("canvas");
      canvas.width = video.videoWidth; // the recorded resolution: sizes are in its pixels
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0); // not mirrored: as it will be recorded
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
      if (!blob) return;
      const res = await fetch("/capture-hints", {
        method: "POST",
        headers: { "Content-Type": "image/jpeg" },
        body: blob,
      });
      if (res.ok) {
        const data = await res.json();
        if (Array.isArray(data.hints) && active()) show(data.hints);
      }
    } catch (e) {
      // Hints are advice only: a failed request leaves the last hint and recording works.
    } finally {
      busy = false;
    }
  }

  window.setInterval(tick, INTERVAL_MS);
})();
